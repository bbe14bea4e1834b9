"""The model as a function of a matrix, for ``shap``: one call, one request.

Rows are written in the model's protocol by the sidecar's own encoder and its
answer read by the sidecar's own readers (``driftline_sidecar.protocols``),
so the explainer speaks exactly what the sidecar understands; ``Columns``
turns shap's numeric matrix into the model's rows.
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from driftline_operator.explain.background import Columns
from driftline_sidecar.contract.config import PredictionConfig
from driftline_sidecar.protocols import Detected, UnparsableBody, encode_rows, read_response


class Failure(StrEnum):
    """Why the model could not be asked (the reason of ExplanationsAvailable=False)."""

    UNREACHABLE = "ModelUnreachable"
    TIMEOUT = "ModelTimeout"
    REJECTED = "ModelRejectedBatch"
    UNKNOWN_SHAPE = "UnknownResponseShape"


class ModelError(RuntimeError):
    def __init__(self, reason: Failure, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def default_path(protocol: Detected, model_name: str) -> str:
    """Where each protocol's predict endpoint usually is."""
    return {
        "kserve-v1": f"/v1/models/{model_name}:predict",
        "open-inference-v2": f"/v2/models/{model_name}/infer",
        "json": "/predict",
    }[protocol]


@dataclass
class BlackBoxModel:
    """``f(X) -> outputs``: the model's score (or regression value) per row."""

    url: str  # http://host:port/path of the model container's predict endpoint
    protocol: Detected
    columns: Columns
    prediction: PredictionConfig
    timeout_seconds: float = 10.0
    requests: int = 0  # how many requests this model has been sent
    rows_sent: int = 0
    _connection: http.client.HTTPConnection | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"model url {self.url!r}: expected http://host:port/path")
        self._host, self._port = parts.hostname, parts.port or 80
        self._path = parts.path or "/"

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        matrix = np.atleast_2d(matrix)
        body = encode_rows(self.protocol, self.columns.features, self.columns.wire(matrix))
        self.rows_sent += len(matrix)
        answer = self._post(body)
        try:
            predictions, scores = read_response(self.protocol, answer, self.prediction)
        except UnparsableBody as error:
            raise ModelError(Failure.UNKNOWN_SHAPE, f"model at {self.url}: {error}") from None
        outputs = [
            s if s is not None else _number(p) for p, s in zip(predictions, scores, strict=False)
        ]
        if len(outputs) != len(matrix) or any(o is None for o in outputs):
            raise ModelError(
                Failure.UNKNOWN_SHAPE,
                f"model at {self.url}: {len(matrix)} rows sent, {len(outputs)} answered, "
                f"{sum(o is None for o in outputs)} without a numeric score or prediction "
                "(set model.prediction.score to the output to explain, e.g. the positive "
                "class's index)",
            )
        return np.asarray(outputs, dtype=np.float64)

    def _post(self, body: bytes) -> bytes:
        self.requests += 1
        try:
            try:
                response, answer = self._exchange(body)
            except (ConnectionError, http.client.RemoteDisconnected):
                # A kept-alive connection the server closed while idle: once more, anew.
                self.close()
                response, answer = self._exchange(body)
        except TimeoutError as error:
            self.close()
            raise ModelError(
                Failure.TIMEOUT, f"model at {self.url}: no answer in {self.timeout_seconds:g} s"
            ) from error
        except (OSError, http.client.HTTPException) as error:
            self.close()
            raise ModelError(Failure.UNREACHABLE, f"model at {self.url}: {error}") from error
        if response.status != 200:
            raise ModelError(
                Failure.REJECTED,
                f"model at {self.url} answered a batch of rows with HTTP {response.status}: "
                f"{answer[:200].decode(errors='replace')}",
            )
        return answer

    def _exchange(self, body: bytes) -> tuple[http.client.HTTPResponse, bytes]:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(
                self._host, self._port, timeout=self.timeout_seconds
            )
        self._connection.request(
            "POST", self._path, body=body, headers={"content-type": "application/json"}
        )
        response = self._connection.getresponse()
        return response, response.read()

    def __enter__(self) -> BlackBoxModel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _number(value: Any) -> float | None:
    return float(value) if type(value) in (int, float) else None
