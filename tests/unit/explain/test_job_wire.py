"""An explanation job as JSON (what the operator sends the explainer Deployment):
it comes back the job it was, and a bad one is refused naming the field."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from driftline_operator.explain.background import Columns
from driftline_operator.explain.remote import JobRequest
from driftline_operator.explain.worker import Job
from driftline_sidecar.contract.config import FeatureConfig, PredictionConfig

FEATURES = [
    FeatureConfig(name="amount"),
    FeatureConfig(name="country", type="categorical"),
    FeatureConfig(name="email", type="categorical", pii="hash"),
]


def job(**overrides: object) -> Job:
    fields: dict[str, object] = {
        "url": "http://10.0.0.7:8080/predict",
        "protocol": "json",
        "columns": Columns(
            features=FEATURES,
            explained=[0, 1],
            fixed={2: "someone@example.com"},
            categories={1: ["NL", "DE"]},
        ),
        "prediction": PredictionConfig(path="prediction", score="probability"),
        "background": np.array([[12.5, 0.0], [np.nan, 1.0]]),
        "rows": [[3.0, "NL"], [None, "FR"]],
        "permutations": 3,
        "timeout_seconds": 4.0,
    }
    return Job(**{**fields, **overrides})  # type: ignore[arg-type]


def test_a_job_comes_back_from_json_as_it_was() -> None:
    sent = job()
    wire = JobRequest.of(sent).model_dump_json()
    assert "NaN" not in wire  # a missing background value is a JSON null
    back = JobRequest.model_validate_json(wire).job()
    assert np.array_equal(back.background, sent.background, equal_nan=True)
    assert back.columns == sent.columns  # fixed and category keys are ints again
    assert (back.url, back.protocol, back.prediction) == (sent.url, sent.protocol, sent.prediction)
    assert (back.rows, back.permutations, back.timeout_seconds) == (sent.rows, 3, 4.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rows": [[3.0, "NL"], [1.0]]}, "rows[1]: 1 values, expected 2 (one per explained feature: amount, country)"),
        ({"background": [[1.0, 2.0, 3.0]]}, "background[0]: 3 values, expected 2"),
        ({"background": []}, "background\n  List should have at least 1 item"),
        ({"url": "file:///etc/passwd"}, "url\n  String should match pattern"),
        ({"protocol": "grpc"}, "protocol\n  Input should be"),
        ({"permutations": 0}, "permutations\n  Input should be greater than or equal to 1"),
        ({"columns": {"features": [{"name": "a"}], "explained": [0, 5]}}, "positions [5] are not among the 1 features"),
    ],
)  # fmt: skip
def test_a_bad_job_names_the_field(change: dict[str, object], message: str) -> None:
    document = {**JobRequest.of(job()).model_dump(mode="json"), **change}
    with pytest.raises(ValidationError) as error:
        JobRequest.model_validate(document)
    assert message in str(error.value)
