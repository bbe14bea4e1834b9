"""Features, predictions and scores read out of a request and its response.

Pure: bytes in, columns out. It runs on the capture worker, off the hot path,
once per captured body, so it works column-wise (one ``zip`` or list
comprehension per feature, a set of value types to check a whole column at
once) rather than value by value.

A column holds one value per row; ``None`` means the row has no usable value
(absent, JSON null, or of the wrong type), which binning counts as missing.
Absent fields and wrong types are also counted for the schema metrics.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from math import prod
from typing import Any, Final, Literal, NamedTuple

from driftline_sidecar.config import FeatureConfig, PredictionConfig, Protocol

Detected = Literal["kserve-v1", "open-inference-v2", "json"]


class UnparsableBody(ValueError):
    """A body that is not JSON, or JSON in no shape the protocol knows."""


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

    __slots__ = ("_features", "_prediction", "_protocol")

    def __init__(
        self,
        *,
        protocol: Protocol,
        features: Sequence[FeatureConfig],
        prediction: PredictionConfig,
    ) -> None:
        self._protocol = protocol
        self._features = _Features.compile(features)
        self._prediction = prediction

    def __call__(self, request: bytes, response: bytes | None) -> Extracted:
        document = _loads(request, "request")
        used: Detected = detect(document) if self._protocol == "auto" else self._protocol
        features = self._features
        table = _REQUEST_READERS[used](document, features)

        missing = wrong = 0
        columns: dict[str, list[Any]] = {}
        if set(map(type, chain.from_iterable(table.columns))) <= _NUMBERS:
            columns = dict(zip(features.names, table.columns, strict=True))  # all clean
        else:
            for spec, raw in zip(features.specs, table.columns, strict=True):
                columns[spec.name], absent, bad = _clean(raw, numeric=spec.numeric)
                missing += absent
                wrong += bad

        rows = table.rows
        if not response:  # None or empty: nothing the model said to read
            predictions: list[Any] = [None] * rows
            scores: list[float | None] = [None] * rows
        else:
            read_response = _RESPONSE_READERS[used]
            predictions, scores = read_response(_loads(response, "response"), self._prediction)
            predictions, scores = _fit(predictions, rows), _fit(scores, rows)
        return Extracted(
            protocol=used,
            rows=rows,
            features=columns,
            predictions=predictions,
            scores=scores,
            unknown_fields=table.unknown if features.specs else 0,  # none declared: no schema
            wrong_type=wrong,
            missing_fields=missing,
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
    None. A response with
    more or fewer rows than the request is padded with None or cut, not an
    error. Raises UnparsableBody for a body the protocol cannot read.
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


# ---------------------------------------------------------------- shared pieces

_MISSING: Final = object()  # a field absent from a row (JSON null is present, and None)
_NUMBERS: Final = frozenset({int, float, type(None)})  # bool is not a number here
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_JSON_TYPE = {dict: "an object", list: "an array", str: "a string", int: "a number",
              float: "a number", bool: "a boolean", type(None): "null"}  # fmt: skip

_Trie = dict[str, "_Trie | None"]  # nested field names; None: a configured path ends here


class _Spec(NamedTuple):
    name: str
    path: str | None  # as configured
    keys: tuple[str, ...]  # the dotted path (default: the name), split
    numeric: bool


class _Features(NamedTuple):
    specs: tuple[_Spec, ...]
    names: tuple[str, ...]
    known: _Trie  # every configured path, to count the fields no feature names
    # Rows given as arrays: each feature's column (its path as an index, default
    # its position; None if its path is no index), and the set of them sorted.
    columns: tuple[int | None, ...]
    used_columns: tuple[int, ...]

    @classmethod
    def compile(cls, features: Sequence[FeatureConfig]) -> _Features:
        specs = tuple(
            _Spec(f.name, f.path, tuple(f.location.split(".")), f.type == "numeric")
            for f in features
        )
        known: _Trie = {}
        for spec in specs:
            node = known
            for key in spec.keys[:-1]:
                child = node.setdefault(key, {})
                if child is None:  # a shorter configured path covers everything below
                    break
                node = child
            else:
                node[spec.keys[-1]] = None
        columns = tuple(_index(s.path) if s.path is not None else i for i, s in enumerate(specs))
        used = tuple(sorted({i for i in columns if i is not None}))
        return cls(specs, tuple(s.name for s in specs), known, columns, used)


class _Table(NamedTuple):
    rows: int
    columns: list[list[Any]]  # in the order of the specs; _MISSING where absent
    unknown: int


def _loads(body: bytes, which: str) -> Any:
    if not body:
        raise UnparsableBody(f"{which} body is empty")
    try:
        if body[:1] in b"{[":  # plain UTF-8 (no BOM): skip json's encoding detection
            return json.loads(body.decode())
        return json.loads(body)
    except RecursionError:
        raise UnparsableBody(f"{which} body is JSON nested too deeply") from None
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise UnparsableBody(f"{which} body is not JSON: {error}") from None


def _kind(value: Any) -> str:
    return _JSON_TYPE.get(type(value), type(value).__name__)


def _clean(values: list[Any], *, numeric: bool) -> tuple[list[Any], int, int]:
    """A column with absent and wrong-typed values replaced by None, and how many of each."""
    allowed = _NUMBERS if numeric else _SCALARS
    if set(map(type, values)) <= allowed:  # the common case: one C-level pass
        return values, 0, 0
    clean: list[Any] = []
    missing = wrong = 0
    for value in values:
        if type(value) in allowed:
            clean.append(value)
            continue
        if value is _MISSING:
            missing += 1
        else:
            wrong += 1
        clean.append(None)
    return clean, missing, wrong


def _lookup(value: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if type(value) is dict:
            value = value.get(key, _MISSING)
        elif type(value) is list and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return _MISSING
    return value


def _fit(values: list[Any], rows: int) -> list[Any]:
    if len(values) == rows:
        return values
    return values[:rows] + [None] * (rows - len(values))


def _index(path: str | None) -> int | None:
    return int(path) if path is not None and path.isdigit() else None


# ---------------------------------------------------------------- rows of objects and lists


def _object_columns(rows: list[dict[str, Any]], features: _Features) -> _Table:
    columns = []
    for spec in features.specs:
        if len(spec.keys) == 1:
            key = spec.keys[0]
            columns.append([row.get(key, _MISSING) for row in rows])
        else:
            columns.append([_lookup(row, spec.keys) for row in rows])
    known = features.known
    return _Table(len(rows), columns, sum(_unknown(row, known) for row in rows))


def _unknown(row: dict[str, Any], known: _Trie) -> int:
    count = len(row.keys() - known.keys())
    for key, below in known.items():
        if below is not None and type(value := row.get(key)) is dict:
            count += _unknown(value, below)
    return count


def _list_columns(rows: list[Any], features: _Features) -> _Table:
    """Rows given as arrays: a feature's path is its column index (default: its position)."""
    if not set(map(type, rows)) <= {list}:
        rows = [row if type(row) is list else [row] for row in rows]  # a scalar: a 1-column row
    wanted, used = features.columns, features.used_columns
    widths = set(map(len, rows))
    if len(widths) == 1:  # every row as wide: transpose once, in C
        (width,) = widths
        transposed = list(zip(*rows, strict=True)) if width else []
        absent = [_MISSING] * len(rows)
        columns = [list(transposed[i]) if i is not None and i < width else absent for i in wanted]
        return _Table(len(rows), columns, len(rows) * (width - bisect_left(used, width)))
    columns = [
        [row[i] if i is not None and i < len(row) else _MISSING for row in rows] for i in wanted
    ]
    unknown = sum(len(row) - bisect_left(used, len(row)) for row in rows)
    return _Table(len(rows), columns, unknown)


