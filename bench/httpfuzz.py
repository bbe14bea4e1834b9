"""Differential HTTP/1.x fuzzing: the sidecar and nginx in front of the same model.

The one home of the generator and the harness, used by the test
(``tests/component/test_fuzz_vs_nginx.py``, a small run) and the benchmark
(``bench/fuzz_vs_nginx.py``, a large one). It lives in ``bench/`` because it
is a measuring tool; the test imports it as ``bench.httpfuzz`` (the suite runs
from the repository root), the bench script from its own folder.

A case is the raw bytes of one connection: a valid request put together from
random parts, then mutated (duplicated or missing headers, odd whitespace,
bad versions, chunk framing, Content-Length / Transfer-Encoding combinations,
bad targets, oversized parts, bytes smuggled behind the body). Every request
a case holds, smuggled ones included, carries an ``x-fuzz-case`` header as its
first header line, which no mutation touches: the recording model counts what
reached it per case, so cases run concurrently. The verdict per case is how
many requests each proxy forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import yaml

NGINX = "/usr/sbin/nginx"
CASE_HEADER = b"x-fuzz-case"
TIMED_OUT = -1  # in a case's statuses: the proxy still waited (for more bytes, or slow)
SIDECAR_FORWARDS = "sidecar-forwards-nginx-rejects"
SIDECAR_REJECTS = "sidecar-rejects-nginx-forwards"


@dataclass(frozen=True)
class Accepted:
    """A known disagreement where the sidecar forwards what nginx refuses, and why that is right."""

    name: str
    matches: Callable[[bytes], bool]  # on a case's bytes
    reason: str


# The one table of exceptions to "the sidecar forwards nothing nginx refuses".
ACCEPTED = [
    Accepted(
        "a tab before the Transfer-Encoding value",
        lambda data: (
            b"\ntransfer-encoding: \t" in data.lower() or b"\ntransfer-encoding:\t" in data.lower()
        ),
        "RFC 9110 5.6.3 makes a tab optional whitespace like a space: llhttp skips it and "
        "reads the body as chunked, as a conforming server behind the sidecar would; nginx "
        "skips only spaces and answers 501. The sidecar forwards the de-chunked body with a "
        "Content-Length, so no one reads it two ways.",
    ),
]


def nginx_available() -> bool:
    return shutil.which(NGINX) is not None or Path(NGINX).exists()


# -- the generator -----------------------------------------------------------


@dataclass
class Request:
    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes | None]]  # after the case header; None: a line with no colon
    body: bytes = b""
    chunked: bool = False
    chunks: list[bytes] | None = None  # raw chunked framing, when a mutation set it
    eol: bytes = b"\r\n"
    request_line: bytes | None = None  # raw, when a mutation set it

    def encode(self, case: int) -> bytes:
        line = self.request_line or b"%b %b %b" % (self.method, self.target, self.version)
        lines = [line, CASE_HEADER + b": %d" % case]
        lines += [name if value is None else name + b":" + value for name, value in self.headers]
        head = self.eol.join(lines) + self.eol + self.eol
        if self.chunks is not None:
            return head + b"".join(self.chunks)
        if self.chunked:
            framed = b"%x\r\n%b\r\n" % (len(self.body), self.body) if self.body else b""
            return head + framed + b"0\r\n\r\n"
        return head + self.body


@dataclass
class Case:
    number: int
    mutations: list[str]
    data: bytes
    expected: int  # responses a correct proxy sends before it may close or idle


def _valid(rng: random.Random) -> Request:
    method = rng.choice([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"])
    path = rng.choice([b"/predict", b"/v2/models/m/infer", b"/a/b", b"/echo/x"])
    if rng.random() < 0.3:
        path += b"?q=%d&x=y" % rng.randrange(100)
    headers: list[tuple[bytes, bytes | None]] = [(b"host", b" model.local")]
    for name, value in rng.sample(
        [
            (b"user-agent", b" fuzz/1"),
            (b"accept", b" */*"),
            (b"x-trace", b" abc"),
            (b"content-type", b" application/json"),
            (b"accept-encoding", b" gzip"),
        ],
        k=rng.randrange(4),
    ):
        headers.append((name, value))
    request = Request(method, path, b"HTTP/1.1", headers)
    if method in (b"POST", b"PUT", b"PATCH"):
        request.body = b'{"f0": %d}' % rng.randrange(1000)
        if rng.random() < 0.3:
            request.chunked = True
            request.headers.append((b"transfer-encoding", b" chunked"))
        else:
            request.headers.append((b"content-length", b" %d" % len(request.body)))
    return request


def _replace(request: Request, name: bytes, value: bytes | None) -> None:
    """Drop every ``name`` header, then add one with ``value`` unless it is None."""
    request.headers = [(n, v) for n, v in request.headers if n.lower() != name]
    if value is not None:
        request.headers.append((name, value))


# Each mutation edits a request in place; some return extra bytes for the
# connection (a smuggled or pipelined request) and how many more answers a
# correct proxy owes.


def _m_dup_host(r: Request, rng: random.Random) -> None:
    r.headers.insert(rng.randrange(len(r.headers) + 1), (b"Host", b" other.local"))


def _m_no_host(r: Request, rng: random.Random) -> None:
    _replace(r, b"host", None)


def _m_bad_host(r: Request, rng: random.Random) -> None:
    value = rng.choice([b" a b", b" a/b", b" ", b" a..b", b" .", b" :80", b" a\x01b", b" [::1"])
    _replace(r, b"host", value)


def _m_http10(r: Request, rng: random.Random) -> None:
    r.version = b"HTTP/1.0"
    if rng.random() < 0.5:
        r.headers.append((b"connection", b" keep-alive"))


def _m_te_http10(r: Request, rng: random.Random) -> None:
    r.version = b"HTTP/1.0"
    r.method = b"POST"
    r.body = r.body or b"hello"
    r.chunked = True
    _replace(r, b"content-length", None)
    _replace(r, b"transfer-encoding", b" chunked")
    r.headers.append((b"connection", b" keep-alive"))


def _m_dup_te(r: Request, rng: random.Random) -> None:
    _m_chunked(r, rng)
    r.headers.append((b"Transfer-Encoding", rng.choice([b" chunked", b" identity", b" gzip"])))


def _m_chunked(r: Request, rng: random.Random) -> None:
    r.method = b"POST" if r.method in (b"GET", b"DELETE", b"OPTIONS") else r.method
    r.body = r.body or b"hello"
    r.chunked = True
    _replace(r, b"content-length", None)
    _replace(r, b"transfer-encoding", b" chunked")


def _m_te_value(r: Request, rng: random.Random) -> None:
    _m_chunked(r, rng)
    value = rng.choice(
        [b" gzip, chunked", b" Chunked", b" chunked ", b" xchunked", b" chunked, gzip",
         b" identity", b"chunked", b" chunked,", b" \tchunked"]
    )  # fmt: skip
    _replace(r, b"transfer-encoding", value)


def _m_cl_and_te(r: Request, rng: random.Random) -> None:
    _m_chunked(r, rng)
    r.headers.insert(rng.randrange(len(r.headers) + 1), (b"content-length", b" %d" % len(r.body)))


def _m_cl_value(r: Request, rng: random.Random) -> None:
    r.method = b"POST"
    r.chunked = False
    r.body = r.body or b"hello"
    _replace(r, b"transfer-encoding", None)
    n = len(r.body)
    value = rng.choice(
        [b" +%d" % n, b" -1", b" %d %d" % (n, n), b" %d,%d" % (n, n), b" 0x%x" % n,
         b" 000%d" % n, b" %d" % (n + 1000), b" 99999999999999999999", b"", b" %da" % n]
    )  # fmt: skip
    _replace(r, b"content-length", value)


def _m_dup_cl(r: Request, rng: random.Random) -> None:
    _m_cl_value(r, rng)
    n = len(r.body)
    _replace(r, b"content-length", b" %d" % n)
    r.headers.append((b"Content-Length", b" %d" % (n if rng.random() < 0.5 else n + 1)))


def _m_chunk_framing(r: Request, rng: random.Random) -> None:
    _m_chunked(r, rng)
    body = r.body
    r.chunks = rng.choice(
        [
            [b"%x;ext=1\r\n%b\r\n0\r\n\r\n" % (len(body), body)],
            [b"%X\r\n%b\r\n0\r\n\r\n" % (len(body), body)],
            [b"%x \r\n%b\r\n0\r\n\r\n" % (len(body), body)],
            [b" %x\r\n%b\r\n0\r\n\r\n" % (len(body), body)],
            [b"%x\n%b\n0\n\n" % (len(body), body)],
            [b"%x\r\n%bXX\r\n0\r\n\r\n" % (len(body), body)],
            [b"-%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)],
            [b"0x%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)],
            [b"%x\r\n%b\r\n0\r\nx-trailer: 1\r\n\r\n" % (len(body), body)],
            [b"%x\r\n%b\r\n00000\r\n\r\n" % (len(body), body)],
            [b"fffffffffffffffff\r\n%b\r\n0\r\n\r\n" % body],
            [b"%x\r\n%b0\r\n\r\n" % (len(body), body)],
        ]
    )


def _m_version(r: Request, rng: random.Random) -> None:
    r.version = rng.choice(
        [b"HTTP/2.0", b"HTTP/1.2", b"HTTP/3.0", b"http/1.1", b"HTTP/1.1 ", b"HTTP/01.1",
         b"HTTP/1", b"HTTP/1.10", b"HTTP/0.9", b"HTTPS/1.1", b""]
    )  # fmt: skip


def _m_method(r: Request, rng: random.Random) -> None:
    r.method = rng.choice(
        [b"CONNECT", b"TRACE", b"get", b"FOO", b"M-SEARCH", b"PROPFIND", b"G\x00T", b"GET\t"]
    )
    if r.method == b"CONNECT" and rng.random() < 0.5:
        r.target = b"model.local:443"


def _m_target(r: Request, rng: random.Random) -> None:
    r.target = rng.choice(
        [b"*", b"http://model.local/a", b"http://u:p@model.local/a", b"http://u@model.local/a",
         b"https://model.local/a?x=1", b"ftp://model.local/a", b"model.local:80",
         b"/a%00b", b"/a%0d%0ab", b"/a%0ab", b"/a%0db", b"/%2e%2e/etc", b"/../a", b"/a/../../b",
         b"/a/./b", b"//a", b"/a#frag", b"/a\x7fb", b"/a\x80b", b"a", b"/a%zzb", b"/a%2",
         b"/a%2fb", b"/a?%00", b"/a?x=%0d%0a", b"http://model.local", b"http:///a",
         b"/a b", b"/a\tb", b"http://[::1]/a", b"http://a..b/a", b"http://a b/"]
    )  # fmt: skip


def _m_header_syntax(r: Request, rng: random.Random) -> None:
    at = rng.randrange(len(r.headers) + 1)
    line = rng.choice(
        [(b"x-a ", b" 1"), (b"x\ta", b" 1"), (b" x-a", b" 1"), (b"", b" 1"), (b"x-a", b""),
         (b"x_a", b" 1"), (b"x@a", b" 1"), (b"x-a", b" a\x00b"), (b"x-a", b" a\x01b"),
         (b"x-a", b" a\rb"), (b"x-a", b" a\x7fb"), (b"x-a", b" \xffb"), (b"x-a", b"\t1\t")]
    )  # fmt: skip
    r.headers.insert(at, line)


def _m_no_colon(r: Request, rng: random.Random) -> None:
    r.headers.insert(rng.randrange(len(r.headers) + 1), (b"x-no-colon", None))


def _m_obs_fold(r: Request, rng: random.Random) -> None:
    r.headers.append((b"x-folded", b" a\r\n b" if rng.random() < 0.5 else b" a\r\n\tb"))


def _m_line_endings(r: Request, rng: random.Random) -> None:
    r.eol = rng.choice([b"\n", b"\r", b"\r\r\n", b"\n\r"])


def _m_leading_blank(r: Request, rng: random.Random) -> None:
    line = r.request_line or b"%b %b %b" % (r.method, r.target, r.version)
    r.request_line = rng.choice([b"\r\n", b"\n", b" ", b"\t"]) + line


def _m_request_line_ws(r: Request, rng: random.Random) -> None:
    sep = rng.choice([b"  ", b"\t", b" \t", b"\x0b", b"\x0c"])
    r.request_line = r.method + sep + r.target + sep + r.version


def _m_long_header(r: Request, rng: random.Random) -> None:
    r.headers.append((b"x-long", b" " + b"a" * rng.choice([8100, 8300, 9000, 20000])))


def _m_long_target(r: Request, rng: random.Random) -> None:
    r.target = b"/" + b"a" * rng.choice([8100, 8300, 9000, 20000])


def _m_many_headers(r: Request, rng: random.Random) -> None:
    r.headers += [(b"x-h%d" % i, b" %d" % i) for i in range(rng.choice([100, 300, 1000]))]


def _m_connection_names(r: Request, rng: random.Random) -> None:
    r.headers.append(
        (b"connection", rng.choice([b" host", b" content-length", b" te", b" x-a, host"]))
    )


def _m_upgrade(r: Request, rng: random.Random) -> None:
    r.headers.append((b"connection", b" upgrade"))
    r.headers.append((b"upgrade", rng.choice([b" websocket", b" h2c", b" foo"])))


def _m_expect(r: Request, rng: random.Random) -> None:
    r.headers.append((b"expect", rng.choice([b" 100-continue", b" 100-Continue", b" x"])))


MUTATIONS: dict[str, Callable[[Request, random.Random], None]] = {
    "dup-host": _m_dup_host,
    "no-host": _m_no_host,
    "bad-host": _m_bad_host,
    "http10": _m_http10,
    "te-http10": _m_te_http10,
    "dup-te": _m_dup_te,
    "te-value": _m_te_value,
    "cl-and-te": _m_cl_and_te,
    "cl-value": _m_cl_value,
    "dup-cl": _m_dup_cl,
    "chunk-framing": _m_chunk_framing,
    "version": _m_version,
    "method": _m_method,
    "target": _m_target,
    "header-syntax": _m_header_syntax,
    "no-colon": _m_no_colon,
    "obs-fold": _m_obs_fold,
    "line-endings": _m_line_endings,
    "leading-blank": _m_leading_blank,
    "request-line-ws": _m_request_line_ws,
    "long-header": _m_long_header,
    "long-target": _m_long_target,
    "many-headers": _m_many_headers,
    "connection-names": _m_connection_names,
    "upgrade": _m_upgrade,
    "expect": _m_expect,
}
# Mutations that change the connection rather than one request.
SUFFIXES = ("smuggle", "pipeline")


def generate(seed: int, count: int) -> Iterator[Case]:
    """``count`` cases from ``seed``: the same seed gives the same bytes."""
    rng = random.Random(seed)
    names = sorted(MUTATIONS)
    for number in range(count):
        request = _valid(rng)
        applied: list[str] = []
        suffix = b""
        expected = 1
        if rng.random() < 0.15:
            second = Request(b"GET", b"/second", b"HTTP/1.1", [(b"host", b" model.local")])
            if rng.random() < 0.5:
                # A request inside the body: a proxy that frames the body as
                # the headers say never sees it as a request of its own.
                applied.append("smuggle")
                request.method = b"POST"
                request.body = b'{"f0": 1}' + second.encode(number)
                framing = b"transfer-encoding" if request.chunked else b"content-length"
                value = b" chunked" if request.chunked else b" %d" % len(request.body)
                _replace(request, framing, value)
            else:
                applied.append("pipeline")  # one more answer owed, when the first is valid
                suffix = second.encode(number)
                expected = 2
        for name in rng.sample(names, k=rng.choice([0, 1, 1, 1, 2])):
            MUTATIONS[name](request, rng)
            applied.append(name)
        yield Case(number, applied, request.encode(number) + suffix, expected)


# -- the recording model -----------------------------------------------------


_OPEN: set[asyncio.Transport] = set()  # the model's connections, closed at the end of a run


class _ModelConnection(asyncio.Protocol):
    """Reads what a proxy forwards (a head, then a Content-Length body: both
    proxies send every body with a length) and answers 200. Its own reading is
    plain on purpose: a request that reached it is counted whatever its bytes."""

    def __init__(self, seen: Counter[tuple[str, int | None]], name: str) -> None:
        self._seen, self._name = seen, name
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        _OPEN.add(transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        _OPEN.discard(self._transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = self._buffer[:end].split(b"\r\n")
            fields = [line.partition(b":") for line in head[1:]]
            headers = {name.strip().lower(): value.strip() for name, _, value in fields}
            length = int(headers.get(b"content-length", b"0"))
            if len(self._buffer) < end + 4 + length:
                return
            self._buffer = self._buffer[end + 4 + length :]
            case = headers.get(CASE_HEADER, b"")
            self._seen[self._name, int(case) if case.isdigit() else None] += 1
            body = b"" if head[0].startswith(b"HEAD ") else b"ok"
            self._transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n" + body)
            if headers.get(b"connection", b"").lower() == b"close":
                self._transport.close()
                return


async def start_model(
    ports: dict[str, int],
) -> tuple[Counter[tuple[str, int | None]], list[asyncio.Server]]:
    """One recording model listening on a port per proxy; counts requests per (proxy, case)."""
    seen: Counter[tuple[str, int | None]] = Counter()
    loop = asyncio.get_running_loop()
    servers = []
    for name, port in ports.items():
        servers.append(
            await loop.create_server(
                lambda name=name: _ModelConnection(seen, name), "127.0.0.1", port
            )
        )
    return seen, servers


# -- the client ----------------------------------------------------------------


class _Responses:
    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_message_complete(self) -> None:
        self.statuses.append(self.parser.get_status_code())


async def send(port: int, data: bytes, *, expected: int, timeout: float) -> list[int]:
    """Send one connection's bytes; the statuses of the answers read, then
    ``TIMED_OUT`` when the proxy neither answered all nor closed in time."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    responses = _Responses()
    try:
        writer.write(data)
        deadline = time.monotonic() + timeout
        while len(responses.statuses) < expected:
            left = deadline - time.monotonic()
            if left <= 0:
                responses.statuses.append(TIMED_OUT)
                break
            try:
                chunk = await asyncio.wait_for(reader.read(65536), left)
            except TimeoutError:
                responses.statuses.append(TIMED_OUT)
                break
            except ConnectionError:
                break
            if not chunk:
                break
            try:
                responses.parser.feed_data(chunk)
            except httptools.HttpParserError:
                break
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return responses.statuses


