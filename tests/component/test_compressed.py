"""A model that compresses its answers: the client gets them as the model sent
them, and capture decodes its own copy, within its limits."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest

from tests.component.conftest import OTHER_SEED, ModelServer, running_model, wait_until
from tests.component.test_capture import DECILES, EDGES, FEATURES, PROTOCOLS, answers

if TYPE_CHECKING:
    from tests.component.conftest import Sidecar

GZIP = {"accept-encoding": "gzip"}


@pytest.fixture(scope="module")
def gzip_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    """The demo model server behind Starlette's GZipMiddleware, as MLServer serves."""
    with running_model(tmp_path_factory.mktemp("gzip"), "--gzip-min-bytes", "0") as server:
        yield server


def post_raw(url: str, body: Any, headers: dict[str, str]) -> tuple[httpx.Response, bytes]:
    """A POST and its body as it came off the wire (``content`` would be decoded)."""
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", url, json=body, headers=headers) as response,
    ):
        return response, b"".join(response.iter_raw())


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_gzip_answers_reach_the_client_untouched_and_are_counted(
    protocol: str, gzip_model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    spec = PROTOCOLS[protocol]
    sidecar = sidecar_factory(
        gzip_model.url,
        model={"name": "fraud", "protocol": "auto", "features": FEATURES,
               "prediction": spec["prediction"]},
    )  # fmt: skip
    rng = np.random.default_rng(5)
    batches = [rng.normal(0, 1, (n, 4)).round(3) for n in (1, 4, 9)]
    scores: list[float] = []
    labels: list[str] = []
    for batch in batches:
        body = spec["body"](batch.tolist())
        direct = httpx.post(gzip_model.url + spec["url"], json=body, timeout=10).json()
        response, raw = post_raw(sidecar.proxy + spec["url"], body, GZIP)
        assert response.status_code == 200
        assert response.headers["content-encoding"] == "gzip"
        assert int(response.headers["content-length"]) == len(raw)
        assert json.loads(gzip.decompress(raw)) == direct  # the model's bytes
        s, lab = answers(protocol, direct)
        scores += s
        labels += lab
    rows = np.vstack(batches)
    snapshot = sidecar.wait_records(lambda s: s["capture"]["records"] == len(rows))

    assert snapshot["capture"]["bodies_parsed"] == len(batches)
    assert snapshot["capture"]["unparsed"] == snapshot["capture"]["responses_unread"] == 0
    for i in range(4):
        expected = np.bincount(np.searchsorted(EDGES, rows[:, i], side="right"), minlength=6)
        assert snapshot["features"][f"f{i}"]["counts"] == expected.tolist()
    expected_scores = np.bincount(np.searchsorted(DECILES, scores, side="right"), minlength=10)
    assert snapshot["prediction"]["counts"] == expected_scores.tolist()
    assert snapshot["prediction"]["missing"] == 0
    assert snapshot["classes"] == dict(Counter(labels))


def test_a_client_that_accepts_no_gzip_gets_plain_answers_counted_the_same(
    gzip_model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    sidecar = sidecar_factory(
        gzip_model.url, model={"name": "fraud", "protocol": "json", "features": FEATURES}
    )
    rows = [{"f0": 0.2}, {"f0": 0.7}]
    response, raw = post_raw(sidecar.proxy + "/predict", rows, {"accept-encoding": "identity"})
    assert "content-encoding" not in response.headers
    assert len(json.loads(raw)) == 2
    snapshot = sidecar.wait_records(lambda s: s["capture"]["records"] == 2)
    assert snapshot["features"]["f0"]["counts"] == [0, 0, 0, 1, 1, 0]
    assert snapshot["capture"]["responses_unread"] == 0


def test_an_answer_decoding_past_the_limit_still_counts_its_request(
    gzip_model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    rows = (np.arange(160).reshape(40, 4) % 3 - 1).astype(float).tolist()  # -1, 0, 1
    body = {"instances": rows}
    plain = httpx.post(gzip_model.url + "/v1/models/fraud:predict", json=body, timeout=10)
    limit = 1000
    assert len(plain.content) > limit  # decoded, the answer is over the limit
    sidecar = sidecar_factory(
        gzip_model.url,
        model={"name": "fraud", "protocol": "auto", "features": FEATURES,
               "prediction": {"score": "1"}},
        capture={"max_decoded_bytes": limit},
    )  # fmt: skip
    response, raw = post_raw(sidecar.proxy + "/v1/models/fraud:predict", body, GZIP)
    assert response.headers["content-encoding"] == "gzip"
    assert len(raw) < limit  # as sent, it is not
    assert json.loads(gzip.decompress(raw)) == plain.json()

    snapshot = sidecar.wait_records(lambda s: s["capture"]["records"] == len(rows))
    assert snapshot["capture"]["bodies_parsed"] == 1
    assert snapshot["capture"]["responses_unread"] == 1
    assert snapshot["prediction"]["missing"] == len(rows)
    expected = np.bincount(np.searchsorted(EDGES, np.array(rows)[:, 0], side="right"), minlength=6)
    assert snapshot["features"]["f0"]["counts"] == expected.tolist()
    unread = 'driftline_capture_responses_unread_total{model="fraud",reason="too_large"'
    assert unread in sidecar.metrics()


def test_an_answer_over_the_capture_limit_still_counts_its_request(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    rows = [[0.1, -0.2, 0.3, -0.4]] * 60
    body = {"instances": rows}
    request_bytes = len(json.dumps(body).encode())
    answer = httpx.post(model.url + "/v1/models/fraud:predict", json=body, timeout=10).content
    limit = (request_bytes + len(answer)) // 2
    assert request_bytes < limit < len(answer)
    sidecar = sidecar_factory(
        model.url,
        model={"name": "fraud", "protocol": "auto", "features": FEATURES},
        capture={"max_body_bytes": limit},
    )
    response = httpx.post(sidecar.proxy + "/v1/models/fraud:predict", json=body, timeout=10)
    assert response.content == answer

    snapshot = sidecar.wait_records(lambda s: s["capture"]["records"] == len(rows))
    assert snapshot["capture"]["too_large"] == 0
    assert snapshot["capture"]["responses_unread"] == 1
    assert snapshot["features"]["f0"]["counts"] == [0, 0, 0, 60, 0, 0]


def test_a_shadow_compares_gzip_answers(
    gzip_model: ModelServer,
    tmp_path_factory: pytest.TempPathFactory,
    sidecar_factory: Callable[..., Sidecar],
) -> None:
    """Stable and shadow both gzip (the client's Accept-Encoding reaches both):
    every mirrored pair is decoded and compared."""
    tmp = tmp_path_factory.mktemp("gzip-shadow")
    with running_model(tmp, "--gzip-min-bytes", "0", "--seed", str(OTHER_SEED)) as candidate:
        sidecar = sidecar_factory(
            gzip_model.url,
            model={"name": "fraud", "protocol": "json", "features": FEATURES,
                   "prediction": {"path": "prediction", "score": "probability"}},
            routing={"shadow_url": candidate.url, "shadow_percent": 100},
        )  # fmt: skip
        rng = np.random.default_rng(9)
        for row in rng.normal(0, 1, (20, 4)).round(3):
            body = dict(zip([f"f{i}" for i in range(4)], row.tolist(), strict=True))
            response, _ = post_raw(sidecar.proxy + "/predict", body, GZIP)
            assert response.headers["content-encoding"] == "gzip"

        def compared() -> bool:
            shadow = sidecar.snapshot()["shadow"]
            return bool(shadow["mirrored"] == 20 and shadow["compared"] == 20)

        wait_until(compared, timeout=30, what="20 compared shadow answers")
    shadow = sidecar.snapshot()["shadow"]
    assert shadow["shadow_errors"] == 0
    assert 0 < shadow["agreed"] <= 20  # another seed: agrees on part of the inputs
