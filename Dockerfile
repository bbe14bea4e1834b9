# Driftline's images, from one build stage:
#   docker build --target operator  -t ghcr.io/driftline/operator:0.1.0 .
#   docker build --target sidecar   -t ghcr.io/driftline/sidecar:0.1.0 .
#   docker build --target explainer -t ghcr.io/driftline/explainer:0.1.0 .
# The sidecar image also runs the demo model server
# (python -m driftline_operator.cli.demo.model_server), as examples/fraud does.
# The explainer image is the operator's virtualenv plus the `explain` extra
# (shap, numba, scikit-learn: about 300 MB the operator does without); the
# chart runs it as the explainer Deployment (explainer.enabled).

# BASE: any Debian-like image with python3.11 and venv (../shared/k8s/image.sh
# passes a local one where no registry is reachable).
ARG BASE=python:3.11-slim

# -- build: a virtualenv with the driftline distribution and its wheels --------
FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/driftline
WORKDIR /src
# Dependencies first, so a source change does not reinstall them.
COPY pyproject.toml README.md LICENSE ./
RUN /opt/driftline/bin/pip install --upgrade pip setuptools \
    && /opt/driftline/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" > requirements.txt \
    && /opt/driftline/bin/pip install -r requirements.txt
COPY sidecar ./sidecar
COPY operator ./operator
RUN /opt/driftline/bin/pip install --no-deps . \
    && /opt/driftline/bin/pip check \
    && /opt/driftline/bin/python -c "import driftline_operator.controller.main, driftline_sidecar.main"

# -- the operator's and the sidecar's virtualenv: no pip left in it ------------
FROM build AS venv
RUN /opt/driftline/bin/pip uninstall --yes --quiet pip setuptools

# -- the explainer's: the same plus the explain extra, then no pip -------------
FROM build AS explainer-venv
RUN /opt/driftline/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['optional-dependencies']['explain']))" > explain.txt \
    && /opt/driftline/bin/pip install -r explain.txt \
    && /opt/driftline/bin/pip check \
    && /opt/driftline/bin/python -c "import shap, driftline_operator.explain.service" \
    && /opt/driftline/bin/pip uninstall --yes --quiet pip setuptools

# -- run: a non-root user, no pip, no compiler ----------------------------------
FROM ${BASE} AS runtime
ENV PATH=/opt/driftline/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# 65532: the conventional "nonroot" uid; the chart runs with runAsNonRoot and a
# read-only root filesystem (only /tmp is writable). A passwd entry, because
# Python's getpass.getuser() (Kopf's identity) fails on a uid without one.
RUN useradd --uid 65532 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin nonroot
USER 65532:65532

FROM runtime AS sidecar
COPY --from=venv /opt/driftline /opt/driftline
# 8080: the proxy port, 9090: the admin port (/metrics, /healthz, /readyz).
EXPOSE 8080 9090
ENTRYPOINT ["driftline-sidecar"]

FROM runtime AS explainer
COPY --from=explainer-venv /opt/driftline /opt/driftline
# numba and matplotlib cache into the only writable place (the root fs is read-only).
ENV NUMBA_CACHE_DIR=/tmp/numba MPLCONFIGDIR=/tmp/matplotlib
# 8090: POST /v1/explain (from the operator only), /healthz.
EXPOSE 8090
ENTRYPOINT ["driftline-explainer"]

# Last, so a plain `docker build .` gives the operator.
FROM runtime AS operator
COPY --from=venv /opt/driftline /opt/driftline
# 9443: the admission webhook, 9100: /metrics, 8080: Kopf's liveness probe.
EXPOSE 9443 9100 8080
ENTRYPOINT ["driftline-operator"]
