"""The session's cluster and the Driftline release on it (see `_cluster.py`)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cluster import (
    CHART,
    RELEASE,
    RELEASE_NAMESPACE,
    Cluster,
    NodeModeUnavailable,
    node_cluster,
    node_mode_problem,
    own_cluster_problem,
)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    artifacts = tmp_path_factory.mktemp("e2e-artifacts")
    print(f"\ne2e artifacts (logs, listings): {artifacts}")
    path = os.environ.get("KUBECONFIG")
    if path:
        problem = own_cluster_problem(path)
        if problem:
            pytest.skip(problem)
        yield Cluster(Path(path), artifacts)
        return
    problem = node_mode_problem()
    if problem:
        pytest.skip(problem)
    # A short path: containerd's unix sockets live under it (108 bytes at most).
    state = Path(tmp_path_factory.mktemp("k8s", numbered=True))
    try:
        with node_cluster(state, artifacts) as node:
            yield node
    except NodeModeUnavailable as refusal:
        pytest.skip(str(refusal))


@pytest.fixture(scope="session")
def driftline(cluster: Cluster) -> Iterator[Cluster]:
    """The chart installed with its defaults (the images it names, its
    ServiceAccount and RBAC, the webhook behind its Service)."""
    try:
        cluster.run(
            "helm", "install", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE,
            "--create-namespace", "--wait", "--timeout", "4m",
        )  # fmt: skip
    except subprocess.CalledProcessError as error:
        pods = cluster.run("kubectl", "get", "pods", "-A", "-o", "wide", check=False)
        log = cluster.run(
            "kubectl", "-n", RELEASE_NAMESPACE, "logs", "deploy/driftline", check=False
        )
        raise AssertionError(f"{error.stderr}\n{pods}\noperator log:\n{log}") from None
    yield cluster
    installed = cluster.run("helm", "list", "-n", RELEASE_NAMESPACE, "-q")
    if RELEASE in installed.split():  # test_uninstall did not get to it
        cluster.run("helm", "uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait")
