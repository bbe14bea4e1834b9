"""driftline_sidecar.framing: nginx's rules for hosts and request targets."""

from __future__ import annotations

import pytest

from driftline_sidecar.framing import Rejection, origin_form, valid_host


@pytest.mark.parametrize(
    "host", [b"a", b"model.ml.svc", b"a.", b"a:8080", b"[::1]", b"[::1]:80", b"10.0.0.1"]
)
def test_hosts_nginx_accepts(host: bytes) -> None:
    assert valid_host(host)


@pytest.mark.parametrize(
    "host", [b"", b"a b", b"a/b", b"a..b", b".", b":80", b"a\x01", b"a\x7f", b"a\tb"]
)
def test_hosts_nginx_refuses(host: bytes) -> None:
    assert not valid_host(host)


@pytest.mark.parametrize(
    ("target", "forwarded", "authority"),
    [
        (b"/v2/models/m/infer", b"/v2/models/m/infer", None),
        (b"/a/../b?x=%00", b"/a/../b?x=%00", None),  # the query is not decoded
        (b"/a/..", b"/a/..", None),
        (b"/a%2Fb%C3%A9", b"/a%2Fb%C3%A9", None),
        (b"http://model.example/x?y=1", b"/x?y=1", b"model.example"),
        (b"http://model.example", b"/", b"model.example"),
        (b"http://model.example?y=1", b"/?y=1", b"model.example"),
    ],
)
def test_targets_forwarded(target: bytes, forwarded: bytes, authority: bytes | None) -> None:
    assert origin_form(target) == (forwarded, authority)


@pytest.mark.parametrize(
    "target",
    [
        b"*",
        b"model.example:443",
        b"http://user:pass@model.example/x",
        b"http://a b/x",
        b"/a%00b",
        b"/a%0d%0aInjected:%201",
        b"/a%0A",
        b"/a%zz",
        b"/a%2",
        b"/..",
        b"/a/../../b",
        b"/%2e%2e/etc",
        b"/a%2f..%2f..%2fb",
    ],
)
def test_targets_refused(target: bytes) -> None:
    with pytest.raises(Rejection) as refused:
        origin_form(target)
    assert refused.value.status == 400