# -- the run -------------------------------------------------------------------


@dataclass
class Outcome:
    case: Case
    forwarded: dict[str, int]
    statuses: dict[str, list[int]]

    @property
    def kind(self) -> str | None:
        sidecar, nginx = self.forwarded["sidecar"], self.forwarded["nginx"]
        if sidecar > nginx:
            return SIDECAR_FORWARDS
        if sidecar < nginx:
            return SIDECAR_REJECTS
        return None

    def describe(self) -> str:
        return (
            f"case {self.case.number} {'+'.join(self.case.mutations) or 'valid'}: "
            f"forwarded sidecar {self.forwarded['sidecar']} nginx {self.forwarded['nginx']}, "
            f"answers sidecar {self.statuses['sidecar']} nginx {self.statuses['nginx']}: "
            f"{self.case.data[:300]!r}"
        )


def accepted(case: Case) -> Accepted | None:
    return next((a for a in ACCEPTED if a.matches(case.data)), None)


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    unattributed: dict[str, int] = field(default_factory=dict)

    def disagreements(self, kind: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == kind]

    def failures(self) -> list[Outcome]:
        """Forwarded by the sidecar, rejected by nginx, and not an accepted exception."""
        return [
            o
            for o in self.disagreements(SIDECAR_FORWARDS)
            if accepted(o.case) is None and TIMED_OUT not in o.statuses["nginx"]
        ]

    def undecided(self) -> list[Outcome]:
        """Forwarded by the sidecar while nginx still waited: nginx refused nothing (yet)."""
        return [o for o in self.disagreements(SIDECAR_FORWARDS) if TIMED_OUT in o.statuses["nginx"]]

    def by_mutation(self, kind: str) -> Counter[str]:
        return Counter("+".join(o.case.mutations) or "valid" for o in self.disagreements(kind))


