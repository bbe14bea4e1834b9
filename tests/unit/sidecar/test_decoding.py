"""Compressed bodies decoded for capture: gzip and deflate, bounded."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib

import pytest

from driftline_sidecar.contract.metric_names import ResponseUnread
from driftline_sidecar.decoding import UndecodableBody, decode

BODY = json.dumps({"predictions": [[0.25, 0.75]] * 50}).encode()


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        ("gzip", gzip.compress(BODY)),
        ("x-gzip", gzip.compress(BODY)),
        ("GZIP", gzip.compress(BODY)),
        ("deflate", zlib.compress(BODY)),  # RFC 9110: the zlib format
        ("deflate", raw_deflate(BODY)),  # what some servers send instead
        ("identity", BODY),
        ("", BODY),
        ("deflate, gzip", gzip.compress(zlib.compress(BODY))),  # applied in order
        ("gzip,identity", gzip.compress(BODY)),
    ],
)
def test_each_coding_is_undone(encoding: str, encoded: bytes) -> None:
    assert decode(encoded, encoding, max_bytes=len(BODY)) == BODY


def test_gzip_members_are_concatenated() -> None:
    half = len(BODY) // 2
    encoded = gzip.compress(BODY[:half]) + gzip.compress(BODY[half:]) + b"\0" * 8
    assert decode(encoded, "gzip", max_bytes=len(BODY)) == BODY


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, br"])
def test_a_coding_capture_does_not_know_is_named(encoding: str) -> None:
    with pytest.raises(UndecodableBody) as raised:
        decode(BODY, encoding, max_bytes=1 << 20)
    assert raised.value.reason is ResponseUnread.ENCODING
    assert repr(encoding.split(",")[-1].strip()) in str(raised.value)


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        ("gzip", BODY),  # not gzip at all
        ("gzip", gzip.compress(BODY)[:-20]),  # cut short
        ("gzip", gzip.compress(BODY)[:-4] + b"\0\0\0\0"),  # wrong length in the trailer
        ("deflate", zlib.compress(BODY)[:-1] + b"\x00"),  # wrong Adler-32
        ("gzip", gzip.compress(BODY) + b"garbage"),  # a second member that is none
    ],
)
def test_a_corrupt_body_is_reported_as_corrupt(encoding: str, encoded: bytes) -> None:
    with pytest.raises(UndecodableBody) as raised:
        decode(encoded, encoding, max_bytes=1 << 20)
    assert raised.value.reason is ResponseUnread.CORRUPT


def test_a_body_decoding_past_the_limit_is_too_large() -> None:
    assert decode(gzip.compress(BODY), "gzip", max_bytes=len(BODY)) == BODY
    with pytest.raises(UndecodableBody) as raised:
        decode(gzip.compress(BODY), "gzip", max_bytes=len(BODY) - 1)
    assert raised.value.reason is ResponseUnread.TOO_LARGE


def test_a_zip_bomb_costs_no_more_memory_than_the_limit() -> None:
    """256 MiB of zeros, gzipped to about 250 KiB, read with a 1 MiB limit."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = b"".join(compressor.compress(zeros) for _ in range(256)) + compressor.flush()
    assert len(bomb) < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(UndecodableBody) as raised:
            decode(bomb, "gzip", max_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert raised.value.reason is ResponseUnread.TOO_LARGE
    assert peak < 4 << 20  # the limit and a copy of it, never the 256 MiB
