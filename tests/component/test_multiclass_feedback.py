"""A real multiclass model (scikit-learn's logistic regression on iris, served
over KServe v1 by the demo model server) behind a real sidecar: the sidecar
reads each row's class probabilities off the answers, labels posted over
HTTP join them, and the quality figures from its snapshot agree with
scikit-learn on the same rows (exactly, for the scores in their bins)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn import metrics
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import label_binarize

from driftline_operator.analysis.quality import figures
from driftline_operator.api.spec import Quality
from driftline_operator.cli.feedback import send
from driftline_operator.stats.quality import total
from driftline_sidecar.contract.snapshot import Snapshot
from tests.component.conftest import Sidecar, running_model, wait_until

TOKEN = "iris-labels"
BINS = 20


def _pending(sidecar: Sidecar) -> float:
    for line in sidecar.metrics().splitlines():
        if line.startswith("driftline_labels_pending{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_multiclass_labels_join_and_agree_with_scikit_learn(
    tmp_path: Path, sidecar_factory: Callable[..., Sidecar]
) -> None:
    iris = load_iris()
    classes = [str(c) for c in iris.target_names]
    rng = np.random.default_rng(0)
    # Noisy inputs, so the model is right often but not always.
    x = iris.data + rng.normal(0, 0.6, iris.data.shape)
    estimator = LogisticRegression(max_iter=1000).fit(iris.data, iris.target)
    joblib.dump(estimator, tmp_path / "iris.joblib")
    with running_model(tmp_path, "--sklearn", str(tmp_path / "iris.joblib")) as model:
        sidecar = sidecar_factory(
            model.url,
            model={
                "name": "iris",
                "protocol": "kserve-v1",
                "features": [{"name": f"f{i}"} for i in range(4)],
            },
            feedback={
                "enabled": True,
                "classes": classes,
                "score_bins": BINS,
                "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
            },
        )
        answers = []
        with httpx.Client(base_url=sidecar.proxy, timeout=10) as client:
            for batch in range(15):  # ten rows a request: row r joins as <id>:<r>
                rows = x[batch * 10 : (batch + 1) * 10].tolist()
                response = client.post(
                    "/v1/models/iris:predict",
                    json={"instances": rows},
                    headers={"x-request-id": f"b{batch}"},
                )
                assert response.status_code == 200
                answers += response.json()["predictions"]
        ids = [f"b{i // 10}" if i % 10 == 0 else f"b{i // 10}:{i % 10}" for i in range(150)]

        wait_until(lambda: _pending(sidecar) == 150, timeout=30, what="150 pending predictions")
        labels = [{"id": i, "label": classes[y]} for i, y in zip(ids, iris.target, strict=True)]
        outcome = send(iter(labels), [sidecar.admin], TOKEN).document()
        assert outcome["joined"] == 150
        window = Snapshot.model_validate(sidecar.snapshot())

    p = np.asarray(answers)
    assert p == pytest.approx(estimator.predict_proba(x))  # what the model said, read back
    counts = total(window.quality)
    status = figures(counts, Quality(classes=classes, min_labels=100), role="stable")
    y = iris.target
    assert status.accuracy == pytest.approx(metrics.accuracy_score(y, p.argmax(axis=1)))
    binned = np.minimum((p * BINS).astype(int), BINS - 1)
    onehot = label_binarize(y, classes=range(3))
    macro = metrics.roc_auc_score(onehot, binned, average="macro")
    assert status.roc_auc == pytest.approx(macro, abs=1e-5)
    assert status.pr_auc == pytest.approx(
        metrics.average_precision_score(onehot, binned, average="macro"), abs=1e-5
    )
    assert abs(status.roc_auc - metrics.roc_auc_score(y, p, multi_class="ovr")) <= (  # type: ignore[operator]
        status.roc_auc_bound
    )
    by_name = {c.name: c for c in status.classes}
    for k, name in enumerate(classes):
        assert by_name[name].roc_auc == pytest.approx(
            metrics.roc_auc_score(y == k, binned[:, k]), abs=1e-5
        )
    # Each prediction's own score, by predicted class, for the label-free estimate.
    assert sum(h.count for h in window.class_score.values()) == 150
