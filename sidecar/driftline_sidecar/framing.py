"""What the proxy port accepts of a request head, beyond what httptools parses.

httptools (llhttp) rejects malformed syntax: bad methods and tokens, a
Content-Length that is not a number, Content-Length with Transfer-Encoding,
repeated Transfer-Encoding or Content-Length lines, bad chunk framing. A
proxy must refuse more than a parser does, or it forwards what the server
behind it (or another proxy in front) reads differently. The rules here are
nginx's (``ngx_http_parse.c``, ``ngx_http_request.c``), which the
differential fuzz test (``tests/component/test_fuzz_vs_nginx.py``) holds the
sidecar to, plus two of RFC 9112's that nginx also applies: an HTTP/1.0
request with Transfer-Encoding is refused (§6.1), and an absolute-form target
replaces Host (§3.2.2).

Each check is written for the hot path: plain byte tests first, the slow path
only for the rare request that needs it.
"""

from __future__ import annotations

import re

MAX_LINE_BYTES = 8192  # a request line or a header line (nginx: large_client_header_buffers 4 8k)
MAX_HEAD_BYTES = 32768  # all of a request head (the four buffers)
MAX_HEADERS = 100  # header lines (Envoy's max_headers_count; nginx refused 1,000 short ones)

_HEX = re.compile(rb"%(?![0-9A-Fa-f]{2})")  # a % not followed by two hex digits
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_FORBIDDEN_DECODED = (b"\x00", b"\r", b"\n")  # NUL as nginx; CR and LF as header injection
_HOST_BYTES = re.compile(rb"[^\x00-\x20\x7f/]*")
_ABSOLUTE = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.DOTALL)


class Rejection(Exception):
    """A request the proxy answers itself, with ``status``, then closes the connection."""

    def __init__(self, status: int, problem: str) -> None:
        super().__init__(problem)
        self.status = status
        self.problem = problem


def valid_host(value: bytes) -> bool:
    """nginx's ``ngx_http_validate_host``: no controls, spaces, slashes or
    empty labels, and a name before the port."""
    if not _HOST_BYTES.fullmatch(value) or b".." in value:
        return False
    if value.startswith(b"["):  # an IPv6 literal, then perhaps a port
        name = value[: value.index(b"]") + 1] if b"]" in value else value
    else:
        name = value.partition(b":")[0]
    return name.removesuffix(b".") != b""


def origin_form(target: bytes) -> tuple[bytes, bytes | None]:
    """The target to forward and, for an absolute-form target, its authority
    (the Host to forward, RFC 9112 §3.2.2). Raises ``Rejection``."""
    authority = None
    if not target.startswith(b"/"):
        match = _ABSOLUTE.fullmatch(target)
        if match is None:  # "*", authority-form and the rest: nginx answers 400
            raise Rejection(400, f"request target {target[:100]!r} is not a path or a URL")
        authority = match.group(2)
        if b"@" in authority:
            raise Rejection(400, "request target with user info")
        if not valid_host(authority):
            raise Rejection(400, f"request target with an invalid host {authority[:100]!r}")
        target = match.group(3) or b"/"
        if not target.startswith(b"/"):
            target = b"/" + target
    path = target.partition(b"?")[0]
    if b"%" in path or b"/." in path:
        check_path(path)
    return target, authority


def check_path(path: bytes) -> None:
    """Percent escapes that decode, to no NUL, CR or LF, and dot segments that
    stay below the root (nginx decodes and normalises the path alike)."""
    if _HEX.search(path):
        raise Rejection(400, "request path with an invalid percent escape")
    decoded = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), path)
    if any(c in decoded for c in _FORBIDDEN_DECODED):
        raise Rejection(400, "request path with an encoded NUL, CR or LF")
    depth = 0
    for segment in decoded.split(b"/"):
        if segment == b"..":
            depth -= 1
            if depth < 0:
                raise Rejection(400, "request path above the root")
        elif segment not in (b"", b"."):
            depth += 1
