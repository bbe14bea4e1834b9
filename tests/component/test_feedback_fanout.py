"""Labels fanned out to several real sidecars (``driftline feedback``'s
``send``, over loopback HTTP): each joins the ids it served, and an id that
no sidecar served is counted unknown once over all of them, not once per
sidecar; what the merged snapshot says is what the command reports."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import httpx

from driftline_operator.cli.feedback import send
from driftline_sidecar.contract.snapshot import Snapshot, merge
from tests.component.conftest import ModelServer, Sidecar, wait_until

TOKEN = "label-source-token"
FEEDBACK = {
    "enabled": True,
    "classes": ["ok", "fraud"],
    "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
}


def _pending(sidecar: Sidecar) -> float:
    for line in sidecar.metrics().splitlines():
        if line.startswith("driftline_labels_pending{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_an_id_nobody_served_is_unknown_once_over_the_replicas(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    sidecars = [
        sidecar_factory(
            model.url,
            model={
                "name": "fraud",
                "protocol": "json",
                "features": [{"name": f"f{i}"} for i in range(4)],
                "prediction": {"path": "prediction", "score": "probability"},
            },
            feedback=FEEDBACK,
        )
        for _ in range(3)
    ]
    labels = []
    for n, sidecar in enumerate(sidecars):
        with httpx.Client(base_url=sidecar.proxy, timeout=10) as client:
            for i in range(8):
                ident = f"pod{n}-req{i}"
                row = {"f0": i / 4 - 1.0, "f1": 0.5 * n, "f2": -0.2, "f3": 1.0}
                assert client.post("/predict", json=row, headers={"x-request-id": ident}).is_success
                labels.append({"id": ident, "label": "fraud" if i % 2 else "ok"})
        wait_until(lambda s=sidecar: _pending(s) == 8, timeout=30, what="8 pending predictions")
    labels += [{"id": "never-served", "label": "ok"}, {"id": "nor-this", "label": "fraud"}]
    labels.append({"id": "pod1-req0", "label": "ok"})  # a second label for a served id

    admins = [s.admin for s in sidecars]
    outcome = send(iter(labels), admins, TOKEN, batch=10).document()
    assert outcome == {
        "sent": 27,
        "joined": 24,
        "not_joined": {
            "unknown": ["never-served", "nor-this"],
            "expired": [],
            "duplicate": ["pod1-req0"],
        },
    }
    snapshots = [Snapshot.model_validate(s.snapshot()) for s in sidecars]
    assert [s.labels.joined for s in snapshots] == [8, 8, 8]  # each its own ids
    merged = merge(snapshots).labels
    assert (merged.joined, merged.unknown, merged.duplicate) == (24, 2, 1)


def test_a_bad_fanout_value_is_refused_and_names_it(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    sidecar = sidecar_factory(model.url, feedback=FEEDBACK)
    response = httpx.post(
        sidecar.admin + "/v1/feedback",
        params={"fanout": "maybe"},
        json={"labels": [{"id": "a", "label": "ok"}]},
        headers={"authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 400 and response.json()["field"] == "fanout"
    assert Snapshot.model_validate(sidecar.snapshot()).labels.unknown == 0  # nothing counted
