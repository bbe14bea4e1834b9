"""Spans reach an OTLP/HTTP receiver: server parent, client child, context propagated."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from tests.component.conftest import wait_until

if TYPE_CHECKING:
    from tests.component.conftest import ModelServer, OtlpReceiver, Sidecar

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_PARENT = "b7ad6b7169203331"


def test_server_and_client_spans_with_propagated_context(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar], otlp: OtlpReceiver
) -> None:
    sidecar = sidecar_factory(
        model.url,
        env={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp.url + "/v1/traces",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"
    response = httpx.post(
        sidecar.proxy + "/echo/predict?x=1",
        content=b"{}",
        headers={"traceparent": traceparent},
        timeout=10,
    )
    assert response.status_code == 200

    received = dict(json.loads(response.headers["x-echo-request"])["headers"])
    wait_until(lambda: len(otlp.spans) >= 2, what="two exported spans")

    server = next(s for s in otlp.spans if s.kind == s.SPAN_KIND_SERVER)
    client = next(s for s in otlp.spans if s.kind == s.SPAN_KIND_CLIENT)
    assert server.trace_id.hex() == CLIENT_TRACE
    assert server.parent_span_id.hex() == CLIENT_PARENT
    assert client.trace_id.hex() == CLIENT_TRACE
    assert client.parent_span_id == server.span_id
    # The model saw the client span's context, not the caller's.
    assert received["traceparent"] == f"00-{CLIENT_TRACE}-{client.span_id.hex()}-01"

    def attributes(span: Any) -> dict[str, Any]:
        return {a.key: a.value for a in span.attributes}

    server_attributes = attributes(server)
    assert server_attributes["http.request.method"].string_value == "POST"
    assert server_attributes["url.path"].string_value == "/echo/predict"
    assert server_attributes["url.query"].string_value == "x=1"
    assert server_attributes["http.response.status_code"].int_value == 200
    assert server_attributes["driftline.model.name"].string_value == "fraud"
    assert server_attributes["driftline.model.version"].string_value == "v1"
    assert server_attributes["driftline.model.role"].string_value == "stable"
    client_attributes = attributes(client)
    assert client_attributes["url.full"].string_value == model.url + "/echo/predict?x=1"
    assert client_attributes["http.response.status_code"].int_value == 200


def test_without_otel_settings_the_traceparent_passes_unchanged(sidecar: Sidecar) -> None:
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"
    response = httpx.post(
        sidecar.proxy + "/echo/t", content=b"", headers={"traceparent": traceparent}, timeout=10
    )

    received = dict(json.loads(response.headers["x-echo-request"])["headers"])
    assert received["traceparent"] == traceparent
