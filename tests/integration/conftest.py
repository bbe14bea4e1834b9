"""The Kubernetes API the integration tests share.

One control plane per session: ../shared/k8s (etcd, kube-apiserver,
kube-controller-manager v1.20) started on free ports the first time a test
asks for it, stopped at the end. Each test module gets a namespace of its
own (`it-<module>`), so modules never see each other's objects, and each
operator under test serves only its module's namespace.

Without the control plane (no ../shared/k8s, or no etcd) the modules that can
run on the kmock emulator get one each; tests that need real semantics
(controllers, schema validation, resourceVersion conflicts) ask for
`control_plane` and are skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _harness import (
    ApiServer,
    ControlPlane,
    Operator,
    control_plane_problem,
    emulated_apiserver,
    namespace_on,
    running_operator,
    started_control_plane,
)

from driftline_operator.controller.tls import write_self_signed


@pytest.fixture(scope="session")
def shared_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane | None]:
    """The session's control plane, or None where it cannot run."""
    if control_plane_problem() is not None:
        yield None
        return
    with started_control_plane(tmp_path_factory.mktemp("k8s")) as plane:
        yield plane


@pytest.fixture(scope="session")
def control_plane(shared_control_plane: ControlPlane | None) -> ControlPlane:
    """For tests that need a real API server: skipped, with the reason, without one."""
    if shared_control_plane is None:
        pytest.skip(f"needs a real API server: {control_plane_problem()}")
    return shared_control_plane


def module_namespace(request: pytest.FixtureRequest) -> str:
    """`it-<module>` (test_ and underscores dropped): unique per module, and readable."""
    stem = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    return f"it-{stem.replace('_', '-')}"[:63]


@pytest.fixture(scope="module")
def apiserver(
    request: pytest.FixtureRequest,
    shared_control_plane: ControlPlane | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ApiServer]:
    """The module's namespace on the shared control plane, else on an emulator of its own."""
    namespace = module_namespace(request)
    if shared_control_plane is not None:
        with namespace_on(shared_control_plane, namespace) as server:
            yield server
    else:
        tmp = tmp_path_factory.mktemp("apiserver")
        with emulated_apiserver(tmp, namespace=namespace) as server:
            yield server


@pytest.fixture(scope="module")
def operator(apiserver: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator, run for real by Kopf's runner, serving the module's namespace."""
    tmp = tmp_path_factory.mktemp("operator")
    write_self_signed(tmp / "tls")
    with running_operator(
        apiserver, tmp, cert_dir=tmp / "tls", operator_namespace="driftline-system"
    ) as running:
        yield running
