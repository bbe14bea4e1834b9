"""Open Inference Protocol v2: a request is a list of named tensors (name, shape,
datatype, data), data flat in row-major order or nested; rows are the first axis."""

from __future__ import annotations

from itertools import chain
from math import prod
from typing import Any, Final, NamedTuple

from driftline_sidecar.contract.config import PredictionConfig
from driftline_sidecar.protocols._common import (
    MISSING,
    Features,
    Table,
    UnparsableBody,
    as_probabilities,
    as_score,
    index,
    interpret,
    kind,
)


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
            f'open-inference-v2 {which}: expected {{"{key}": [tensors]}}, got {kind(document)}'
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


def read_v2(document: Any, features: Features) -> Table:
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
            columns.append([MISSING] * rows)
        elif source[1] is None:
            columns.append(_by_row(flat[source[0].name], rows, source[0].width))
        else:
            columns.append(flat[source[0].name][source[1] :: source[0].width])

    unknown_per_row = len(named.keys() - referenced.keys())
    indexed = {s[1] for s in sources if s is not None and s[1] is not None}
    if indexed and table is not None:
        unknown_per_row += table.width - len(indexed)
    return Table(rows, columns, unknown_per_row * rows)


def read_v2_response(
    document: Any, prediction: PredictionConfig
) -> tuple[list[Any], list[float | None]]:
    outputs = {t.name: t for t in _tensors(document, "outputs", "response")}
    chosen = outputs.get(prediction.path) if prediction.path else None
    if chosen is None and prediction.path in (None, _DEFAULT_PREDICTION_PATH) and outputs:
        chosen = next(iter(outputs.values()))  # the default: the first output
    score_output = outputs.get(prediction.score) if prediction.score else None
    score_index = index(prediction.score) if score_output is None else None

    predictions: list[Any] = []
    scores: list[float | None] = []
    if chosen is not None:
        values = _by_row(chosen.flat("response output"), chosen.rows, chosen.width)
        if chosen.width == 1:
            predictions, scores = values, [None] * len(values)
        else:
            pairs = [interpret(row, score_index) for row in values]
            predictions, scores = [p for p, _ in pairs], [s for _, s in pairs]
    if score_output is not None:
        values = score_output.flat("response output")
        if score_output.width == 1:
            scores = [as_score(v) for v in values]
        else:
            rows = _by_row(values, score_output.rows, score_output.width)
            scores = [interpret(row, None)[1] for row in rows]
    return predictions, scores


def read_v2_probabilities(document: Any, prediction: PredictionConfig) -> list[list[float] | None]:
    """Per row, the class probabilities of the score output (else of the
    prediction output) when it holds two or more numbers a row."""
    outputs = {t.name: t for t in _tensors(document, "outputs", "response")}
    chosen = outputs.get(prediction.score) if prediction.score else None
    if chosen is None:
        chosen = outputs.get(prediction.path) if prediction.path else None
    if chosen is None and prediction.path in (None, _DEFAULT_PREDICTION_PATH) and outputs:
        chosen = next(iter(outputs.values()))
    if chosen is None or chosen.width < 2:
        return []
    rows = _by_row(chosen.flat("response output"), chosen.rows, chosen.width)
    return [as_probabilities(row) for row in rows]


_DEFAULT_PREDICTION_PATH: Final = PredictionConfig.model_fields["path"].default
