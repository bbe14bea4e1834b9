"""driftline_sidecar.server_timing: the W3C Server-Timing grammar, in milliseconds."""

from __future__ import annotations

import pytest

from driftline_sidecar.server_timing import Malformed, parse_server_timing


@pytest.mark.parametrize(
    ("header", "stages"),
    [
        ("preprocess;dur=12.3, predict;dur=40.1", [("preprocess", 0.0123), ("predict", 0.0401)]),
        ('cache;desc="Cache, Read";dur=23.2', [("cache", 0.0232)]),  # a comma inside quotes
        ('total;dur="100"', [("total", 0.1)]),  # a quoted dur
        ("miss, db;dur=53", [("db", 0.053)]),  # no dur: no time
        ("db;DUR=1;dur=2", [("db", 0.001)]),  # the first dur counts, any case
        ("a;dur=1,,  b;dur=2 ,", [("a", 0.001), ("b", 0.002)]),  # empty elements
        ("", []),
    ],
)
def test_well_formed(header: str, stages: list[tuple[str, float]]):
    found = parse_server_timing(header)
    assert [name for name, _ in found] == [name for name, _ in stages]
    assert [seconds for _, seconds in found] == pytest.approx([seconds for _, seconds in stages])


@pytest.mark.parametrize(
    "header",
    [
        "pre process;dur=1",
        "predict;dur=fast",
        "predict;dur=-3",
        "predict;dur=inf",
        'a;desc="unterminated',
        '"quoted";dur=1',
        "a;dur=1 b",
        "a;=1",
    ],
)
def test_malformed(header: str):
    with pytest.raises(Malformed):
        parse_server_timing(header)
