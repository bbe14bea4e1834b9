"""What ``encode_rows`` writes, the protocol readers read back as the same columns."""

from __future__ import annotations

import json

import pytest

from driftline_sidecar.contract.config import FeatureConfig, PredictionConfig
from driftline_sidecar.protocols import Extractor, encode_rows, read_response

ROWS = [[1.5, -2.0, "NL"], [0.0, 3.25, "DE"]]


@pytest.mark.parametrize(
    ("protocol", "features"),
    [
        ("kserve-v1", [FeatureConfig(name="a"), FeatureConfig(name="b"),
                       FeatureConfig(name="c", type="categorical")]),
        ("kserve-v1", [FeatureConfig(name="a", path="2"), FeatureConfig(name="b", path="0"),
                       FeatureConfig(name="c", path="4", type="categorical")]),
        ("kserve-v1", [FeatureConfig(name="a", path="x.amount"), FeatureConfig(name="b"),
                       FeatureConfig(name="c", path="x.country", type="categorical")]),
        ("open-inference-v2", [FeatureConfig(name="a"), FeatureConfig(name="b"),
                               FeatureConfig(name="c", type="categorical")]),
        ("open-inference-v2", [FeatureConfig(name="a", path="amount"), FeatureConfig(name="b"),
                               FeatureConfig(name="c", type="categorical")]),
        ("json", [FeatureConfig(name="a", path="user.amount"), FeatureConfig(name="b"),
                  FeatureConfig(name="c", type="categorical")]),
    ],
)  # fmt: skip
def test_rows_round_trip(protocol: str, features: list[FeatureConfig]) -> None:
    body = encode_rows(protocol, features, ROWS)
    extractor = Extractor(protocol="auto", features=features, prediction=PredictionConfig())
    extracted = extractor(body, None)
    assert extracted.protocol == protocol
    assert extracted.rows == 2
    assert [extracted.features[f.name] for f in features] == [
        list(c) for c in zip(*ROWS, strict=True)
    ]
    assert extracted.missing_fields == 0 and extracted.wrong_type == 0


def test_an_unknown_protocol_is_named() -> None:
    with pytest.raises(ValueError, match="'auto'"):
        encode_rows("auto", [FeatureConfig(name="a")], [[1.0]])


def test_responses_are_read_alone() -> None:
    prediction = PredictionConfig(score="1")
    body = json.dumps({"predictions": [[0.9, 0.1], [0.2, 0.8]]}).encode()
    assert read_response("kserve-v1", body, prediction) == ([0, 1], [0.1, 0.8])
