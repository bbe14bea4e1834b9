"""What every protocol reader shares: the compiled feature list, the table a
request becomes, and the small value helpers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import orjson

from driftline_sidecar.contract.config import FeatureConfig


class UnparsableBody(ValueError):
    """A body that is not JSON, or JSON in no shape the protocol knows."""


MISSING: Final = object()  # a field absent from a row (JSON null is present, and None)
NUMBERS: Final = frozenset({int, float, type(None)})  # bool is not a number here
SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_JSON_TYPE = {dict: "an object", list: "an array", str: "a string", int: "a number",
              float: "a number", bool: "a boolean", type(None): "null"}  # fmt: skip

Trie = dict[str, "Trie | None"]  # nested field names; None: a configured path ends here


class Spec(NamedTuple):
    name: str
    path: str | None  # as configured
    keys: tuple[str, ...]  # the dotted path (default: the name), split
    numeric: bool


class Features(NamedTuple):
    specs: tuple[Spec, ...]
    names: tuple[str, ...]
    known: Trie  # every configured path, to count the fields no feature names
    nested: tuple[tuple[str, Trie], ...]  # the top-level keys of ``known`` with paths below
    # Rows given as arrays: each feature's column (its path as an index, default
    # its position; None if its path is no index), and the set of them sorted.
    columns: tuple[int | None, ...]
    used_columns: tuple[int, ...]

    @classmethod
    def compile(cls, features: Sequence[FeatureConfig]) -> Features:
        specs = tuple(
            Spec(f.name, f.path, tuple(f.location.split(".")), f.type == "numeric")
            for f in features
        )
        known: Trie = {}
        for spec in specs:
            node = known
            for key in spec.keys[:-1]:
                child = node.setdefault(key, {})
                if child is None:  # a shorter configured path covers everything below
                    break
                node = child
            else:
                node[spec.keys[-1]] = None
        columns = tuple(index(s.path) if s.path is not None else i for i, s in enumerate(specs))
        used = tuple(sorted({i for i in columns if i is not None}))
        names = tuple(s.name for s in specs)
        return cls(specs, names, known, nested(known), columns, used)


def nested(known: Trie) -> tuple[tuple[str, Trie], ...]:
    return tuple((key, below) for key, below in known.items() if below is not None)


class Table(NamedTuple):
    rows: int
    columns: list[list[Any]]  # in the order of the specs; MISSING where absent
    unknown: int


def loads(body: bytes, which: str) -> Any:
    if not body:
        raise UnparsableBody(f"{which} body is empty")
    try:
        return orjson.loads(body)  # 3-4x the standard library's speed on a 1 KB row
    except orjson.JSONDecodeError:
        pass  # what orjson refuses the standard library may read: NaN, huge ints, UTF-16
    try:
        if body[:1] in b"{[":  # plain UTF-8 (no BOM): skip json's encoding detection
            return json.loads(body.decode())
        return json.loads(body)
    except RecursionError:
        raise UnparsableBody(f"{which} body is JSON nested too deeply") from None
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise UnparsableBody(f"{which} body is not JSON: {error}") from None


def kind(value: Any) -> str:
    return _JSON_TYPE.get(type(value), type(value).__name__)


def clean(values: list[Any], *, numeric: bool) -> tuple[list[Any], int, int]:
    """A column with absent and wrong-typed values replaced by None, and how many of each."""
    allowed = NUMBERS if numeric else SCALARS
    if set(map(type, values)) <= allowed:  # the common case: one C-level pass
        return values, 0, 0
    clean: list[Any] = []
    missing = wrong = 0
    for value in values:
        if type(value) in allowed:
            clean.append(value)
            continue
        if value is MISSING:
            missing += 1
        else:
            wrong += 1
        clean.append(None)
    return clean, missing, wrong


def lookup(value: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if type(value) is dict:
            value = value.get(key, MISSING)
        elif type(value) is list and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return MISSING
    return value


def fit(values: list[Any], rows: int) -> list[Any]:
    if len(values) == rows:
        return values
    return values[:rows] + [None] * (rows - len(values))


def index(path: str | None) -> int | None:
    return int(path) if path is not None and path.isdigit() else None


def interpret(value: Any, score_index: int | None) -> tuple[Any, float | None]:
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
    return (value, None) if type(value) in SCALARS else (None, None)


def as_probabilities(value: Any) -> list[float] | None:
    """Class probabilities: a list of two or more numbers, else None."""
    if type(value) is not list or len(value) < 2:
        return None
    if not set(map(type, value)) <= {int, float}:
        return None
    return [float(v) for v in value]


def as_score(value: Any) -> float | None:
    return float(value) if type(value) is int or type(value) is float else None
