"""The helm binary and the chart, for the chart tests (rendered and installed)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

CHART = Path(__file__).resolve().parents[2] / "charts" / "driftline"


def _find_helm() -> str | None:
    """helm on PATH, else the one scripts/install-helm.sh put beside this Python."""
    beside_python = Path(sys.executable).parent / "helm"
    return shutil.which("helm") or (str(beside_python) if beside_python.exists() else None)


HELM = _find_helm()
needs_helm = pytest.mark.skipif(
    HELM is None, reason="helm is not installed (scripts/install-helm.sh)"
)