async def run(
    cases: list[Case],
    ports: dict[str, int],
    model_ports: dict[str, int],
    *,
    concurrency: int = 32,
    timeout: float = 1.5,
) -> Report:
    """Send every case to both proxies (``ports``: sidecar, nginx) and compare."""
    seen, servers = await start_model(model_ports)
    statuses: dict[tuple[str, int], list[int]] = {}
    slots = asyncio.Semaphore(concurrency)

    async def one(name: str, case: Case) -> None:
        async with slots:
            statuses[name, case.number] = await send(
                ports[name], case.data, expected=case.expected, timeout=timeout
            )

    try:
        await asyncio.gather(*(one(name, case) for case in cases for name in ports))
        await asyncio.sleep(0.5)  # a request forwarded as its connection closed
    finally:
        for server in servers:
            server.close()
        for transport in list(_OPEN):
            transport.close()
        await asyncio.sleep(0.1)  # let the closes run before the loop ends
    report = Report()
    for case in cases:
        report.outcomes.append(
            Outcome(
                case,
                {name: seen[name, case.number] for name in ports},
                {name: statuses[name, case.number] for name in ports},
            )
        )
    report.unattributed = {name: seen[name, None] for name in ports}
    return report


# -- the processes ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited early:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open within 60 s")


@contextlib.contextmanager
def _process(
    command: list[str], port: int, log: Path, *, env: dict[str, str] | None = None
) -> Iterator[None]:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    try:
        _wait_port(port, process, log)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def nginx_config(workdir: Path, *, port: int, model_port: int) -> Path:
    """nginx's defaults, proxying to the model as a plain reverse proxy would."""
    path = workdir / "nginx.conf"
    path.write_text(f"""
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/nginx-body;
    proxy_temp_path {workdir}/nginx-proxy;
    fastcgi_temp_path {workdir}/nginx-fastcgi;
    uwsgi_temp_path {workdir}/nginx-uwsgi;
    scgi_temp_path {workdir}/nginx-scgi;
    upstream model {{ server 127.0.0.1:{model_port}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    return path


@contextlib.contextmanager
def proxies(
    workdir: Path | None = None, *, sidecar_src: Path | None = None
) -> Iterator[tuple[dict[str, int], dict[str, int]]]:
    """The sidecar (from ``sidecar_src``, a source tree's ``sidecar/`` folder,
    when given) and nginx, each in front of its own port of the recording model
    (which ``run`` starts): yields (proxy ports, model ports)."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="httpfuzz-")))
        model_ports = {"sidecar": free_port(), "nginx": free_port()}
        ports = {"sidecar": free_port(), "nginx": free_port()}
        config = workdir / "sidecar.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "model": {"name": "fuzz"},
                    "upstream": f"http://127.0.0.1:{model_ports['sidecar']}",
                    "listen": f"127.0.0.1:{ports['sidecar']}",
                    "admin": f"127.0.0.1:{free_port()}",
                    "capture": {"enabled": False},
                    "prediction_log": {"enabled": False},
                }
            )
        )
        sidecar = [sys.executable, "-m", "driftline_sidecar.main", "--config", str(config)]
        stack.enter_context(
            _process(
                [*sidecar, "--log-level", "warning"],
                ports["sidecar"],
                workdir / "sidecar.log",
                env={"PYTHONPATH": str(sidecar_src)} if sidecar_src else None,
            )
        )
        conf = nginx_config(workdir, port=ports["nginx"], model_port=model_ports["nginx"])
        nginx = [NGINX, "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"]
        nginx += ["-e", str(workdir / "nginx-error.log")]
        stack.enter_context(_process(nginx, ports["nginx"], workdir / "nginx.log"))
        yield ports, model_ports


def fuzz(
    seed: int, count: int, *, concurrency: int = 32, sidecar_src: Path | None = None
) -> Report:
    """Start both proxies, run ``count`` cases from ``seed``, stop them."""
    cases = list(generate(seed, count))
    with proxies(sidecar_src=sidecar_src) as (ports, model_ports):
        return asyncio.run(run(cases, ports, model_ports, concurrency=concurrency))
