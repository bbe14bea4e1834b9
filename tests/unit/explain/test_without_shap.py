"""An operator image without shap (the explain extra) says what to do instead."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import sys
sys.modules["shap"] = None  # how Python blocks an import: as if not installed
import numpy as np
from driftline_operator.explain.background import Columns
from driftline_operator.explain.worker import Job, run_job
from driftline_sidecar.contract.config import FeatureConfig, PredictionConfig
job = Job(
    url="http://127.0.0.1:1/predict", protocol="json",
    columns=Columns(features=[FeatureConfig(name="a")], explained=[0]),
    prediction=PredictionConfig(path="prediction"),
    background=np.zeros((1, 1)), rows=[[1.0]],
)
result = run_job(job)
print(result.failure)
print(result.message)
"""


def test_without_shap_the_reason_names_the_explainer_deployment() -> None:
    run = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120, check=True
    )
    failure, message = run.stdout.splitlines()
    assert failure == "ExplainerFailed"
    assert "chart value explainer.enabled" in message and "driftline[explain]" in message
