"""The canary split's decision and the shadow's answer comparison, as pure code."""

from __future__ import annotations

import json
import math
from functools import partial

import pytest
from prometheus_client import CollectorRegistry
from scipy import stats

from driftline_sidecar.contract.config import PredictionConfig, RoutingConfig
from driftline_sidecar.contract.reader import shadow_counts_from_samples
from driftline_sidecar.protocols import Extractor
from driftline_sidecar.routing import CanarySplit
from driftline_sidecar.routing_metrics import RoutingMetrics
from driftline_sidecar.shadow import Outcome, compare_answers, parse_request

CANARY = "http://fraud-canary.ml.svc:80"


def test_weight_zero_and_hundred_are_absolute() -> None:
    split = CanarySplit(RoutingConfig(canary_url=CANARY + "/", canary_weight=0), timeout_seconds=5)
    assert all(split.pick() is None for _ in range(10_000))
    canary = split.canary
    assert canary is not None and canary.url == CANARY and canary.host == b"fraud-canary.ml.svc:80"
    split.update(RoutingConfig(canary_url=CANARY, canary_weight=100))
    assert split.canary is canary  # same URL: the pool is kept
    assert all(split.pick() is canary for _ in range(10_000))
    assert split.weight == 100.0
    split.update(RoutingConfig(canary_url="https://other.ml.svc/base/", canary_weight=100))
    other = split.canary
    assert other is not None and other is not canary and other.prefix == b"/base"


def test_weight_is_the_share_of_requests() -> None:
    split = CanarySplit(RoutingConfig(canary_url=CANARY, canary_weight=30), timeout_seconds=5)
    n = 20_000
    hits = sum(split.pick() is not None for _ in range(n))
    # Two-sided binomial test at 1e-6: a correct split essentially never fails it.
    assert stats.binomtest(hits, n, 0.3).pvalue > 1e-6, hits


def test_a_weight_without_a_url_keeps_every_request_local(caplog: pytest.LogCaptureFixture) -> None:
    split = CanarySplit(RoutingConfig(canary_weight=50), timeout_seconds=5)
    assert all(split.pick() is None for _ in range(1000))
    assert split.weight == 0.0
    assert "canary_url is not set" in caplog.text


def _extractor(**prediction: str) -> Extractor:
    return Extractor(protocol="auto", features=(), prediction=PredictionConfig(**prediction))


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def test_classification_agrees_only_when_every_row_does() -> None:
    extractor = _extractor()
    request = _json([{"f0": 1}, {"f0": 2}])
    same = _json([{"prediction": "ok"}, {"prediction": "fraud"}])
    one_differs = _json([{"prediction": "ok"}, {"prediction": "ok"}])
    compare = partial(compare_answers, extractor=extractor, task="classification")
    assert compare(request, same, same) == Outcome(agreed=True)
    assert compare(request, same, one_differs) == Outcome(agreed=False)


def test_kserve_probabilities_compare_by_argmax() -> None:
    extractor = _extractor()
    request = _json({"instances": [[1.0, 2.0]]})
    stable = _json({"predictions": [[0.2, 0.8]]})
    shadow = _json({"predictions": [[0.4, 0.6]]})  # other scores, same class
    flipped = _json({"predictions": [[0.6, 0.4]]})
    outcome = compare_answers(request, stable, shadow, extractor=extractor, task="classification")
    assert outcome == Outcome(agreed=True)
    outcome = compare_answers(request, stable, flipped, extractor=extractor, task="classification")
    assert outcome == Outcome(agreed=False)


@pytest.mark.parametrize(
    "shadow",
    [
        b"not json",
        _json({"something": "else"}),  # no prediction at the configured path
        _json([{"prediction": "ok"}]),  # one row of two
    ],
)
def test_an_unreadable_answer_is_not_compared(shadow: bytes) -> None:
    request = _json([{"f0": 1}, {"f0": 2}])
    stable = _json([{"prediction": "ok"}, {"prediction": "ok"}])
    extractor = _extractor()
    assert (
        compare_answers(request, stable, shadow, extractor=extractor, task="classification") is None
    )


def test_regression_differences_are_means_over_rows() -> None:
    extractor = _extractor(path="value", task="regression")
    request = _json([{"f0": 1}, {"f0": 2}, {"f0": 3}])
    stable = _json([{"value": 2.0}, {"value": -4.0}, {"value": 0.0}])
    shadow = _json([{"value": 2.5}, {"value": -3.0}, {"value": 0.0}])
    outcome = compare_answers(request, stable, shadow, extractor=extractor, task="regression")
    assert outcome is not None
    assert outcome.abs_difference == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    # Row 3: both zero, no relative difference at all.
    assert outcome.rel_difference == pytest.approx((0.25 + 0.25 + 0.0) / 3)


