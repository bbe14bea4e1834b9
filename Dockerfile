# Driftline's two images, from one build stage:
#   docker build --target operator -t ghcr.io/driftline/operator:0.1.0 .
#   docker build --target sidecar  -t ghcr.io/driftline/sidecar:0.1.0 .
# The sidecar image also runs the demo model server
# (python -m driftline_operator.cli.demo.model_server), as examples/fraud does.

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
    && /opt/driftline/bin/python -c "import driftline_operator.controller.main, driftline_sidecar.main" \
    && /opt/driftline/bin/pip uninstall --yes --quiet pip setuptools

# -- run: the virtualenv (no pip, no compiler) as a non-root user --------------
FROM ${BASE} AS runtime
COPY --from=build /opt/driftline /opt/driftline
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
# 8080: the proxy port, 9090: the admin port (/metrics, /healthz, /readyz).
EXPOSE 8080 9090
ENTRYPOINT ["driftline-sidecar"]

# Last, so a plain `docker build .` gives the operator.
FROM runtime AS operator
# 9443: the admission webhook, 9100: /metrics, 8080: Kopf's liveness probe.
EXPOSE 9443 9100 8080
ENTRYPOINT ["driftline-operator"]