# ---------------------------------------------------------------- KServe v1 and plain JSON


def _read_kserve_v1(document: Any, features: _Features) -> _Table:
    rows = document.get("instances", document.get("inputs")) if type(document) is dict else None
    if type(rows) is not list:
        raise UnparsableBody(
            f'kserve-v1 request: expected {{"instances": [...]}} or {{"inputs": [...]}}, '
            f"got {_kind(document)}"
            + (f" with keys {sorted(document)[:5]}" if type(document) is dict else "")
        )
    kinds = set(map(type, rows))
    if kinds == {dict}:
        return _object_columns(rows, features)
    if dict in kinds:
        raise UnparsableBody("kserve-v1 request: instances mix objects with arrays or scalars")
    return _list_columns(rows, features)


def _read_json(document: Any, features: _Features) -> _Table:
    rows = [document] if type(document) is dict else document
    if type(rows) is not list or not set(map(type, rows)) <= {dict}:
        raise UnparsableBody(
            f"json request: expected an object or an array of objects, got {_kind(document)}"
            + (" holding other values" if type(document) is list else "")
        )
    return _object_columns(rows, features)


def _interpret(value: Any, score_index: int | None) -> tuple[Any, float | None]:
    """One response value: a scalar is the prediction; a list of numbers holds class
    probabilities (prediction: argmax index, score: the max or the one at score_index)."""
    if type(value) is list and len(value) == 1:
        value = value[0]  # one output column: the value itself (a regression, a label)
    if type(value) is list:
        if not value or not set(map(type, value)) <= {int, float}:
            return None, None
        best = max(range(len(value)), key=value.__getitem__)
        if score_index is None:
            return best, float(value[best])
        return best, float(value[score_index]) if score_index < len(value) else None
    return (value, None) if type(value) in _SCALARS else (None, None)


