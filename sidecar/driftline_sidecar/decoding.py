"""Content codings undone for capture: a response the model compressed, read back.

Model servers compress answers when the client accepts it (MLServer gzips any
response over a size whenever ``Accept-Encoding`` allows). The client gets the
model's bytes untouched; capture, off the hot path, needs the JSON inside, so
it decodes its own copy here. Only ``gzip`` (``x-gzip``) and ``deflate`` (zlib
format as RFC 9110 says, or the raw deflate some servers send) are decoded,
each a list of codings applied in order (``Content-Encoding: gzip, deflate``).

Decoding is bounded: the output stops at ``max_bytes`` (``zlib``'s
``max_length``), so a small body that inflates to gigabytes (a zip bomb)
costs at most ``max_bytes`` of memory and the time to produce them.
"""

from __future__ import annotations

import zlib

from driftline_sidecar.contract.metric_names import ResponseUnread

# What a compressed body is taken to grow by when decoded, to judge the cost
# of reading it (JSON of numbers compresses some 3-10 times).
DECODED_GROWTH = 8

_GZIP = 16 + zlib.MAX_WBITS  # a gzip header and trailer around deflate
_ZLIB = zlib.MAX_WBITS
_RAW = -zlib.MAX_WBITS


class UndecodableBody(ValueError):
    """A body capture cannot decode; ``reason`` is how it is counted."""

    def __init__(self, reason: ResponseUnread, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def decode(body: bytes, content_encoding: str, *, max_bytes: int) -> bytes:
    """``body`` with every coding in ``content_encoding`` undone (last applied first).

    Raises ``UndecodableBody``: ENCODING for a coding other than gzip, deflate
    or identity; CORRUPT for a body that is not what its coding says (bad
    header or checksum, cut short); TOO_LARGE when a decoded body would exceed
    ``max_bytes``.
    """
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    for coding in reversed([c for c in codings if c and c != "identity"]):
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, _GZIP, coding=coding, max_bytes=max_bytes)
        elif coding == "deflate":
            wbits = _ZLIB if _has_zlib_header(body) else _RAW
            body = _inflate(body, wbits, coding=coding, max_bytes=max_bytes)
        else:
            raise UndecodableBody(
                ResponseUnread.ENCODING,
                f"content coding {coding!r} is not one capture decodes (gzip, deflate)",
            )
    return body


def _inflate(data: bytes, wbits: int, *, coding: str, max_bytes: int) -> bytes:
    out = bytearray()
    inflater = zlib.decompressobj(wbits)
    try:
        while True:
            # Never more than one byte past the limit: enough to know it is exceeded.
            out += inflater.decompress(data, max_bytes + 1 - len(out))
            if len(out) > max_bytes:
                raise UndecodableBody(
                    ResponseUnread.TOO_LARGE,
                    f"{coding} body decodes to more than {max_bytes} bytes",
                )
            if inflater.eof:
                # gzip allows several members one after another (RFC 1952 2.2);
                # padding with zero bytes after the last is common and harmless.
                rest = inflater.unused_data
                if wbits != _GZIP or not rest.strip(b"\0"):
                    return bytes(out)
                data, inflater = rest, zlib.decompressobj(wbits)
            elif inflater.unconsumed_tail:
                data = inflater.unconsumed_tail  # stopped at the limit: go on
            else:
                raise UndecodableBody(
                    ResponseUnread.CORRUPT, f"{coding} body ends before its compressed stream"
                )
    except zlib.error as error:
        raise UndecodableBody(
            ResponseUnread.CORRUPT, f"{coding} body is corrupt: {error}"
        ) from None


def _has_zlib_header(data: bytes) -> bool:
    """RFC 1950: deflate method (8) in the low nibble, a header that is a multiple of 31."""
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
