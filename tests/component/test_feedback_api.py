"""``POST /v1/feedback`` on a real sidecar in front of the demo model server:
labels joined by X-Request-ID, across a sidecar restart, unknown ids named,
bad batches refused whole."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.component.conftest import (
    ModelServer,
    Sidecar,
    _stop,
    sidecar_config,
    start_sidecar,
    wait_until,
)

TOKEN = "label-source-token"
GOOD = {"authorization": f"Bearer {TOKEN}"}


def _config(model: ModelServer, workdir: Path) -> dict[str, Any]:
    return sidecar_config(
        model.url,
        workdir,
        model={
            "name": "fraud",
            "version": "v1",
            "protocol": "json",
            "features": [{"name": f"f{i}"} for i in range(4)],
            "prediction": {"path": "prediction", "score": "probability"},
        },
        feedback={
            "enabled": True,
            "classes": ["ok", "fraud"],
            "positive_class": "fraud",
            "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
            "max_batch": 50,
        },
    )


def _pending(sidecar: Sidecar) -> float:
    for line in sidecar.metrics().splitlines():
        if line.startswith("driftline_labels_pending{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _post(sidecar: Sidecar, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    url = sidecar.admin + "/v1/feedback"
    return httpx.post(url, json=body, headers=GOOD if headers is None else headers, timeout=10)


def test_labels_join_their_predictions_across_a_restart(
    model: ModelServer, tmp_path: Path, sidecar_factory: Callable[..., Sidecar]
) -> None:
    workdir = tmp_path / "restarting"
    config = _config(model, workdir)
    sidecar = start_sidecar(workdir, config)
    try:
        answers = {}
        with httpx.Client(base_url=sidecar.proxy, timeout=10) as client:
            for i in range(30):
                row = {"f0": i / 10 - 1.5, "f1": 0.5, "f2": -0.2, "f3": 1.0}
                response = client.post("/predict", json=row, headers={"x-request-id": f"id-{i}"})
                assert response.status_code == 200
                answers[f"id-{i}"] = response.json()["prediction"]
        wait_until(lambda: _pending(sidecar) == 30, timeout=30, what="30 pending predictions")
        truth = {i: "fraud" if n % 3 else "ok" for n, i in enumerate(answers)}

        # Refused whole, naming the field; nothing joined.
        assert _post(sidecar, [{"id": "id-0", "label": "ok"}], headers={}).status_code == 401
        wrong = {"authorization": "Bearer nope"}
        assert _post(sidecar, [{"id": "id-0", "label": "ok"}], headers=wrong).status_code == 403
        bad = _post(sidecar, [{"id": "id-0", "label": "ok"}, {"id": "id-1", "label": "maybe"}])
        assert bad.status_code == 422 and bad.json()["field"] == "labels[1].label"
        too_many = _post(sidecar, [{"id": f"id-{i}", "label": "ok"} for i in range(51)])
        assert too_many.status_code == 413 and too_many.json()["field"] == "labels"
        malformed = _post(sidecar, {"labels": [{"id": "id 0", "label": "ok"}]})
        assert malformed.status_code == 422 and malformed.json()["field"] == "labels[0].id"
        assert sidecar.snapshot()["labels"]["joined"] == 0

        first = [{"id": i, "label": truth[i]} for i in list(truth)[:10]]
        joined = _post(sidecar, [*first, {"id": "never-served", "label": "ok"}])
        assert joined.status_code == 200
        assert joined.json() == {
            "joined": 10,
            "not_joined": {"unknown": ["never-served"], "expired": [], "duplicate": []},
        }
        counts = sidecar.snapshot()
        confusion = counts["quality"][""]["confusion"]
        assert sum(n for row in confusion.values() for n in row.values()) == 10
        for actual in ("ok", "fraud"):
            expected = sum(1 for i in list(truth)[:10] if truth[i] == actual)
            assert sum(confusion.get(actual, {}).values()) == expected
        right = sum(1 for i in list(truth)[:10] if truth[i] == answers[i])
        assert sum(confusion.get(c, {}).get(c, 0) for c in ("ok", "fraud")) == right
        assert sum(sum(b) for b in counts["quality"][""]["score_bins"].values()) == 10
    finally:
        _stop(sidecar.process)

    # The same pod's sidecar restarts: the pending predictions are still there.
    sidecar = start_sidecar(workdir, config)
    try:
        assert _pending(sidecar) == 30
        rest = [{"id": i, "label": truth[i]} for i in list(truth)[10:]]
        again = _post(sidecar, [*rest, {"id": "id-0", "label": truth["id-0"]}]).json()
        assert again["joined"] == 20
        assert again["not_joined"]["duplicate"] == ["id-0"]  # labelled before the restart
        counts = sidecar.snapshot()
        assert counts["labels"] == {"joined": 20, "unknown": 0, "expired": 0, "duplicate": 1}
    finally:
        _stop(sidecar.process)


def test_feedback_is_off_unless_enabled(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    token = "admin-token"
    sidecar = sidecar_factory(
        model.url, admin_token_sha256=hashlib.sha256(token.encode()).hexdigest()
    )
    response = _post(
        sidecar, [{"id": "a", "label": "ok"}], headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 404 and "feedback.enabled" in response.json()["error"]
