"""KServe v1 and plain JSON: a request is a list of rows, each an object or an array."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from driftline_sidecar.contract.config import PredictionConfig
from driftline_sidecar.protocols._common import (
    MISSING,
    SCALARS,
    Features,
    Table,
    Trie,
    UnparsableBody,
    as_probabilities,
    as_score,
    index,
    interpret,
    kind,
    lookup,
    nested,
)


def _object_columns(rows: list[dict[str, Any]], features: Features) -> Table:
    specs = features.specs
    if len(rows) == 1:  # most requests: one pass over the features, not one per feature
        (row,) = rows
        columns = [
            [row.get(spec.keys[0], MISSING) if len(spec.keys) == 1 else lookup(row, spec.keys)]
            for spec in specs
        ]
        return Table(1, columns, _unknown(row, features.known, features.nested))
    columns = []
    for spec in specs:
        if len(spec.keys) == 1:
            key = spec.keys[0]
            columns.append([row.get(key, MISSING) for row in rows])
        else:
            columns.append([lookup(row, spec.keys) for row in rows])
    known, below = features.known, features.nested
    return Table(len(rows), columns, sum(_unknown(row, known, below) for row in rows))


def _unknown(row: dict[str, Any], known: Trie, below: tuple[tuple[str, Trie], ...]) -> int:
    """The fields of ``row`` no configured path names; ``below``: ``nested(known)``."""
    count = len(row.keys() - known.keys())
    for key, trie in below:
        if type(value := row.get(key)) is dict:
            count += _unknown(value, trie, nested(trie))
    return count


def _list_columns(rows: list[Any], features: Features) -> Table:
    """Rows given as arrays: a feature's path is its column index (default: its position)."""
    if not set(map(type, rows)) <= {list}:
        rows = [row if type(row) is list else [row] for row in rows]  # a scalar: a 1-column row
    wanted, used = features.columns, features.used_columns
    widths = set(map(len, rows))
    if len(widths) == 1:  # every row as wide: transpose once, in C
        (width,) = widths
        transposed = list(zip(*rows, strict=True)) if width else []
        absent = [MISSING] * len(rows)
        columns = [list(transposed[i]) if i is not None and i < width else absent for i in wanted]
        return Table(len(rows), columns, len(rows) * (width - bisect_left(used, width)))
    columns = [
        [row[i] if i is not None and i < len(row) else MISSING for row in rows] for i in wanted
    ]
    unknown = sum(len(row) - bisect_left(used, len(row)) for row in rows)
    return Table(len(rows), columns, unknown)


def read_kserve_v1(document: Any, features: Features) -> Table:
    rows = document.get("instances", document.get("inputs")) if type(document) is dict else None
    if type(rows) is not list:
        raise UnparsableBody(
            f'kserve-v1 request: expected {{"instances": [...]}} or {{"inputs": [...]}}, '
            f"got {kind(document)}"
            + (f" with keys {sorted(document)[:5]}" if type(document) is dict else "")
        )
    kinds = set(map(type, rows))
    if kinds == {dict}:
        return _object_columns(rows, features)
    if dict in kinds:
        raise UnparsableBody("kserve-v1 request: instances mix objects with arrays or scalars")
    return _list_columns(rows, features)


def read_json(document: Any, features: Features) -> Table:
    rows = [document] if type(document) is dict else document
    if type(rows) is not list or not set(map(type, rows)) <= {dict}:
        raise UnparsableBody(
            f"json request: expected an object or an array of objects, got {kind(document)}"
            + (" holding other values" if type(document) is list else "")
        )
    return _object_columns(rows, features)


def _response_rows(
    items: list[Any], prediction: PredictionConfig
) -> tuple[list[Any], list[float | None]]:
    if set(map(type, items)) <= SCALARS:  # a list of labels or values: nothing to look up
        return items, [None] * len(items)
    score_index = index(prediction.score)
    pred_keys = tuple(prediction.path.split(".")) if prediction.path else None
    score_keys = tuple(prediction.score.split(".")) if prediction.score else None
    predictions: list[Any] = []
    scores: list[float | None] = []
    for item in items:
        if type(item) is dict:
            found = lookup(item, pred_keys) if pred_keys else None
            label, score = interpret(None if found is MISSING else found, None)
            if score_keys is not None:
                score = as_score(lookup(item, score_keys))
        else:
            label, score = interpret(item, score_index)
        predictions.append(label)
        scores.append(score)
    return predictions, scores


def _probability_rows(items: list[Any], prediction: PredictionConfig) -> list[list[float] | None]:
    score_keys = tuple(prediction.score.split(".")) if prediction.score else None
    pred_keys = tuple(prediction.path.split(".")) if prediction.path else None
    found: list[list[float] | None] = []
    for item in items:
        if type(item) is dict:
            keys = score_keys or pred_keys
            item = lookup(item, keys) if keys else None
        found.append(as_probabilities(item))
    return found


def read_kserve_v1_probabilities(
    document: Any, prediction: PredictionConfig
) -> list[list[float] | None]:
    items = document.get("predictions") if type(document) is dict else None
    return _probability_rows(items, prediction) if type(items) is list else []


def read_json_probabilities(
    document: Any, prediction: PredictionConfig
) -> list[list[float] | None]:
    return _probability_rows(document if type(document) is list else [document], prediction)


def read_kserve_v1_response(
    document: Any, prediction: PredictionConfig
) -> tuple[list[Any], list[float | None]]:
    items = document.get("predictions") if type(document) is dict else None
    if type(items) is not list:
        raise UnparsableBody(
            f'kserve-v1 response: expected {{"predictions": [...]}}, got {kind(document)}'
        )
    return _response_rows(items, prediction)


def read_json_response(
    document: Any, prediction: PredictionConfig
) -> tuple[list[Any], list[float | None]]:
    if type(document) is list:
        return _response_rows(document, prediction)
    return _response_rows([document], prediction)
