"""Where the time goes, through a real sidecar in front of the real demo model
server (``--server-timing``): the model's and the sidecar's share of each
request, the model's Server-Timing stages as a histogram and span events,
malformed headers ignored and counted, the stage names capped; and spans for
the admin API (FastAPI instrumentation)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from driftline_sidecar.contract import metric_names as names
from tests.component.conftest import running_model, wait_until

if TYPE_CHECKING:
    from tests.component.conftest import ModelServer, OtlpReceiver, Sidecar

ROW = {"f0": 0.1, "f1": -0.3, "f2": 1.2, "f3": 0.4}
N = 20


@pytest.fixture(scope="module")
def timed_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    with running_model(tmp_path_factory.mktemp("timed"), "--server-timing") as server:
        yield server


def samples(sidecar: Sidecar) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(sidecar.metrics()):
        for s in family.samples:
            labels = tuple(
                sorted((k, v) for k, v in s.labels.items() if k not in names.BASE_LABELS)
            )
            found[(s.name, labels)] = s.value
    return found


def stage_counts(sidecar: Sidecar) -> dict[str, float]:
    count = names.MODEL_STAGE_DURATION + "_count"
    return {
        dict(labels)[names.STAGE]: v for (n, labels), v in samples(sidecar).items() if n == count
    }


def test_the_models_stages_and_the_sidecars_share(
    timed_model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    sidecar = sidecar_factory(timed_model.url)
    direct = httpx.post(timed_model.url + "/predict", json=ROW, timeout=10)
    assert direct.headers["server-timing"].startswith("preprocess;dur=")
    for _ in range(N):
        response = httpx.post(sidecar.proxy + "/predict", json=ROW, timeout=10)
        assert response.status_code == 200
        # What the client receives is the model's header, untouched.
        stages = [part.split(";")[0] for part in response.headers["server-timing"].split(", ")]
        assert stages == ["preprocess", "predict"]

    assert stage_counts(sidecar) == {"preprocess": N, "predict": N}
    found = samples(sidecar)
    assert found[(names.MODEL_STAGE_DURATION + "_sum", (("stage", "predict"),))] > 0
    requests = found[(names.REQUEST_DURATION + "_count", ())]
    assert requests == N
    assert found[(names.MODEL_DURATION + "_count", ())] == N
    assert found[(names.SIDECAR_OVERHEAD + "_count", ())] == N
    # Each request's time is split in two: the model's and the sidecar's.
    total = found[(names.REQUEST_DURATION + "_sum", ())]
    model = found[(names.MODEL_DURATION + "_sum", ())]
    overhead = found[(names.SIDECAR_OVERHEAD + "_sum", ())]
    assert model > 0 and overhead > 0
    assert model + overhead == pytest.approx(total, rel=1e-6)
    # The model's stages happen inside the model's time.
    stage_sum = sum(v for (n, _), v in found.items() if n == names.MODEL_STAGE_DURATION + "_sum")
    assert stage_sum < model
    assert found[(names.SERVER_TIMING_MALFORMED, ())] == 0


@pytest.mark.parametrize(
    "header",
    ["pre process;dur=1", "predict;dur=fast", "predict;dur=-3", 'a;desc="open', "a;dur=1 b"],
)
def test_a_malformed_header_is_ignored_and_counted(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar], header: str
) -> None:
    sidecar = sidecar_factory(model.url)
    response = httpx.post(
        sidecar.proxy + "/echo/x",
        content=b"{}",
        headers={"x-echo-server-timing": header},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["server-timing"] == header  # passed on as it came
    assert samples(sidecar)[(names.SERVER_TIMING_MALFORMED, ())] == 1
    assert stage_counts(sidecar) == {}


def test_stage_names_are_capped(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    sidecar = sidecar_factory(model.url)
    many = names.MAX_STAGES + 4
    header = ", ".join(f"s{i};dur=1" for i in range(many))
    response = httpx.post(
        sidecar.proxy + "/echo/x",
        content=b"{}",
        headers={"x-echo-server-timing": header},
        timeout=10,
    )
    assert response.status_code == 200
    counts = stage_counts(sidecar)
    assert len(counts) == names.MAX_STAGES + 1
    assert counts[names.OTHER_STAGE] == 4
    assert counts["s0"] == 1


def _attributes(item: Any) -> dict[str, Any]:
    return {a.key: a.value for a in item.attributes}


def test_spans_carry_the_split_and_the_stages_and_the_admin_api_is_traced(
    timed_model: ModelServer, sidecar_factory: Callable[..., Sidecar], otlp: OtlpReceiver
) -> None:
    sidecar = sidecar_factory(
        timed_model.url,
        env={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp.url + "/v1/traces",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    assert httpx.post(sidecar.proxy + "/predict", json=ROW, timeout=10).status_code == 200
    assert httpx.get(sidecar.admin + "/v1/snapshot", timeout=10).status_code == 200
    assert httpx.get(sidecar.admin + "/healthz", timeout=10).status_code == 200

    def proxied() -> Any:
        return next(
            (
                s
                for s in otlp.spans
                if s.kind == s.SPAN_KIND_SERVER
                and _attributes(s).get("url.path", None) is not None
                and _attributes(s)["url.path"].string_value == "/predict"
            ),
            None,
        )

    wait_until(lambda: proxied() is not None, what="the proxied request's span")
    span = proxied()
    attributes = _attributes(span)
    assert attributes["driftline.model.duration_ms"].double_value > 0
    assert attributes["driftline.sidecar.overhead_ms"].double_value > 0
    events = [(e.name, _attributes(e)) for e in span.events]
    assert [(n, a["driftline.stage.name"].string_value) for n, a in events] == [
        ("model.stage", "preprocess"),
        ("model.stage", "predict"),
    ]
    assert all(a["driftline.stage.duration_ms"].double_value >= 0 for _, a in events)

    def admin_routes() -> set[str]:
        return {
            _attributes(s)["http.route"].string_value
            for s in otlp.spans
            if s.kind == s.SPAN_KIND_SERVER and "http.route" in _attributes(s)
        }

    wait_until(lambda: "/v1/snapshot" in admin_routes(), what="the admin API's span")
    assert "/healthz" not in admin_routes()  # probes make no spans


def test_without_server_timing_nothing_is_parsed(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar], tmp_path: Path
) -> None:
    sidecar = sidecar_factory(model.url)
    response = httpx.post(sidecar.proxy + "/predict", json=ROW, timeout=10)
    assert "server-timing" not in response.headers
    assert stage_counts(sidecar) == {}
    assert samples(sidecar)[(names.MODEL_DURATION + "_count", ())] == 1
    assert json.loads(response.content)["prediction"] in ("fraud", "ok")
