"""A model's ``Server-Timing`` response header, read into per-stage durations.

``Server-Timing: preprocess;dur=12.3, predict;dur=40.1;desc="xgb"`` (W3C
Server Timing: a list of metric names, each with optional ``dur``, in
milliseconds, and ``desc`` parameters) becomes ``[("preprocess", 0.0123),
("predict", 0.0401)]``. Metrics without ``dur`` carry no time and are left
out. A header that breaks the grammar (a name that is not a token, an
unterminated quoted string, a ``dur`` that is not a finite number >= 0) is
ignored whole and counted: half of a header that is wrong is not trusted.

The header passes to the client unchanged; this runs after the answer was
sent, and only for responses that carry the header.
"""

from __future__ import annotations

import math
import re
from typing import Final

_TOKEN: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_OWS: Final = r"[ \t]*"
_NAME = re.compile(_OWS + f"({_TOKEN})" + _OWS)
_PARAM = re.compile(
    f';{_OWS}({_TOKEN}){_OWS}(?:={_OWS}(?:({_TOKEN})|"((?:[^"\\\\]|\\\\.)*)"))?{_OWS}'
)
_SEPARATOR = re.compile(_OWS + "," + _OWS)


class Malformed(ValueError):
    """The header does not follow the Server-Timing grammar."""


def parse_server_timing(value: str) -> list[tuple[str, float]]:
    """The (name, seconds) of each metric with a ``dur`` (raises ``Malformed``)."""
    stages: list[tuple[str, float]] = []
    position, end = 0, len(value)
    while position < end:
        separator = _SEPARATOR.match(value, position)
        if separator is not None:  # empty list elements are allowed (RFC 9110 5.6.1)
            position = separator.end()
            continue
        name = _NAME.match(value, position)
        if name is None:
            raise Malformed(f"expected a metric name at {position}: {value[position:][:40]!r}")
        position = name.end()
        duration: float | None = None
        while (param := _PARAM.match(value, position)) is not None:
            position = param.end()
            if param.group(1).lower() == "dur" and duration is None:  # the first dur counts
                duration = _milliseconds(param.group(2) or param.group(3) or "")
        if position < end and _SEPARATOR.match(value, position) is None:
            raise Malformed(f"unexpected text at {position}: {value[position:][:40]!r}")
        if duration is not None:
            stages.append((name.group(1), duration / 1000.0))
    return stages


def _milliseconds(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise Malformed(f"dur {text!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise Malformed(f"dur {text!r} is not a duration")
    return number
