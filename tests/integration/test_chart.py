"""The Helm chart, rendered by the real helm binary and checked against the
Kubernetes schemas (kubernetes-validate) and the contracts in DESIGN.md."""

from __future__ import annotations

import base64
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from _helm import CHART, HELM, needs_helm

ROOT = Path(__file__).resolve().parents[2]
CRD_NAME = "modelmonitors.driftline.io.yaml"
NAMESPACE = "driftline-system"
RELEASE = "dl"
KUBE_VERSION = "1.30"
# Kinds of other projects' CRDs: kubernetes-validate has no schema for them.
FOREIGN_KINDS = {"ServiceMonitor", "Certificate", "Issuer"}


pytestmark = [pytest.mark.helm, needs_helm]

Manifest = dict[str, Any]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, *args], capture_output=True, text=True, check=False, timeout=120)


def values_args(values: Manifest, tmp_path: Path) -> list[str]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["--values", str(path)]


def render(values: Manifest, tmp_path: Path, *extra: str) -> list[Manifest]:
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                  *values_args(values, tmp_path), *extra)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def only(manifests: list[Manifest], kind: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def kinds(manifests: list[Manifest]) -> list[str]:
    return sorted(m["kind"] for m in manifests)


def operator_container(manifests: list[Manifest]) -> Manifest:
    return only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def env_of(container: Manifest) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


SHARDS = [{"name": "a", "namespaces": ["ml", "fraud"]}, {"name": "b", "namespaces": ["churn"], "replicas": 3}]  # fmt: skip
CA_BUNDLE = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
COMBINATIONS: dict[str, Manifest] = {
    "default": {},
    "cert-manager": {"tls": {"mode": "cert-manager"}},
    "cert-manager-cluster-issuer": {
        "tls": {"mode": "cert-manager", "certManager": {"issuerRef": {"name": "ca", "kind": "ClusterIssuer"}}}
    },
    "own-secret": {"tls": {"mode": "secret", "secret": {"name": "my-tls", "caBundle": CA_BUNDLE.decode()}}},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "namespaced": {"watchNamespaces": ["ml", "fraud"], "webhook": {"excludeNamespaces": ["legacy"]}},
    "sharded": {"operator": {"shards": SHARDS}},
    "everything": {
        "operator": {"logLevel": "debug", "nodeSelector": {"a": "b"},
                     "tolerations": [{"key": "k", "operator": "Exists"}], "podAnnotations": {"team": "ml"}},
        "sidecar": {"image": {"repository": "reg.local/sidecar", "tag": "dev"}, "otlpEndpoint": "http://otel:4318"},
        "imagePullSecrets": [{"name": "regcred"}],
        "serviceMonitor": {"enabled": True},
        "webhook": {"failurePolicy": "Fail", "timeoutSeconds": 3},
    },
}  # fmt: skip


@pytest.fixture(params=sorted(COMBINATIONS))
def combination(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, list[Manifest]]]:
    yield request.param, render(COMBINATIONS[request.param], tmp_path)


