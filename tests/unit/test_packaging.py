"""The images and the kind flow agree with the distribution, the chart and the
example: no Docker here, so these check the files against each other, and
`make -n` shows the commands the kind targets would run."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CHART = yaml.safe_load((ROOT / "charts" / "driftline" / "Chart.yaml").read_text())
VALUES = yaml.safe_load((ROOT / "charts" / "driftline" / "values.yaml").read_text())
IMAGES = {
    "operator": "driftline-operator",
    "sidecar": "driftline-sidecar",
    "explainer": "driftline-explainer",
}
# Each image's virtualenv stage: the explainer's adds the explain extra (shap).
VENVS = {"operator": "venv", "sidecar": "venv", "explainer": "explainer-venv"}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def stages(dockerfile: Path) -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions by its name ("" before the first FROM)."""
    result: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for op, args in instructions(dockerfile):
        if op == "FROM":
            current = args.split(" AS ")[-1] if " AS " in args else args
            result[current] = []
        result[current].append((op, args))
    return result


@pytest.mark.parametrize(("image", "script"), sorted(IMAGES.items()))
def test_dockerfile_builds_a_slim_non_root_image_of_the_distribution(
    image: str, script: str
) -> None:
    """tests/e2e builds and runs both for real; this says what they are made of."""
    dockerfile = stages(ROOT / "Dockerfile")
    # The base can be swapped (../shared/k8s/image.sh passes a local one).
    assert dockerfile[""] == [("ARG", "BASE=python:3.11-slim")]
    assert dockerfile["build"][0] == ("FROM", "${BASE} AS build")
    # The final stages hold a virtualenv built elsewhere: no pip, no compiler.
    assert dockerfile["runtime"][0] == ("FROM", "${BASE} AS runtime")
    assert not any(op == "COPY" for op, _ in dockerfile["runtime"])
    assert ("USER", "65532:65532") in dockerfile["runtime"]
    venv = VENVS[image]
    assert dockerfile[image][:2] == [
        ("FROM", f"runtime AS {image}"),
        ("COPY", f"--from={venv} /opt/driftline /opt/driftline"),
    ]
    assert dockerfile[venv][0] == ("FROM", f"build AS {venv}")
    assert "pip uninstall --yes --quiet pip setuptools" in dockerfile[venv][-1][1]
    assert ("ENTRYPOINT", f'["{script}"]') in dockerfile[image]
    assert script in PYPROJECT["project"]["scripts"]
    # A build step imports the entrypoint's module, so a broken image fails to build.
    module = PYPROJECT["project"]["scripts"][script].split(":")[0]
    runs = " ".join(args for op, args in dockerfile["build"] + dockerfile[venv] if op == "RUN")
    assert "pip install --no-deps ." in runs
    assert module in runs
    assert importlib.util.find_spec(module) is not None


def test_only_the_explainer_image_carries_the_explain_extra() -> None:
    """shap, numba and scikit-learn are ~300 MB the operator and sidecar do without."""
    dockerfile = stages(ROOT / "Dockerfile")
    explain_runs = " ".join(args for op, args in dockerfile["explainer-venv"] if op == "RUN")
    assert "['optional-dependencies']['explain']" in explain_runs
    assert "import shap" in explain_runs
    assert "explain" in PYPROJECT["project"]["optional-dependencies"]
    for stage in ("build", "venv"):
        assert "optional-dependencies" not in " ".join(a for _, a in dockerfile[stage])
    # numba and matplotlib cache in /tmp, the only writable path under the chart.
    assert ("ENV", "NUMBA_CACHE_DIR=/tmp/numba MPLCONFIGDIR=/tmp/matplotlib") in dockerfile[
        "explainer"
    ]
    # A plain `docker build .` still gives the operator.
    assert list(dockerfile)[-1] == "operator"


def test_dockerignore_keeps_what_pip_install_needs() -> None:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip()]
    patterns = [p for p in patterns if not p.startswith("#")]
    assert patterns[0] == "**", "everything is ignored unless re-included"
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"], "operator", "sidecar"}
    assert needed <= {p[1:] for p in patterns if p.startswith("!")}
    # The license file named by the build must be there too.
    assert "!LICENSE" in patterns and (ROOT / "LICENSE").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_kind_targets_build_load_and_install_the_images_the_chart_and_example_use() -> None:
    result = subprocess.run(
        ["make", "-n", "-f", "mk/kind.mk", "kind-demo"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    commands = result.stdout
    tag = CHART["appVersion"]
    operator = f"{VALUES['operator']['image']['repository']}:{tag}"
    sidecar = f"{VALUES['sidecar']['image']['repository']}:{tag}"
    assert "create cluster --name driftline --config kind-config.yaml" in commands
    assert f"docker build --target operator -t {operator} ." in commands
    assert f"docker build --target sidecar -t {sidecar} ." in commands
    assert f"load docker-image --name driftline {operator} {sidecar}" in commands
    assert "upgrade --install driftline charts/driftline" in commands
    assert f"--set operator.image.tag={tag}" in commands
    assert "apply -k examples/fraud" in commands
    # The example's model runs from the sidecar image that kind-load put on the nodes.
    deployment = yaml.safe_load((ROOT / "examples" / "fraud" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == sidecar
    assert container["imagePullPolicy"] == "IfNotPresent"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_kind_explainer_builds_loads_and_enables_the_explainer_image() -> None:
    result = subprocess.run(
        ["make", "-n", "-f", "mk/kind.mk", "kind-explainer"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    tag = CHART["appVersion"]
    image = f"{VALUES['explainer']['image']['repository']}:{tag}"
    assert f"docker build --target explainer -t {image} ." in result.stdout
    assert f"load docker-image --name driftline {image}" in result.stdout
    assert "--reuse-values" in result.stdout and "--set explainer.enabled=true" in result.stdout
    assert f"--set explainer.image.tag={tag}" in result.stdout


def test_kind_config_has_a_control_plane_and_a_worker() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [node["role"] for node in config["nodes"]] == ["control-plane", "worker"]
