"""Features, predictions and scores read out of a request and its response.

Pure: bytes in, columns out. It runs on the capture worker, off the hot path,
once per captured body, so it works column-wise (one ``zip`` or list
comprehension per feature, a set of value types to check a whole column at
once) rather than value by value. One module per wire format: ``_rows``
(KServe v1 and plain JSON) and ``_v2`` (Open Inference Protocol v2).

A column holds one value per row; ``None`` means the row has no usable value
(absent, JSON null, or of the wrong type), which binning counts as missing.
Absent fields and wrong types are also counted for the schema metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Literal

from driftline_sidecar.contract.config import FeatureConfig, PredictionConfig, Protocol
from driftline_sidecar.protocols import _rows, _v2
from driftline_sidecar.protocols._common import (
    NUMBERS,
    Features,
    Table,
    UnparsableBody,
    clean,
    fit,
    loads,
)
from driftline_sidecar.protocols.encode import encode_rows

__all__ = [
    "Detected",
    "Extracted",
    "Extractor",
    "UnparsableBody",
    "detect",
    "encode_rows",
    "extract",
    "read_response",
]

Detected = Literal["kserve-v1", "open-inference-v2", "json"]


@dataclass(slots=True)
class Extracted:
    protocol: str  # the protocol actually used ("kserve-v1", "open-inference-v2", "json")
    rows: int
    features: dict[str, list[Any]]  # one column per configured feature, length == rows
    predictions: list[Any]  # class label or regression value per row; None if absent
    scores: list[float | None]  # score/probability per row
    unknown_fields: int  # fields in request rows that no configured feature names
    wrong_type: int  # numeric feature with a non-number (bool too), categorical non-scalar
    missing_fields: int  # configured features absent from a row
    # Class probabilities per row (None where absent), when the Extractor was
    # asked for them (a multiclass model's labelled quality needs them).
    probabilities: list[list[float] | None] = field(default_factory=list)


def detect(request: Any) -> Detected:
    """Which protocol a parsed request speaks."""
    if type(request) is not dict:
        return "json"
    if "instances" in request:
        return "kserve-v1"
    inputs = request.get("inputs")
    if type(inputs) is list:
        if inputs and all(type(t) is dict and "name" in t and "datatype" in t for t in inputs):
            return "open-inference-v2"
        return "kserve-v1"  # {"inputs": [...]} is KServe v1's alias for "instances"
    return "json"


class Extractor:
    """``extract`` with one model's configuration compiled once: keep one per config."""

    __slots__ = ("_features", "_prediction", "_probabilities", "_protocol")

    def __init__(
        self,
        *,
        protocol: Protocol,
        features: Sequence[FeatureConfig],
        prediction: PredictionConfig,
        probabilities: bool = False,
    ) -> None:
        self._protocol = protocol
        self._features = Features.compile(features)
        self._prediction = prediction
        self._probabilities = probabilities

    def __call__(self, request: bytes, response: bytes | None) -> Extracted:
        document = loads(request, "request")
        used: Detected = detect(document) if self._protocol == "auto" else self._protocol
        features = self._features
        table = _REQUEST_READERS[used](document, features)

        missing = wrong = 0
        columns: dict[str, list[Any]] = {}
        if set(map(type, chain.from_iterable(table.columns))) <= NUMBERS:
            columns = dict(zip(features.names, table.columns, strict=True))  # all clean
        else:
            for spec, raw in zip(features.specs, table.columns, strict=True):
                columns[spec.name], absent, bad = clean(raw, numeric=spec.numeric)
                missing += absent
                wrong += bad

        rows = table.rows
        probabilities: list[list[float] | None] = []
        if not response:  # None or empty: nothing the model said to read
            predictions: list[Any] = [None] * rows
            scores: list[float | None] = [None] * rows
        else:
            answer = loads(response, "response")
            predictions, scores = _RESPONSE_READERS[used](answer, self._prediction)
            predictions, scores = fit(predictions, rows), fit(scores, rows)
            if self._probabilities:
                probabilities = _PROBABILITY_READERS[used](answer, self._prediction)
        if self._probabilities:
            probabilities = fit(probabilities, rows)
        return Extracted(
            protocol=used,
            rows=rows,
            features=columns,
            predictions=predictions,
            scores=scores,
            unknown_fields=table.unknown if features.specs else 0,  # none declared: no schema
            wrong_type=wrong,
            missing_fields=missing,
            probabilities=probabilities,
        )


def extract(
    request: bytes,
    response: bytes | None,
    *,
    protocol: Protocol,
    features: Sequence[FeatureConfig],
    prediction: PredictionConfig,
) -> Extracted:
    """Read one request (and its response, if given) into per-feature columns.

    Pass ``response=None`` when there is no response body worth reading (an
    error status); then, as with an empty body, predictions and scores are all
    None. A response with more or fewer rows than the request is padded with
    None or cut, not an error. Raises UnparsableBody for a body the protocol
    cannot read. Compiles the configuration on first use and keeps it; a
    caller with one fixed configuration can hold an ``Extractor`` instead.
    """
    key = (protocol, tuple((f.name, f.path, f.type) for f in features), prediction.path,
           prediction.score)  # fmt: skip
    extractor = _EXTRACTORS.get(key)
    if extractor is None:
        if len(_EXTRACTORS) >= 64:  # configs change rarely; never grow without bound
            _EXTRACTORS.clear()
        extractor = _EXTRACTORS[key] = Extractor(
            protocol=protocol, features=features, prediction=prediction
        )
    return extractor(request, response)


_EXTRACTORS: dict[tuple[Any, ...], Extractor] = {}


def read_response(
    protocol: Detected, body: bytes, prediction: PredictionConfig
) -> tuple[list[Any], list[float | None]]:
    """Predictions and scores of a response alone (one per row, None where
    absent). Raises UnparsableBody for a body in no shape the protocol knows."""
    return _RESPONSE_READERS[protocol](loads(body, "response"), prediction)


_Predictions = tuple[list[Any], list[float | None]]
_REQUEST_READERS: dict[Detected, Callable[[Any, Features], Table]] = {
    "kserve-v1": _rows.read_kserve_v1,
    "open-inference-v2": _v2.read_v2,
    "json": _rows.read_json,
}
_RESPONSE_READERS: dict[Detected, Callable[[Any, PredictionConfig], _Predictions]] = {
    "kserve-v1": _rows.read_kserve_v1_response,
    "open-inference-v2": _v2.read_v2_response,
    "json": _rows.read_json_response,
}
_PROBABILITY_READERS: dict[Detected, Callable[[Any, PredictionConfig], list[Any]]] = {
    "kserve-v1": _rows.read_kserve_v1_probabilities,
    "open-inference-v2": _v2.read_v2_probabilities,
    "json": _rows.read_json_probabilities,
}