# -- lint and schemas -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COMBINATIONS))
def test_lint_strict_passes(name: str, tmp_path: Path) -> None:
    result = helm("lint", "--strict", str(CHART), *values_args(COMBINATIONS[name], tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_manifest_is_valid_kubernetes(combination: tuple[str, list[Manifest]]) -> None:
    _, manifests = combination
    for manifest in manifests:
        if manifest["kind"] in FOREIGN_KINDS:
            continue
        where = f"{manifest['kind']}/{manifest['metadata']['name']}"
        try:
            kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{where}: {error.message} at {list(error.absolute_path)}")


def test_resources_are_namespaced_in_the_release(combination: tuple[str, list[Manifest]]) -> None:
    name, manifests = combination
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"}
    watched = COMBINATIONS[name].get("watchNamespaces", [])
    for m in manifests:
        namespace = m["metadata"].get("namespace")
        if m["kind"] in cluster_scoped:
            assert namespace is None, m["kind"]
        elif m["kind"] in ("Role", "RoleBinding"):
            leader_election = m["metadata"]["name"].endswith("-leader-election")
            assert namespace == NAMESPACE if leader_election else namespace in watched
        else:
            assert namespace == NAMESPACE, m["kind"]


BAD_VALUES = [
    ({"webhook": {"failurePolicy": "Maybe"}}, "/webhook/failurePolicy"),
    ({"webhook": {"timeoutSeconds": 31}}, "/webhook/timeoutSeconds"),
    ({"webhook": {"path": "inject"}}, "/webhook/path"),
    ({"tls": {"mode": "letsencrypt"}}, "/tls/mode"),
    ({"tls": {"mode": "secret", "secret": {"name": "x"}}}, "/tls/secret/caBundle"),
    ({"tls": {"mode": "secret", "secret": {"name": "x", "caBundle": "not base64!"}}}, "caBundle"),
    ({"tls": {"mode": "cert-manager", "certManager": {"issuerRef": {"kind": "ClusterIssuer"}}}},
     "issuerRef"),
    ({"operator": {"replicas": -1}}, "/operator/replicas"),
    ({"operator": {"leaderElection": {"leaseDurationSeconds": "15s"}}}, "leaseDurationSeconds"),
    ({"operator": {"image": {"repository": "x", "pullPolicy": "Sometimes"}}}, "pullPolicy"),
    ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
    ({"serviceMonitor": {"interval": "soon"}}, "/serviceMonitor/interval"),
    ({"webhookk": {}}, "webhookk"),
]  # fmt: skip


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_invalid_values_are_rejected_by_the_schema(
    values: Manifest, where: str, tmp_path: Path
) -> None:
    result = helm("template", RELEASE, str(CHART), *values_args(values, tmp_path))
    assert result.returncode != 0, f"{values} rendered without error"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert where in result.stderr, result.stderr


# -- the CRD ----------------------------------------------------------------------


def test_chart_crd_is_the_generated_crd() -> None:
    source = ROOT / "crds" / CRD_NAME
    copy = CHART / "crds" / CRD_NAME
    fix = f"fix: cp {source.relative_to(ROOT)} {copy.relative_to(ROOT)}"
    assert source.exists(), (
        f"{source.relative_to(ROOT)} is missing (python -m driftline_operator.api.crdgen)"
    )
    assert copy.exists(), f"the chart has no CRD; {fix}"
    assert list(yaml.safe_load_all(copy.read_text())) == list(
        yaml.safe_load_all(source.read_text())
    ), f"the chart's CRD differs from the generated one; {fix}"


def test_include_crds_renders_the_modelmonitor_crd(tmp_path: Path) -> None:
    manifests = render({}, tmp_path, "--include-crds")
    crd = only(manifests, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "modelmonitors.driftline.io"
    kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)


# -- the webhook ------------------------------------------------------------------


def test_webhook_defaults_never_block_pod_creation(tmp_path: Path) -> None:
    manifests = render({}, tmp_path)
    (hook,) = only(manifests, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["timeoutSeconds"] == 5
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                              "resources": ["pods"], "scope": "Namespaced"}]  # fmt: skip
    (excluded,) = hook["namespaceSelector"]["matchExpressions"]
    assert excluded["key"] == "kubernetes.io/metadata.name"
    assert excluded["operator"] == "NotIn"
    assert set(excluded["values"]) == {"kube-system", NAMESPACE}
    assert hook["objectSelector"]["matchExpressions"] == [
        {"key": "driftline.io/inject", "operator": "NotIn", "values": ["false"]}
    ]


def test_webhook_reaches_the_operator_through_the_service(
    combination: tuple[str, list[Manifest]],
) -> None:
    _, manifests = combination
    (hook,) = only(manifests, "MutatingWebhookConfiguration")["webhooks"]
    service = only(manifests, "Service")
    target = hook["clientConfig"]["service"]
    assert (target["name"], target["namespace"]) == (service["metadata"]["name"], NAMESPACE)
    port = next(p for p in service["spec"]["ports"] if p["port"] == target["port"] == 443)
    for deployment in (m for m in manifests if m["kind"] == "Deployment"):  # one per shard
        pod = deployment["spec"]["template"]
        container = pod["spec"]["containers"][0]
        container_port = next(p for p in container["ports"] if p["name"] == port["targetPort"])
        assert str(container_port["containerPort"]) == env_of(container)["DRIFTLINE_WEBHOOK_PORT"]
        # The pods Service selects are the operator's.
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()


def test_namespaced_watch_limits_the_webhook_and_the_operator(tmp_path: Path) -> None:
    manifests = render(COMBINATIONS["namespaced"], tmp_path)
    (hook,) = only(manifests, "MutatingWebhookConfiguration")["webhooks"]
    expressions = hook["namespaceSelector"]["matchExpressions"]
    assert {
        "key": "kubernetes.io/metadata.name",
        "operator": "In",
        "values": ["ml", "fraud"],
    } in expressions
    not_in = next(e for e in expressions if e["operator"] == "NotIn")
    assert set(not_in["values"]) == {"kube-system", NAMESPACE, "legacy"}
    args = operator_container(manifests)["args"]
    assert "--namespace=ml" in args and "--namespace=fraud" in args
    assert "--all-namespaces" not in args


# -- TLS --------------------------------------------------------------------------


def _handshake(*, cert: bytes, key: bytes, ca: bytes, hostname: str, tmp_path: Path) -> None:
    """A real TLS handshake in memory: raises ssl.SSLError unless the client,
    trusting only `ca`, accepts the server's certificate for `hostname`."""
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client_ctx = ssl.create_default_context(cadata=ca.decode())
    pipes = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(pipes[0], pipes[1], server_hostname=hostname)
    server = server_ctx.wrap_bio(pipes[2], pipes[3], server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, end, out, peer_in in (("client", client, pipes[1], pipes[2]),
                                        ("server", server, pipes[3], pipes[0])):  # fmt: skip
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            return
    raise AssertionError("the TLS handshake did not finish")


def test_self_signed_certificate_serves_the_webhook_service(tmp_path: Path) -> None:
    manifests = render({}, tmp_path)
    secret = only(manifests, "Secret")
    (hook,) = only(manifests, "MutatingWebhookConfiguration")["webhooks"]
    assert secret["type"] == "kubernetes.io/tls"
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    service = only(manifests, "Service")["metadata"]["name"]
    for hostname in (f"{service}.{NAMESPACE}.svc", f"{service}.{NAMESPACE}.svc.cluster.local"):
        _handshake(cert=data["tls.crt"], key=data["tls.key"], ca=data["ca.crt"],
                   hostname=hostname, tmp_path=tmp_path)  # fmt: skip
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(cert=data["tls.crt"], key=data["tls.key"], ca=data["ca.crt"],
                   hostname="evil.example.com", tmp_path=tmp_path)  # fmt: skip
    volume = only(manifests, "Deployment")["spec"]["template"]["spec"]["volumes"][0]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]


@pytest.mark.parametrize("name", ["cert-manager", "cert-manager-cluster-issuer"])
def test_cert_manager_issues_and_injects_the_certificate(name: str, tmp_path: Path) -> None:
    manifests = render(COMBINATIONS[name], tmp_path)
    assert "Secret" not in kinds(manifests)
    certificate = only(manifests, "Certificate")
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    webhook_config = only(manifests, "MutatingWebhookConfiguration")
    annotation = webhook_config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    assert annotation == f"{NAMESPACE}/{certificate['metadata']['name']}"
    assert "caBundle" not in webhook_config["webhooks"][0]["clientConfig"]
    service = only(manifests, "Service")["metadata"]["name"]
    assert f"{service}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    volume = only(manifests, "Deployment")["spec"]["template"]["spec"]["volumes"][0]
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    issuer_ref = certificate["spec"]["issuerRef"]
    if name == "cert-manager":
        issuer = only(manifests, "Issuer")
        assert issuer["spec"] == {"selfSigned": {}}
        assert issuer_ref == {
            "name": issuer["metadata"]["name"],
            "kind": "Issuer",
            "group": "cert-manager.io",
        }
    else:
        assert "Issuer" not in kinds(manifests)
        assert issuer_ref == {"name": "ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}


def test_own_secret_mode_uses_the_given_secret_and_ca(tmp_path: Path) -> None:
    manifests = render(COMBINATIONS["own-secret"], tmp_path)
    assert "Secret" not in kinds(manifests)
    (hook,) = only(manifests, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["clientConfig"]["caBundle"] == CA_BUNDLE.decode()
    volume = only(manifests, "Deployment")["spec"]["template"]["spec"]["volumes"][0]
    assert volume["secret"]["secretName"] == "my-tls"


# -- the operator Deployment ------------------------------------------------------


def test_operator_runs_restricted_with_the_contract_env(tmp_path: Path) -> None:
    manifests = render({}, tmp_path)
    pod = only(manifests, "Deployment")["spec"]["template"]["spec"]
    container = operator_container(manifests)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    env = env_of(container)
    assert env["DRIFTLINE_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["DRIFTLINE_SIDECAR_IMAGE"] == "ghcr.io/driftline/sidecar:0.1.0"
    assert env["DRIFTLINE_WEBHOOK_HOST"] == "0.0.0.0"
    assert env["DRIFTLINE_METRICS_PORT"] == "9100"
    assert "DRIFTLINE_OTLP_ENDPOINT" not in env
    assert container["image"] == "ghcr.io/driftline/operator:0.1.0"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["webhook-tls"] == env["DRIFTLINE_WEBHOOK_CERT_DIR"]
    # Liveness is Kopf's: the probe asks the port the --liveness flag serves.
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    health = next(p for p in container["ports"] if p["name"] == "health")
    assert health["containerPort"] == 8080
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_env_is_exactly_what_the_operator_reads(tmp_path: Path) -> None:
    from driftline_operator.controller.settings import ENVIRONMENT, OperatorConfig

    for name in ("default", "everything"):
        env = env_of(operator_container(render(COMBINATIONS[name], tmp_path)))
        driftline = {k for k in env if k.startswith("DRIFTLINE_")}
        assert driftline <= set(ENVIRONMENT.values()), driftline - set(ENVIRONMENT.values())
        optional = {"DRIFTLINE_SHARD_NAMESPACES"}  # sharded only: test_shards_*
        optional |= {"DRIFTLINE_EXPLAINER_URL"}  # explainer.enabled only: test_chart_explainer
        optional |= {"DRIFTLINE_OTLP_ENDPOINT"} if name == "default" else set()
        assert set(ENVIRONMENT.values()) - optional <= driftline
    # The values parse as the operator's settings (the cert dir is checked at start-up).
    plain = {
        k: v for k, v in env.items() if isinstance(v, str) and k != "DRIFTLINE_WEBHOOK_CERT_DIR"
    }
    config = OperatorConfig.from_env({**plain, "DRIFTLINE_NAMESPACE": NAMESPACE})
    assert (config.webhook_port, config.metrics_port) == (9443, 9100)
    assert config.sidecar_image == "reg.local/sidecar:dev"


@pytest.mark.parametrize("name", ["default", "namespaced", "everything"])
def test_driftline_operator_accepts_the_args(name: str, tmp_path: Path) -> None:
    from driftline_operator.controller.main import _parser

    args = operator_container(render(COMBINATIONS[name], tmp_path))["args"]
    parsed = _parser().parse_args(args)
    assert parsed.liveness == "http://0.0.0.0:8080/healthz"
    assert parsed.namespace == COMBINATIONS[name].get("watchNamespaces", [])
    assert parsed.debug is (name == "everything")


def test_webhook_path_is_where_kopf_serves_the_injection_handler(tmp_path: Path) -> None:
    # In a child process: importing the handlers registers them with kopf.
    served = subprocess.run(
        [sys.executable, "-c", "from driftline_operator.controller.handlers import WEBHOOK_PATH; print(WEBHOOK_PATH)"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.strip()  # fmt: skip
    (hook,) = only(render({}, tmp_path), "MutatingWebhookConfiguration")["webhooks"]
    assert hook["clientConfig"]["service"]["path"] == served


def test_options_reach_the_operator(tmp_path: Path) -> None:
    manifests = render(COMBINATIONS["everything"], tmp_path)
    container = operator_container(manifests)
    assert env_of(container)["DRIFTLINE_OTLP_ENDPOINT"] == "http://otel:4318"
    assert env_of(container)["DRIFTLINE_SIDECAR_IMAGE"] == "reg.local/sidecar:dev"
    assert "--debug" in container["args"]
    pod = only(manifests, "Deployment")["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"team": "ml"}
    assert pod["spec"]["nodeSelector"] == {"a": "b"}
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    (hook,) = only(manifests, "MutatingWebhookConfiguration")["webhooks"]
    assert (hook["failurePolicy"], hook["timeoutSeconds"]) == ("Fail", 3)


# -- RBAC -------------------------------------------------------------------------


def rules(manifests: list[Manifest]) -> list[Manifest]:
    return [rule for m in manifests if m["kind"] in ("ClusterRole", "Role") for rule in m["rules"]]


def test_rbac_has_no_wildcards_and_no_secrets(
    combination: tuple[str, list[Manifest]],
) -> None:
    _, manifests = combination
    for rule in rules(manifests):
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        assert not {"serviceaccounts", "roles", "clusterroles"} & set(rule["resources"])
        # A no-op PATCH returns any Secret; a created token Secret mints a token.
        assert "secrets" not in rule["resources"], rule
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"])


def grants(role: Manifest) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}  # fmt: skip


def test_cluster_role_grants_what_the_operator_needs(tmp_path: Path) -> None:
    granted = grants(only(render({}, tmp_path), "ClusterRole"))
    needed = {
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("driftline.io", "modelmonitors", "watch"),
        ("driftline.io", "modelmonitors", "patch"),
        ("driftline.io", "modelmonitors/status", "patch"),
        ("", "pods", "list"),
        ("", "configmaps", "create"),
        ("", "configmaps", "delete"),
        ("", "events", "create"),
        ("", "services", "get"),
        ("apps", "deployments/scale", "patch"),
        ("apps", "replicasets", "list"),
        ("gateway.networking.k8s.io", "httproutes", "patch"),
        ("networking.istio.io", "virtualservices", "patch"),
    }
    assert needed <= granted, needed - granted
    # Never more than reading and patching pods: the webhook mutates them in flight.
    assert {v for g, r, v in granted if r == "pods"} == {"get", "list", "watch"}
    # Cluster-wide mode never lists namespaces (Kopf only does for named ones).
    assert not any(r == "namespaces" for _, r, _ in granted)


def test_namespaced_mode_keeps_grants_inside_the_watched_namespaces(tmp_path: Path) -> None:
    manifests = render(COMBINATIONS["namespaced"], tmp_path)
    cluster = grants(only(manifests, "ClusterRole"))
    assert {r for _, r, _ in cluster} == {"customresourcedefinitions", "namespaces"}
    assert {v for _, _, v in cluster} == {"list", "watch"}

    def watched(kind: str) -> list[Manifest]:  # the leader election's pair is the release's
        return [m for m in manifests if m["kind"] == kind
                and not m["metadata"]["name"].endswith("-leader-election")]  # fmt: skip

    roles, bindings = watched("Role"), watched("RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["fraud", "ml"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["fraud", "ml"]
    account = only(manifests, "ServiceAccount")["metadata"]["name"]
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
        ]
        assert binding["roleRef"]["name"] == roles[0]["metadata"]["name"]


def test_replicas_elect_a_leader_through_one_lease_of_the_release(tmp_path: Path) -> None:
    manifests = render({}, tmp_path)
    lease = only(manifests, "Lease")
    assert lease["metadata"]["namespace"] == NAMESPACE
    assert "spec" not in lease, "the holder is the operator's to write, never the chart's"
    env = env_of(operator_container(manifests))
    assert env["DRIFTLINE_LEASE_NAME"] == lease["metadata"]["name"]
    assert env["DRIFTLINE_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    (role,) = [m for m in manifests if m["kind"] == "Role"]
    assert role["metadata"]["namespace"] == NAMESPACE
    # get and update of this one Lease: no create (the chart made it), no other Lease.
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [lease["metadata"]["name"]],
            "verbs": ["get", "update"],
        }
    ]
    (binding,) = [m for m in manifests if m["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == only(manifests, "ServiceAccount")["metadata"]["name"]
    assert not any(r == "leases" for _, r, _ in grants(only(manifests, "ClusterRole")))


def test_two_replicas_roll_and_drain_without_losing_the_webhook(tmp_path: Path) -> None:
    manifests = render({}, tmp_path)
    deployment = only(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    budget = only(manifests, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    pod = deployment["spec"]["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    env = env_of(operator_container(manifests))
    drain = float(env["DRIFTLINE_SHUTDOWN_DRAIN_SECONDS"])
    assert 0 < drain < pod["terminationGracePeriodSeconds"]
    # One replica: no budget (it would block every drain), no anti-affinity needed.
    single = render({"operator": {"replicas": 1}}, tmp_path)
    assert "PodDisruptionBudget" not in kinds(single)
    assert "affinity" not in only(single, "Deployment")["spec"]["template"]["spec"]


def test_shards_each_run_a_deployment_with_a_lease_of_their_own(tmp_path: Path) -> None:
    manifests = render({"operator": {"shards": SHARDS}}, tmp_path)
    deployments = {d["metadata"]["name"]: d for d in manifests if d["kind"] == "Deployment"}
    assert sorted(deployments) == [f"{RELEASE}-driftline-a", f"{RELEASE}-driftline-b"]
    leases = sorted(m["metadata"]["name"] for m in manifests if m["kind"] == "Lease")
    assert leases == [f"{RELEASE}-driftline-a-leader", f"{RELEASE}-driftline-b-leader"]
    (role,) = [m for m in manifests if m["kind"] == "Role"]
    assert role["rules"][0]["resourceNames"] == leases
    for shard in SHARDS:
        deployment = deployments[f"{RELEASE}-driftline-{shard['name']}"]
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        assert env["DRIFTLINE_LEASE_NAME"] == f"{RELEASE}-driftline-{shard['name']}-leader"
        assert env["DRIFTLINE_SHARD_NAMESPACES"].split(",") == shard["namespaces"]
        assert deployment["spec"]["replicas"] == shard.get("replicas", 2)
        # The operator reads the env as this shard's namespaces.
        from driftline_operator.controller.settings import OperatorConfig

        config = OperatorConfig.from_env(
            {"DRIFTLINE_SHARD_NAMESPACES": env["DRIFTLINE_SHARD_NAMESPACES"]}
        )
        assert list(config.shard_namespaces) == shard["namespaces"]
        # Its own pods only: Deployments and budgets never select each other's pods.
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector["driftline.io/shard"] == shard["name"]
        budgets = [m for m in manifests if m["kind"] == "PodDisruptionBudget"
                   and m["metadata"]["name"] == deployment["metadata"]["name"]]  # fmt: skip
        assert budgets and budgets[0]["spec"]["selector"]["matchLabels"] == selector
    # Every shard's pods serve the webhook: the Service selects them all.
    service = next(m for m in manifests if m["kind"] == "Service")
    for deployment in deployments.values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()


def test_a_namespace_in_two_shards_is_refused(tmp_path: Path) -> None:
    shards = [{"name": "a", "namespaces": ["ml"]}, {"name": "b", "namespaces": ["ml"]}]
    result = helm(
        "template", RELEASE, str(CHART), *values_args({"operator": {"shards": shards}}, tmp_path)
    )
    assert result.returncode != 0
    assert "namespace ml is in shards a and b" in result.stderr


# -- ServiceMonitor ---------------------------------------------------------------


def test_service_monitor_scrapes_the_metrics_port(tmp_path: Path) -> None:
    manifests = render({}, tmp_path)
    assert "ServiceMonitor" not in kinds(manifests)
    manifests = render(COMBINATIONS["service-monitor"], tmp_path)
    monitor = only(manifests, "ServiceMonitor")
    service = only(manifests, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "30s"
