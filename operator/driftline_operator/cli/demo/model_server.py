"""A small real model server for the demo, the tests and the benchmark.

A logistic-regression classifier over N numeric features (``f0`` … ``f{N-1}``),
its weights fixed by a seed, served by uvicorn as a raw ASGI app (so the
server's own overhead stays small next to the sidecar being measured). It
speaks all three protocols the sidecar reads:

- KServe v1: ``POST /v1/models/{name}:predict`` ``{"instances": [[...]] | [{...}]}``
  → ``{"predictions": [[p0, p1], ...]}`` (class probabilities, as predict_proba)
- Open Inference v2: ``POST /v2/models/{name}/infer`` with an ``FP64`` input
  tensor of shape ``[rows, N]`` → outputs ``predict`` (INT64) and ``probability`` (FP64)
- plain JSON: ``POST /predict`` ``{"f0": .., ...}`` or a list of such rows
  → ``{"prediction": label, "probability": p}`` (or a list of them)

and, for pass-through tests: ``/echo/...`` (any method; returns the body and,
in ``x-echo-request``, the method, path, query and headers it received),
``/stream?chunks=N&size=B&delay_ms=D`` (a chunked response), ``/sleep?seconds=S``
and ``/healthz``. ``--latency-ms`` and ``--error-rate`` (or ``DEMO_LATENCY_MS``,
``DEMO_ERROR_RATE``) slow down or fail prediction calls; ``POST /control``
``{"latency_ms": .., "error_rate": ..}`` changes them while the server runs
(the rollout benchmark breaks a canary at a known instant this way), and
``GET /control`` reads them and how many prediction requests were served
(``predict_requests``: the explainer's tests count its requests with it). ``--weights FILE`` serves weights trained
elsewhere (JSON ``{"weights": [...], "bias": b}``) instead of seeded ones.
``--sklearn FILE`` serves a scikit-learn estimator saved with ``joblib.dump``
(a classifier answers its positive class's probability, a regressor its
value; over KServe v1 a classifier of more than two classes answers every
class's probability, as predict_proba): the explainer's tests and benchmark
explain a tree model through it, the multiclass quality tests label one.
``--server-timing`` adds a ``Server-Timing`` header to prediction answers
with the time this server spent on each stage (``preprocess``: reading the
JSON; ``predict``: the model), as model servers that report their stages do;
``/echo`` answers a request's ``x-echo-server-timing`` header back as
``Server-Timing`` (for malformed ones).
``--gzip-min-bytes N`` gzips answers of N bytes or more to clients that accept
gzip, with Starlette's ``GZipMiddleware`` as MLServer does.

Run: ``python -m driftline_operator.demo.model_server --port 8081``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import uvicorn
from starlette.middleware.gzip import GZipMiddleware

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_KSERVE = re.compile(r"^/v1/models/([^/:]+):predict$")
_V2 = re.compile(r"^/v2/models/([^/]+)/infer$")


class Classifier:
    """p = sigmoid(x·w + b) with weights drawn from a seeded generator."""

    def __init__(self, *, n_features: int = 4, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.feature_names = [f"f{i}" for i in range(n_features)]
        self.weights = rng.normal(0.0, 1.0, n_features)
        self.bias = float(rng.normal(0.0, 0.1))

    @classmethod
    def from_file(cls, path: str) -> Classifier:
        """Weights trained elsewhere: JSON ``{"weights": [w0, ...], "bias": b}``."""
        try:
            with open(path, encoding="utf-8") as f:
                document = json.load(f)
            weights = np.asarray(document["weights"], dtype=np.float64)
            bias = float(document["bias"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SystemExit(
                f"--weights {path}: {error}; expected JSON {{'weights': [...], 'bias': b}}"
            ) from None
        if weights.ndim != 1 or weights.size == 0:
            raise SystemExit(f"--weights {path}: 'weights' must be a non-empty list of numbers")
        model = cls(n_features=weights.size)
        model.weights, model.bias = weights, bias
        return model

    def probability(self, rows: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(rows @ self.weights + self.bias)))

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        """Every class's probability per row, as scikit-learn's predict_proba."""
        p = self.probability(rows)
        return np.column_stack([1.0 - p, p])

    def matrix(self, rows: Sequence[Any]) -> np.ndarray:
        """Rows as lists or as ``{name: value}`` dicts (absent names are 0)."""
        names = self.feature_names
        table = [
            [_number(row.get(n)) for n in names] if isinstance(row, dict) else row for row in rows
        ]
        matrix = np.asarray(table, dtype=np.float64).reshape(len(rows), -1)
        if matrix.shape[1] != len(names):
            raise ValueError(f"expected {len(names)} features per row, got {matrix.shape[1]}")
        return matrix


class SklearnModel(Classifier):
    """A scikit-learn estimator from a ``joblib`` file, behind the same interface."""

    def __init__(self, path: str) -> None:
        import joblib  # scikit-learn's: only when a model file is served

        try:
            self.estimator = joblib.load(path)
            width = int(self.estimator.n_features_in_)
        except (OSError, ValueError, AttributeError, EOFError) as error:
            raise SystemExit(f"--sklearn {path}: {error}; expected a fitted estimator") from None
        self.feature_names = [f"f{i}" for i in range(width)]

    def probability(self, rows: np.ndarray) -> np.ndarray:
        if hasattr(self.estimator, "predict_proba"):
            return np.asarray(self.estimator.predict_proba(rows)[:, -1], dtype=np.float64)
        return np.asarray(self.estimator.predict(rows), dtype=np.float64)

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        if hasattr(self.estimator, "predict_proba"):
            return np.asarray(self.estimator.predict_proba(rows), dtype=np.float64)
        return super().probabilities(rows)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


class ModelServer:
    """The ASGI app."""

    def __init__(
        self,
        *,
        model: Classifier,
        latency_ms: float = 0.0,
        error_rate: float = 0.0,
        server_timing: bool = False,
    ) -> None:
        self.model = model
        self.server_timing = server_timing
        self.latency = latency_ms / 1000.0
        self.error_rate = error_rate
        self.predict_requests = 0

    def faults(self) -> dict[str, float]:
        return {"latency_ms": self.latency * 1000.0, "error_rate": self.error_rate}

    def set_faults(self, document: Any) -> None:
        """Apply ``{"latency_ms": .., "error_rate": ..}`` (either may be absent)."""
        if not isinstance(document, dict) or not document.keys() <= {"latency_ms", "error_rate"}:
            raise ValueError("expected an object with latency_ms and/or error_rate")
        latency = float(document.get("latency_ms", self.latency * 1000.0))
        error_rate = float(document.get("error_rate", self.error_rate))
        if latency < 0 or not 0.0 <= error_rate <= 1.0:
            raise ValueError("latency_ms must be >= 0 and error_rate in 0..1")
        self.latency, self.error_rate = latency / 1000.0, error_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        path: str = scope["path"]
        query = parse_qs(scope["query_string"].decode("latin-1"))
        if path.startswith("/echo"):
            await self._echo(scope, body, send)
        elif path == "/stream":
            await self._stream(query, send)
        elif path == "/sleep":
            await asyncio.sleep(float(query.get("seconds", ["1"])[0]))
            await _json(send, 200, {"slept": True})
        elif path == "/healthz":
            await _json(send, 200, {"status": "ok"})
        elif path == "/control":
            await self._control(scope["method"], body, send)
        elif scope["method"] != "POST":
            await _json(send, 405, {"error": "use POST"})
        else:
            await self._predict(path, body, send)

    async def _predict(self, path: str, body: bytes, send: Send) -> None:
        self.predict_requests += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.error_rate and random.random() < self.error_rate:
            await _json(send, 500, {"error": "injected failure"})
            return
        began = time.perf_counter()
        try:
            document = json.loads(body)
            parsed = time.perf_counter()
            if _KSERVE.match(path):
                answer = self._kserve(document)
            elif match := _V2.match(path):
                answer = self._v2(match.group(1), document)
            elif path == "/predict":
                answer = self._plain(document)
            else:
                await _json(send, 404, {"error": f"no route {path}"})
                return
        except (ValueError, KeyError, TypeError) as error:
            await _json(send, 400, {"error": f"bad request: {error}"})
            return
        headers = []
        if self.server_timing:
            preprocess, predict = (parsed - began) * 1000, (time.perf_counter() - parsed) * 1000
            timing = f"preprocess;dur={preprocess:.3f}, predict;dur={predict:.3f}"
            headers.append((b"server-timing", timing.encode()))
        await _json(send, 200, answer, headers)

    async def _control(self, method: str, body: bytes, send: Send) -> None:
        if method == "POST":
            try:
                self.set_faults(json.loads(body))
            except (ValueError, TypeError) as error:
                await _json(send, 400, {"error": f"bad control request: {error}"})
                return
        elif method != "GET":
            await _json(send, 405, {"error": "use GET or POST"})
            return
        await _json(send, 200, {**self.faults(), "predict_requests": self.predict_requests})

    def _kserve(self, document: dict[str, Any]) -> dict[str, Any]:
        rows = document.get("instances", document.get("inputs"))
        if not isinstance(rows, list):
            raise ValueError("expected a list of rows in instances or inputs")
        # Like scikit-learn's predict_proba: [P(class 0), P(class 1), ...] per row.
        return {"predictions": self.model.probabilities(self.model.matrix(rows)).tolist()}

    def _v2(self, name: str, document: dict[str, Any]) -> dict[str, Any]:
        tensor = document["inputs"][0]
        rows = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
        p = self.model.probability(rows.reshape(rows.shape[0], -1))
        n = len(p)
        return {
            "model_name": name,
            "id": document.get("id", ""),
            "outputs": [
                {
                    "name": "predict",
                    "shape": [n],
                    "datatype": "INT64",
                    "data": (p >= 0.5).astype(int).tolist(),
                },
                {"name": "probability", "shape": [n], "datatype": "FP64", "data": p.tolist()},
            ],
        }

    def _plain(self, document: Any) -> Any:
        rows = document if isinstance(document, list) else [document]
        p = self.model.probability(self.model.matrix(rows))
        answers = [
            {"prediction": "fraud" if q >= 0.5 else "ok", "probability": float(q)} for q in p
        ]
        return answers if isinstance(document, list) else answers[0]

    async def _echo(self, scope: Scope, body: bytes, send: Send) -> None:
        seen = {
            "method": scope["method"],
            "path": scope["raw_path"].decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        }
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(len(body)).encode()),
            (b"x-echo-request", json.dumps(seen).encode()),
        ]
        headers += [
            (b"server-timing", v) for k, v in scope["headers"] if k == b"x-echo-server-timing"
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, query: dict[str, list[str]], send: Send) -> None:
        chunks = int(query.get("chunks", ["5"])[0])
        size = int(query.get("size", ["1000"])[0])
        delay = float(query.get("delay_ms", ["20"])[0]) / 1000.0
        headers = [(b"content-type", b"application/octet-stream")]  # no length: chunked
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(chunks):
            await send(
                {"type": "http.response.body", "body": bytes([i % 256]) * size, "more_body": True}
            )
            await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": b""})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _json(
    send: Send, status: int, document: Any, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(document).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Driftline's demo model server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--features", type=int, default=4, help="number of numeric features")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--weights", help="JSON file of trained weights (overrides --seed)")
    parser.add_argument("--sklearn", help="a scikit-learn estimator saved with joblib.dump")
    parser.add_argument(
        "--latency-ms", type=float, default=float(os.environ.get("DEMO_LATENCY_MS", "0"))
    )
    parser.add_argument(
        "--error-rate", type=float, default=float(os.environ.get("DEMO_ERROR_RATE", "0"))
    )
    parser.add_argument(
        "--gzip-min-bytes",
        type=int,
        help="gzip answers of at least this many bytes when the client accepts gzip",
    )
    parser.add_argument(
        "--server-timing",
        action="store_true",
        help="report the preprocess and predict stages in a Server-Timing header",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not 0.0 <= args.error_rate <= 1.0:
        raise SystemExit(f"--error-rate {args.error_rate}: expected a fraction between 0 and 1")
    model: Classifier
    if args.sklearn:
        model = SklearnModel(args.sklearn)
    elif args.weights:
        model = Classifier.from_file(args.weights)
        if len(model.feature_names) != args.features:
            raise SystemExit(
                f"--weights {args.weights} has {len(model.feature_names)} weights but "
                f"--features is {args.features}; give --features {len(model.feature_names)}"
            )
    else:
        model = Classifier(n_features=args.features, seed=args.seed)
    app = ModelServer(
        model=model,
        latency_ms=args.latency_ms,
        error_rate=args.error_rate,
        server_timing=args.server_timing,
    )
    served: Any = app
    if args.gzip_min_bytes is not None:
        served = GZipMiddleware(app, minimum_size=args.gzip_min_bytes)
    uvicorn.run(
        served,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
