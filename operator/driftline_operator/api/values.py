"""The value types of the resource: durations, ratios and timestamps.

A `Duration` is parsed once, when the spec is validated, and keeps both the
text the user wrote (what status, Events and the CRD show) and its length in
seconds (what the code computes with).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Self

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

_DURATION = re.compile(r"^(\d+(\.\d+)?(ms|s|m|h))+$")
# The same, with at least one part that is not zero. No lookahead: the
# apiserver checks a CRD's patterns with Go's RE2.
_PART = r"\d+(\.\d+)?(ms|s|m|h)"
_NON_ZERO_PART = r"(\d*[1-9]\d*(\.\d+)?|\d+\.\d*[1-9]\d*)(ms|s|m|h)"
_POSITIVE_DURATION = re.compile(f"^({_PART})*{_NON_ZERO_PART}({_PART})*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """'1m30s' -> 90.0 seconds (units ms, s, m, h, as in Prometheus and Go)."""
    if not _DURATION.match(text):
        raise ValueError(f"{text!r} is not a duration such as 200ms, 30s, 10m or 1h30m")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


class Duration(str):
    """'1m30s', with ``.seconds`` (90.0). Compares and serializes as its text."""

    seconds: float

    def __new__(cls, text: str) -> Self:
        duration = super().__new__(cls, text)
        duration.seconds = parse_duration(text)
        return duration

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # The pattern is for the CRD; pydantic checks with parse_duration,
        # whose message says what a duration looks like.
        return {"type": "string", "pattern": _DURATION.pattern, "example": "30s"}


@dataclass(frozen=True)
class Positive:
    """A Duration field that must be longer than zero, and at least
    `at_least` when given: `Annotated[Duration, Positive(at_least="1s")]`.

    The CRD's pattern refuses a zero duration (`0s`, `0m0s`); a pattern
    cannot add parts up, so a minimum above zero is pydantic's to check.
    """

    at_least: str | None = None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {**handler(schema), "pattern": _POSITIVE_DURATION.pattern}

    def _check(self, duration: Duration) -> Duration:
        if duration.seconds <= 0:
            raise ValueError("must be longer than zero, such as 30s")
        if self.at_least is not None and duration.seconds < parse_duration(self.at_least):
            raise ValueError(f"must be at least {self.at_least}")
        return duration


PositiveDuration = Annotated[Duration, Positive()]


def parse_ratio(value: str | float) -> float:
    """'99.9%' -> 0.999; a bare number is already a ratio in 0..1."""
    if isinstance(value, str):
        text = value.strip()
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    else:
        number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{value!r} is not a ratio in 0..1 (or a percentage such as 99.9%)")
    return number


def rfc3339(seconds: float) -> str:
    """A Unix time as status writes it: '2026-12-01T11:17:28Z' (fractions kept)."""
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")


def from_rfc3339(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