def _score(value: Any) -> float | None:
    return float(value) if type(value) is int or type(value) is float else None


def _response_rows(
    items: list[Any], prediction: PredictionConfig
) -> tuple[list[Any], list[float | None]]:
    if set(map(type, items)) <= _SCALARS:  # a list of labels or values: nothing to look up
        return items, [None] * len(items)
    score_index = _index(prediction.score)
    pred_keys = tuple(prediction.path.split(".")) if prediction.path else None
    score_keys = tuple(prediction.score.split(".")) if prediction.score else None
    predictions: list[Any] = []
    scores: list[float | None] = []
    for item in items:
        if type(item) is dict:
            found = _lookup(item, pred_keys) if pred_keys else None
            label, score = _interpret(None if found is _MISSING else found, None)
            if score_keys is not None:
                score = _score(_lookup(item, score_keys))
        else:
            label, score = _interpret(item, score_index)
        predictions.append(label)
        scores.append(score)
    return predictions, scores


def _read_kserve_v1_response(
    document: Any, prediction: PredictionConfig
) -> tuple[list[Any], list[float | None]]:
    items = document.get("predictions") if type(document) is dict else None
    if type(items) is not list:
        raise UnparsableBody(
            f'kserve-v1 response: expected {{"predictions": [...]}}, got {_kind(document)}'
        )
    return _response_rows(items, prediction)


def _read_json_response(
    document: Any, prediction: PredictionConfig
) -> tuple[list[Any], list[float | None]]:
    if type(document) is list:
        return _response_rows(document, prediction)
    return _response_rows([document], prediction)


# ---------------------------------------------------------------- Open Inference Protocol v2


class _Tensor(NamedTuple):
    name: str
    shape: tuple[int, ...]
    raw: Any  # "data" as sent: flat (row-major) or nested

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def width(self) -> int:
        return prod(self.shape[1:])

    def flat(self, which: str) -> list[Any]:
        """The data row-major, checked against the shape."""
        where = f"open-inference-v2 {which} tensor {self.name!r} of shape {list(self.shape)}"
        values = self.raw
        if type(values) is not list:
            values = [values]  # a scalar tensor may send its one value bare
        for depth in range(len(self.shape) - 1):
            kinds = set(map(type, values))
            if list not in kinds:
                break  # already flat
            if kinds != {list} or len(values) != prod(self.shape[: depth + 1]):
                raise UnparsableBody(f"{where}: nested data does not match the shape")
            if set(map(len, values)) != {self.shape[depth + 1]}:
                raise UnparsableBody(f"{where}: nested data does not match the shape")
            values = list(chain.from_iterable(values))
        if list in set(map(type, values)):
            raise UnparsableBody(f"{where}: data is nested deeper than the shape")
        if len(values) != prod(self.shape):
            raise UnparsableBody(
                f"{where}: needs {prod(self.shape)} values, data has {len(values)}"
            )
        return values


def _tensors(document: Any, key: str, which: str) -> list[_Tensor]:
    items = document.get(key) if type(document) is dict else None
    if type(items) is not list:
        raise UnparsableBody(
            f'open-inference-v2 {which}: expected {{"{key}": [tensors]}}, got {_kind(document)}'
        )
    tensors = []
    for i, item in enumerate(items):
        if not _is_tensor(item):
            raise UnparsableBody(
                f"open-inference-v2 {which}: {key}[{i}] must be an object with a name, "
                "a shape of non-negative integers and data"
            )
        tensors.append(_Tensor(item["name"], tuple(item["shape"]), item["data"]))
    return tensors


