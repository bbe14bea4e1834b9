"""One reader turns the sidecar's metric samples into a snapshot, whether they
come from its registry or from a Prometheus scrape of its text exposition."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from driftline_sidecar.contract.reader import snapshot_from_samples
from driftline_sidecar.contract.snapshot import (
    LATENCY_BUCKETS,
    BinCounts,
    CaptureCounts,
    ProcessInfo,
    Snapshot,
)
from driftline_sidecar.metrics import SidecarMetrics

PROCESS = ProcessInfo(id="p", pid=1, start_time=0.0)
FEATURES = {"amount": 4, "country": 3}


def sidecar_metrics() -> SidecarMetrics:
    return SidecarMetrics(
        model="fraud",
        version="v2",
        role="canary",
        features=FEATURES,
        prediction_bins=10,
        profile_sha256="abc123",
    )


def record_traffic(metrics: SidecarMetrics) -> None:
    for i in range(5):
        metrics.observe_request(
            code=200,
            seconds=0.001 * i,
            upstream_seconds=0.0005 * i,
            request_bytes=10,
            response_bytes=20,
        )
    metrics.observe_request(
        code=503, seconds=1.0, upstream_seconds=None, request_bytes=0, response_bytes=3
    )
    metrics.records.inc(7)
    metrics.bodies_parsed.inc(5)
    metrics.skipped["too_large"].inc()
    metrics.responses_unread["encoding"].inc()
    metrics.responses_unread["corrupt"].inc(2)
    metrics.dropped["log"].inc(2)
    metrics.schema["wrong_type"].inc(3)
    metrics.feature_bins["amount"][2].inc(4)
    metrics.feature_bins["amount"][0].inc()
    metrics.feature_missing["country"].inc(2)
    metrics.feature_out_of_range["amount"].inc()
    metrics.prediction_bins[3].inc(6)
    metrics.prediction_missing.inc()
    metrics.count_class("fraud", 3)
    metrics.count_class("ok")
    routing = metrics.routing
    routing.shadow["mirrored"].inc(4)
    routing.shadow["compared"].inc(3)
    routing.shadow["agreed"].inc(2)
    routing.shadow_errors["shadow"].inc()
    routing.shadow_duration["stable"].observe(0.004)
    routing.shadow_duration["shadow"].observe(20.0)  # beyond the last bound: +Inf
    routing.abs_difference.observe(0.5)


def collected(metrics: SidecarMetrics) -> Iterator[Sample]:
    return (s for family in metrics.registry.collect() for s in family.samples)


def parsed(metrics: SidecarMetrics) -> Iterator[Sample]:
    text = generate_latest(metrics.registry).decode()
    return (s for family in text_string_to_metric_families(text) for s in family.samples)


def read(samples: Iterator[Sample]) -> Snapshot:
    return snapshot_from_samples(samples, process=PROCESS, taken_at=1.0)


def test_the_registry_and_its_text_exposition_give_one_snapshot() -> None:
    metrics = sidecar_metrics()
    record_traffic(metrics)
    snapshot = read(collected(metrics))
    assert read(parsed(metrics)) == snapshot

    assert (snapshot.model, snapshot.version, snapshot.role) == ("fraud", "v2", "canary")
    assert snapshot.profile_sha256 == "abc123"
    assert snapshot.requests == {"200": 5, "503": 1}
    assert snapshot.latency.count == 6 and snapshot.upstream_latency.count == 5
    assert snapshot.latency.counts[LATENCY_BUCKETS.index(1.0)] == 1
    assert (snapshot.request_bytes, snapshot.response_bytes) == (50, 103)
    assert snapshot.capture == CaptureCounts(
        records=7,
        bodies_parsed=5,
        too_large=1,
        responses_unread=3,
        log_dropped=2,
        wrong_type=3,
    )
    assert snapshot.features == {
        "amount": BinCounts(counts=[1, 0, 4, 0], out_of_range=1),
        "country": BinCounts(counts=[0, 0, 0], missing=2),
    }
    assert snapshot.prediction == BinCounts(counts=[0, 0, 0, 6, 0, 0, 0, 0, 0, 0], missing=1)
    assert snapshot.classes == {"fraud": 3, "ok": 1}
    shadow = snapshot.shadow
    assert (shadow.mirrored, shadow.compared, shadow.agreed, shadow.shadow_errors) == (4, 3, 2, 1)
    assert shadow.abs_difference_sum == 0.5
    assert shadow.stable_latency.counts[LATENCY_BUCKETS.index(0.005)] == 1
    assert shadow.shadow_latency.counts[-1] == 1


def test_every_bin_is_read_at_zero_before_any_traffic() -> None:
    """No layout is needed: every bin series exists from the start, at zero."""
    metrics = sidecar_metrics()
    for samples in (collected(metrics), parsed(metrics)):
        snapshot = read(samples)
        assert snapshot.features == {
            name: BinCounts(counts=[0] * n) for name, n in FEATURES.items()
        }
        assert snapshot.prediction == BinCounts(counts=[0] * 10)
        assert snapshot.requests == {} and snapshot.classes == {}
        assert snapshot.capture == CaptureCounts()
        assert snapshot.latency.counts == [0] * (len(LATENCY_BUCKETS) + 1)
        assert snapshot.profile_sha256 == "abc123"


def test_a_scrape_is_read_whatever_its_extra_labels_and_bound_spelling() -> None:
    """Prometheus adds ``instance`` and ``job`` and may write a bound "1" for "1.0"."""
    metrics = sidecar_metrics()
    record_traffic(metrics)

    def scraped(sample: Sample) -> Sample:
        labels = {**sample.labels, "__name__": sample.name, "instance": "10.0.0.7:9090"}
        if labels.get("le", "").endswith(".0"):
            labels["le"] = labels["le"].removesuffix(".0")
        return Sample(sample.name, {**labels, "job": "driftline"}, sample.value)

    assert any(s.labels.get("le") == "1.0" for s in parsed(metrics))
    assert read(scraped(s) for s in parsed(metrics)) == read(collected(metrics))


def test_samples_of_other_metrics_are_ignored() -> None:
    snapshot = read(
        iter(
            [
                Sample("process_cpu_seconds_total", {}, 3.0),
                Sample("driftline_requests_total", {"model": "m", "code": "200"}, 2.0),
            ]
        )
    )
    assert snapshot.requests == {"200": 2}
    assert (snapshot.model, snapshot.version, snapshot.role) == ("m", "", "stable")
    assert snapshot.features == {} and snapshot.prediction is None
