"""OpenTelemetry for the proxy: a SERVER span per request, a CLIENT child span
for the upstream call, W3C trace context taken from the client and passed on
to the model.

Configured only through the standard ``OTEL_*`` variables, read by the SDK:
``OTEL_TRACES_EXPORTER=otlp`` (or just ``OTEL_EXPORTER_OTLP_ENDPOINT``) turns
export on, to OTLP/HTTP through a batch processor. With no exporter there is
nothing to export to, so no spans are made at all and the client's
``traceparent`` reaches the model unchanged (a pure pass-through costs nothing).
The config only sets the sampling ratio: ParentBased(TraceIdRatioBased(ratio)).

Span attributes: HTTP semantic conventions plus ``driftline.model.name``,
``driftline.model.version`` and ``driftline.model.role``; on the SERVER span,
``driftline.model.duration_ms`` and ``driftline.sidecar.overhead_ms`` (where
the request's time went) and a ``model.stage`` event per stage of the
model's ``Server-Timing`` header (``driftline.stage.name``,
``driftline.stage.duration_ms``). The prediction is
not on the span: it is parsed off the hot path, after the span has ended (the
request id links a span to its prediction-log record).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, StatusCode, set_span_in_context
from opentelemetry.util.types import AttributeValue
from starlette.applications import Starlette
from starlette.routing import Route

log = logging.getLogger(__name__)

TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})


def export_configured(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the ``OTEL_*`` variables name somewhere to send spans."""
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


class Tracing:
    """Spans for one sidecar; build with ``Tracing.from_env`` (None when off)."""

    def __init__(
        self,
        *,
        provider: TracerProvider,
        model: str,
        version: str,
        role: str,
        upstream_host: str,
        upstream_port: int,
    ) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("driftline_sidecar")
        self._model_attributes = {
            "driftline.model.name": model,
            "driftline.model.version": version,
            "driftline.model.role": role,
        }
        self._upstream: dict[str, AttributeValue] = {
            "server.address": upstream_host,
            "server.port": upstream_port,
        }

    @classmethod
    def from_env(
        cls,
        *,
        sample_ratio: float,
        model: str,
        version: str,
        role: str,
        upstream_host: str,
        upstream_port: int,
    ) -> Tracing | None:
        if not export_configured():
            return None
        exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
        if exporter not in ("otlp", "otlp_proto_http"):
            log.warning(
                "tracing: OTEL_TRACES_EXPORTER=%s is not supported (otlp is); off", exporter
            )
            return None
        # Imported only when used: the exporter pulls in protobuf.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        resource = Resource.create({"service.name": f"driftline-sidecar/{model}"})
        provider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_ratio))
        )
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(
            provider=provider,
            model=model,
            version=version,
            role=role,
            upstream_host=upstream_host,
            upstream_port=upstream_port,
        )

    def instrument_admin(self, app: Starlette) -> None:
        """Spans for the admin API through this sidecar's provider, by the ASGI
        middleware OpenTelemetry's Starlette and FastAPI instrumentations are
        built on. The kubelet's probes and Prometheus' scrapes make none."""
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        routes = {route.path for route in app.routes if isinstance(route, Route)}

        def span_details(scope: dict[str, Any]) -> tuple[str, dict[str, str]]:
            # Every admin route is a fixed path, so a known path is its route;
            # any other path stays out of span names (it is the caller's text).
            method, path = scope["method"], scope["path"]
            return (f"{method} {path}", {"http.route": path}) if path in routes else (method, {})

        app.add_middleware(
            OpenTelemetryMiddleware,
            excluded_urls="/healthz,/readyz,/metrics",
            default_span_details=span_details,
            tracer_provider=self._provider,
        )

    def start_server(
        self, *, method: str, scope: Mapping[str, Any], carrier: Mapping[str, str]
    ) -> Span:
        parent = propagate.extract(carrier) if carrier else None
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
            **self._model_attributes,
        }
        if scope.get("query_string"):
            attributes["url.query"] = scope["query_string"].decode("latin-1")
        client = scope.get("client")
        if client:
            attributes["client.address"] = client[0]
        return self._tracer.start_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )

    def start_client(self, server: Span, *, method: str, url: str) -> tuple[Span, dict[str, str]]:
        """The upstream call's span and the headers that carry its context."""
        context: Context = set_span_in_context(server)
        span = self._tracer.start_span(
            method,
            context=context,
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": method, "url.full": url, **self._upstream},
        )
        headers: dict[str, str] = {}
        propagate.inject(headers, context=set_span_in_context(span))
        return span, headers

    @staticmethod
    def add_timings(
        span: Span,
        *,
        seconds: float,
        model_seconds: float | None,
        stages: Sequence[tuple[str, float]],
    ) -> None:
        """Where the request's time went: the model's and the sidecar's share,
        and one ``model.stage`` event per stage of the model's Server-Timing."""
        if model_seconds is not None:
            span.set_attribute("driftline.model.duration_ms", model_seconds * 1000.0)
            span.set_attribute(
                "driftline.sidecar.overhead_ms", max(seconds - model_seconds, 0.0) * 1000.0
            )
        for name, stage_seconds in stages:
            span.add_event(
                "model.stage",
                {"driftline.stage.name": name, "driftline.stage.duration_ms": stage_seconds * 1000},
            )

    @staticmethod
    def end(span: Span, *, status: int | None, error: str | None = None) -> None:
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if error is not None or (status is not None and status >= 500):
            span.set_attribute("error.type", error or str(status))
            span.set_status(StatusCode.ERROR)
        span.end()

    def shutdown(self) -> None:
        """Export what is still buffered."""
        self._provider.shutdown()