def test_regression_relative_difference_skips_a_zero_stable_value() -> None:
    extractor = _extractor(path="value", task="regression")
    request = _json([{"f0": 1}, {"f0": 2}])
    stable = _json([{"value": 0.0}, {"value": 10.0}])
    shadow = _json([{"value": 1.0}, {"value": 11.0}])
    outcome = compare_answers(request, stable, shadow, extractor=extractor, task="regression")
    assert outcome is not None
    assert outcome.abs_difference == pytest.approx(1.0)
    assert outcome.rel_difference == pytest.approx(0.1)  # row 1 has none
    only_zero = compare_answers(
        _json([{"f0": 1}]),
        _json([{"value": 0.0}]),
        _json([{"value": 1.0}]),
        extractor=extractor,
        task="regression",
    )
    assert only_zero == Outcome(abs_difference=1.0, rel_difference=None)


def test_regression_uses_the_score_when_one_is_configured() -> None:
    extractor = _extractor(path="label", score="value", task="regression")
    request = _json({"f0": 1})
    outcome = compare_answers(
        request,
        _json({"label": "a", "value": 1.0}),
        _json({"label": "b", "value": 1.5}),
        extractor=extractor,
        task="regression",
    )
    assert outcome == Outcome(abs_difference=0.5, rel_difference=0.5)


def test_regression_with_a_non_number_is_not_compared() -> None:
    extractor = _extractor(path="value", task="regression")
    request = _json({"f0": 1})
    outcome = compare_answers(
        request,
        _json({"value": 1.0}),
        _json({"value": "1.0"}),
        extractor=extractor,
        task="regression",
    )
    assert outcome is None


def test_shadow_counts_read_back_what_the_metrics_counted() -> None:
    registry = CollectorRegistry()
    metrics = RoutingMetrics(registry=registry, base=("fraud", "v1", "stable"))
    for outcome, n in (("mirrored", 7), ("dropped", 2), ("compared", 5), ("agreed", 4)):
        metrics.shadow[outcome].inc(n)
    metrics.shadow_errors["stable"].inc()
    metrics.shadow_errors["shadow"].inc(3)
    metrics.abs_difference.observe(0.25)
    metrics.abs_difference.observe(0.5)
    metrics.rel_difference.observe(0.125)
    for seconds in (0.004, 0.004, 0.2):
        metrics.shadow_duration["stable"].observe(seconds)
    metrics.shadow_duration["shadow"].observe(20.0)  # beyond the last bound: +Inf
    metrics.routed_canary.inc()

    counts = shadow_counts_from_samples(s for f in registry.collect() for s in f.samples)
    assert (counts.mirrored, counts.dropped, counts.compared, counts.agreed) == (7, 2, 5, 4)
    assert (counts.stable_errors, counts.shadow_errors) == (1, 3)
    assert counts.abs_difference_sum == 0.75 and counts.rel_difference_sum == 0.125
    stable = counts.stable_latency
    assert stable.count == 3 and math.isclose(stable.sum, 0.208)
    assert stable.counts[stable.bounds.index(0.005)] == 2
    assert stable.counts[stable.bounds.index(0.2)] == 1
    assert counts.shadow_latency.counts[-1] == 1 and counts.shadow_latency.count == 1


def test_a_request_the_proxy_built_is_sent_again_as_it_was() -> None:
    body = b'{"f0": 1}\r\n\r\n'  # a body may hold blank lines
    request = parse_request(
        b"POST /v1/models/m:predict?a=%2F HTTP/1.1\r\nhost: fraud.ml\r\n"
        b"x-custom: a: b\r\ncontent-length: 13\r\nx-request-id: r1\r\n\r\n" + body
    )
    assert (request.method, request.target, request.body) == (
        "POST",
        "/v1/models/m:predict?a=%2F",
        body,
    )
    assert request.headers == [("host", "fraud.ml"), ("x-custom", "a: b"), ("x-request-id", "r1")]
    bodiless = parse_request(b"GET /healthz HTTP/1.1\r\nhost: h\r\n\r\n")
    assert (bodiless.method, bodiless.body, bodiless.headers) == ("GET", b"", [("host", "h")])