def _is_tensor(item: Any) -> bool:
    if type(item) is not dict:
        return False
    shape = item.get("shape")
    return (
        type(item.get("name")) is str
        and type(shape) is list
        and all(type(n) is int and n >= 0 for n in shape)
        and "data" in item
    )


def _by_row(values: list[Any], rows: int, width: int) -> list[Any]:
    if width == 1:
        return values
    return [values[i * width : (i + 1) * width] for i in range(rows)]


def _read_v2(document: Any, features: _Features) -> _Table:
    tensors = _tensors(document, "inputs", "request")
    named = {t.name: t for t in tensors}
    # Column indices refer to the only input, or to the only 2-D one among several.
    two_d = [t for t in tensors if len(t.shape) == 2]
    table = tensors[0] if len(tensors) == 1 else two_d[0] if len(two_d) == 1 else None

    sources: list[tuple[_Tensor, int | None] | None] = []  # (tensor, column or whole rows)
    for position, spec in enumerate(features.specs):
        if (spec.path or spec.name) in named:
            sources.append((named[spec.path or spec.name], None))
        elif table is not None and (spec.path is None or spec.path.isdigit()):
            column = position if spec.path is None else int(spec.path)
            sources.append((table, column) if column < table.width else None)
        else:
            sources.append(None)

    referenced = {s[0].name: s[0] for s in sources if s is not None}
    batch = {t.rows for t in referenced.values()}
    if len(batch) > 1:
        sizes = ", ".join(f"{t.name!r}: {t.rows}" for t in referenced.values())
        raise UnparsableBody(f"open-inference-v2 request: inputs disagree on batch size ({sizes})")
    rows = batch.pop() if batch else (tensors[0].rows if tensors else 0)

    flat = {name: tensor.flat("request input") for name, tensor in referenced.items()}
    columns: list[list[Any]] = []
    for source in sources:
        if source is None:
            columns.append([_MISSING] * rows)
        elif source[1] is None:
            columns.append(_by_row(flat[source[0].name], rows, source[0].width))
        else:
            columns.append(flat[source[0].name][source[1] :: source[0].width])

    unknown_per_row = len(named.keys() - referenced.keys())
    indexed = {s[1] for s in sources if s is not None and s[1] is not None}
    if indexed and table is not None:
        unknown_per_row += table.width - len(indexed)
    return _Table(rows, columns, unknown_per_row * rows)


def _read_v2_response(
    document: Any, prediction: PredictionConfig
) -> tuple[list[Any], list[float | None]]:
    outputs = {t.name: t for t in _tensors(document, "outputs", "response")}
    chosen = outputs.get(prediction.path) if prediction.path else None
    if chosen is None and prediction.path in (None, _DEFAULT_PREDICTION_PATH) and outputs:
        chosen = next(iter(outputs.values()))  # the default: the first output
    score_output = outputs.get(prediction.score) if prediction.score else None
    score_index = _index(prediction.score) if score_output is None else None

    predictions: list[Any] = []
    scores: list[float | None] = []
    if chosen is not None:
        values = _by_row(chosen.flat("response output"), chosen.rows, chosen.width)
        if chosen.width == 1:
            predictions, scores = values, [None] * len(values)
        else:
            pairs = [_interpret(row, score_index) for row in values]
            predictions, scores = [p for p, _ in pairs], [s for _, s in pairs]
    if score_output is not None:
        values = score_output.flat("response output")
        if score_output.width == 1:
            scores = [_score(v) for v in values]
        else:
            rows = _by_row(values, score_output.rows, score_output.width)
            scores = [_interpret(row, None)[1] for row in rows]
    return predictions, scores


_DEFAULT_PREDICTION_PATH: Final = PredictionConfig.model_fields["path"].default

_REQUEST_READERS = {
    "kserve-v1": _read_kserve_v1,
    "open-inference-v2": _read_v2,
    "json": _read_json,
}
_RESPONSE_READERS = {
    "kserve-v1": _read_kserve_v1_response,
    "open-inference-v2": _read_v2_response,
    "json": _read_json_response,
}
