"""spec.explain through the running operator with DRIFTLINE_EXPLAINER_URL set,
as the chart sets it with explainer.enabled: the operator starts no worker
process of its own; a real ``driftline-explainer`` process explains the rows
(a real sidecar's reservoir, a real scikit-learn model on loopback), within
the operator's budget; when the explainer goes, the condition says so while
the monitor's other verdicts go on."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _harness import (
    ApiServer,
    Operator,
    _stop,
    free_port,
    get_monitor,
    running_operator,
    serve,
    wait_for,
)
from test_explanations import (
    explained_monitor,
    explanations_condition,
    run_sidecar,
    send,
    start_pod,
    trained,
)

from driftline_operator.controller.tls import write_self_signed

pytestmark = pytest.mark.timeout(400)
__all__ = ["trained"]  # a fixture of test_explanations, used here too


@pytest.fixture(scope="module")
def explainer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    tmp = tmp_path_factory.mktemp("explainer")
    port = free_port()
    command = [str(Path(sys.executable).parent / "driftline-explainer")]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    process = serve(command, url + "/healthz", tmp / "explainer.log")
    try:
        yield url, process
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def remote_operator(
    apiserver: ApiServer,
    explainer: tuple[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    tmp = tmp_path_factory.mktemp("operator")
    write_self_signed(tmp / "tls")
    with running_operator(
        apiserver,
        tmp,
        cert_dir=tmp / "tls",
        operator_namespace="driftline-system",
        extra_env={"DRIFTLINE_EXPLAINER_URL": explainer[0]},
    ) as running:
        yield running


def explained_rows(explainer: str) -> float:
    metrics = httpx.get(explainer + "/metrics", timeout=10).text
    line = next(
        m for m in metrics.splitlines() if m.startswith("driftline_explainer_explanations_total")
    )
    return float(line.split()[-1])


def children(pid: int) -> list[str]:
    tasks = Path(f"/proc/{pid}/task")
    return [c for t in tasks.iterdir() for c in (t / "children").read_text().split()]


def test_the_explainer_deployment_explains_for_the_operator(
    apiserver: ApiServer,
    remote_operator: Operator,
    explainer: tuple[str, Any],
    trained: tuple[str, str],
    tmp_path: Path,
) -> None:
    api, ns = apiserver.client(), apiserver.namespace
    model, profile = trained
    url, process = explainer
    admin_port = free_port()
    explained_monitor(api, ns, "far", profile, admin_port)
    sidecar, proxy = run_sidecar(api, ns, "far", model, profile, tmp_path, admin_port)
    try:
        start_pod(api, ns, "far-0", "far", model)
        seed = iter(range(1, 10_000))

        def explained() -> dict[str, Any] | None:
            send(proxy, next(seed))
            body = get_monitor(api, ns, "far") or {}
            figures = (body.get("status") or {}).get("explanations") or {}
            return body if figures.get("explained", 0) >= 5 else None

        body = wait_for("rows explained by the explainer", explained, deadline=240)
        figures = body["status"]["explanations"]
        assert figures["topFeatures"][0]["name"] == "f0"  # y = 3 f0 + f1 - 0.5 f3
        assert figures["referenceTop"][0] == "f0"
        condition = explanations_condition(body)
        assert condition is not None and condition["reason"] == "Explained", condition
        # The rows were explained over there (the reference background too), not here.
        assert explained_rows(url) >= figures["explained"] + 10
        assert children(remote_operator.process.pid) == []

        # The explainer goes: the reason says where explanations stopped, drift goes on.
        _stop(process)

        def unreachable() -> dict[str, Any] | None:
            send(proxy, next(seed))
            body = get_monitor(api, ns, "far") or {}
            condition = explanations_condition(body) or {}
            return body if condition.get("reason") == "ExplainerUnreachable" else None

        body = wait_for(
            "ExplanationsAvailable=False ExplainerUnreachable", unreachable, deadline=120
        )
    finally:
        _stop(sidecar)
    condition = explanations_condition(body)
    assert condition is not None and condition["status"] == "False"
    assert f"explainer at {url}/v1/explain" in condition["message"]
    assert body["status"]["drift"]["status"] in ("ok", "drift", "insufficient_data")
