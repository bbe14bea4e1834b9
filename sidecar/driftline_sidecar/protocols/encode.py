"""Rows written as a request in a protocol the readers here understand.

The explainer sends the model rows it made up (masked copies of sampled rows),
in the protocol the model speaks; writing them next to the readers keeps one
place that knows each wire format, and the round trip is tested: what
``encode_rows`` writes, ``Extractor`` reads back as the same columns.

- kserve-v1: ``{"instances": [...]}``; rows as arrays when every feature is
  located by a column index (or by its position), else as objects.
- open-inference-v2: one ``[rows, n]`` tensor (``FP64``, or ``BYTES`` when a
  feature is categorical) when features are located by column, else one
  ``[rows]`` tensor per feature, named by its path.
- json: a list of objects, dotted paths nested.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from driftline_sidecar.contract.config import FeatureConfig
from driftline_sidecar.protocols._common import index


def encode_rows(
    protocol: str, features: Sequence[FeatureConfig], rows: Sequence[Sequence[Any]]
) -> bytes:
    """``rows`` hold one value per feature, in the order of ``features``."""
    if protocol == "kserve-v1":
        body: Any = {
            "instances": _arrays(features, rows)
            if _by_column(features)
            else _objects(features, rows)
        }
    elif protocol == "open-inference-v2":
        body = {"inputs": _tensors(features, rows)}
    elif protocol == "json":
        body = _objects(features, rows)
    else:
        raise ValueError(
            f"protocol {protocol!r}: rows can be written as kserve-v1, open-inference-v2 or json"
        )
    return json.dumps(body, separators=(",", ":")).encode()


def _by_column(features: Sequence[FeatureConfig]) -> bool:
    return all(f.path is None or index(f.path) is not None for f in features)


def _columns(features: Sequence[FeatureConfig]) -> list[int]:
    return [i if f.path is None else int(f.path) for i, f in enumerate(features)]


def _arrays(features: Sequence[FeatureConfig], rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    columns = _columns(features)
    if columns == list(range(len(features))):
        return [row if type(row) is list else list(row) for row in rows]
    width = max(columns) + 1
    arrays = []
    for row in rows:
        array: list[Any] = [0.0] * width  # columns no feature names: a neutral filler
        for column, value in zip(columns, row, strict=True):
            array[column] = value
        arrays.append(array)
    return arrays


def _objects(
    features: Sequence[FeatureConfig], rows: Sequence[Sequence[Any]]
) -> list[dict[str, Any]]:
    paths = [f.location.split(".") for f in features]
    objects = []
    for row in rows:
        document: dict[str, Any] = {}
        for keys, value in zip(paths, row, strict=True):
            node = document
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = value
        objects.append(document)
    return objects


def _tensors(
    features: Sequence[FeatureConfig], rows: Sequence[Sequence[Any]]
) -> list[dict[str, Any]]:
    categorical = any(f.type == "categorical" for f in features)
    if _by_column(features):
        arrays = _arrays(features, rows)
        width = len(arrays[0]) if arrays else len(features)
        return [
            {
                "name": "input-0",
                "shape": [len(arrays), width],
                "datatype": "BYTES" if categorical else "FP64",
                "data": [value for array in arrays for value in array],
            }
        ]
    return [
        {
            "name": f.location,
            "shape": [len(rows)],
            "datatype": "BYTES" if f.type == "categorical" else "FP64",
            "data": [row[i] for row in rows],
        }
        for i, f in enumerate(features)
    ]
