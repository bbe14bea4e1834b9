"""Sidecar injection: the JSON patch applied to real pod manifests gives valid
pods with the sidecar wired as DESIGN.md says."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest

from driftline_operator.api.names import CONFIG_PATH
from driftline_operator.api.selectors import selects
from driftline_operator.api.spec import LabelSelector, ModelMonitorSpec
from driftline_operator.controller import manifests
from driftline_operator.webhook import inject
from driftline_operator.webhook.inject import InjectionError, InjectSettings, mutate
from driftline_operator.webhook.sidecar import reference_profile_path
from driftline_sidecar import main as sidecar_main

SETTINGS = InjectSettings(sidecar_image="ghcr.io/driftline/sidecar:0.1.0")
SVC_NAME = re.compile(r"^(?=.{1,15}$)(?=.*[a-z])(?!.*--)[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def monitor(**changes: Any) -> ModelMonitorSpec:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "fraud"}},
        "model": {"name": "fraud"},
        "reference": {"configMapRef": {"name": "fraud-ref"}},
    }
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return ModelMonitorSpec.model_validate(spec)


def model_container(**extra: Any) -> dict[str, Any]:
    return {
        "name": "model",
        "image": "ghcr.io/example/fraud:1.0",
        "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}},
        "livenessProbe": {"tcpSocket": {"port": "http"}},
        **extra,
    }


def pod(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A pod as a ReplicaSet creates it: generateName, labels, no annotations."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "fraud-7d9c8b-",
            "namespace": "ml",
            "labels": {"app": "fraud", "app.kubernetes.io/version": "1.0"},
        },
        "spec": {"containers": list(containers) or [model_container()], **spec},
    }


def injected(original: dict[str, Any], spec: ModelMonitorSpec | None = None, **kw: Any):
    """Apply mutate's patch to a copy and check the result is a valid Pod."""
    patch = mutate(
        original,
        monitor_name="fraud",
        spec=spec or monitor(),
        settings=kw.pop("settings", SETTINGS),
    )
    result = jsonpatch.apply_patch(original, patch)
    kubernetes_validate.validate(result, "1.30", strict=True)
    check_pod_rules(result)
    return result, patch


def check_pod_rules(result: dict[str, Any]) -> None:
    """What the apiserver checks beyond the schema: unique, well-formed port
    names and numbers, unique container and volume names, mounts of volumes that exist."""
    containers = result["spec"]["containers"] + result["spec"].get("initContainers", [])
    names = [p["name"] for c in containers for p in c.get("ports", []) if "name" in p]
    assert len(names) == len(set(names)), names
    assert all(SVC_NAME.match(n) for n in names), names
    numbers = [p["containerPort"] for c in result["spec"]["containers"] for p in c.get("ports", [])]
    assert len(numbers) == len(set(numbers)), numbers
    assert len({c["name"] for c in containers}) == len(containers)
    volumes = [v["name"] for v in result["spec"].get("volumes", [])]
    assert len(volumes) == len(set(volumes))
    for c in containers:
        for mount in c.get("volumeMounts", []):
            assert mount["name"] in volumes, mount


def sidecar_of(result: dict[str, Any]) -> dict[str, Any]:
    [sidecar] = [c for c in result["spec"]["containers"] if c["name"] == "driftline-sidecar"]
    return sidecar


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# -- selection -------------------------------------------------------------------


def selector(**fields: Any) -> LabelSelector:
    return LabelSelector.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "labels", "expected"),
    [
        ({"matchLabels": {"app": "fraud"}}, {"app": "fraud", "x": "y"}, True),
        ({"matchLabels": {"app": "fraud"}}, {"app": "spam"}, False),
        ({"matchLabels": {"app": "fraud", "tier": "ml"}}, {"app": "fraud"}, False),
        (
            {"matchExpressions": [{"key": "env", "operator": "In", "values": ["a", "b"]}]},
            {"env": "b"},
            True,
        ),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["a"]}]}, {}, False),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["a"]}]},
            {"env": "a"},
            False,
        ),
        ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, {"env": ""}, True),
        ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, {}, True),
        ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, {"env": "a"}, False),
        (
            {
                "matchLabels": {"app": "fraud"},
                "matchExpressions": [{"key": "track", "operator": "NotIn", "values": ["canary"]}],
            },
            {"app": "fraud", "track": "canary"},
            False,
        ),
    ],
)
def test_selects_like_kubernetes(fields: dict[str, Any], labels: dict[str, str], expected: bool):
    assert selects(selector(**fields), labels) is expected


def test_opt_out_by_annotation_or_label():
    opted = pod()
    opted["metadata"]["annotations"] = {"driftline.io/inject": "false"}
    assert inject.opted_out(opted)
    assert mutate(opted, monitor_name="fraud", spec=monitor(), settings=SETTINGS) == []
    labelled = pod()
    labelled["metadata"]["labels"]["driftline.io/inject"] = "false"
    assert inject.opted_out(labelled)
    assert not inject.opted_out(pod())


# -- the named port (the usual case) -------------------------------------------


def test_named_port_is_taken_over():
    original = pod()
    result, _ = injected(original)
    model, sidecar = result["spec"]["containers"]
    assert model["ports"] == [{"name": "http-model", "containerPort": 8000, "protocol": "TCP"}]
    # The model's probes still check the model, through its renamed port.
    assert model["readinessProbe"]["httpGet"]["port"] == "http-model"
    assert model["livenessProbe"]["tcpSocket"]["port"] == "http-model"
    assert sidecar["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "driftline-admin", "containerPort": 9090, "protocol": "TCP"},
    ]
    assert sidecar["args"] == [
        "--config", "/etc/driftline/sidecar.yaml",
        "--upstream", "http://127.0.0.1:8000",
        "--listen", "0.0.0.0:8080",
        "--admin", "0.0.0.0:9090",
    ]  # fmt: skip
    assert original == pod()  # the input is not modified


def test_a_target_knows_its_models_own_port_from_the_injected_sidecar():
    """The explainer asks the model there, never through the proxy."""
    result, _ = injected(pod())
    result["metadata"]["name"] = "fraud-0"
    result["status"] = {"phase": "Running", "podIP": "10.0.0.7"}
    [target] = inject.pod_targets([result], monitor())
    assert (target.model_host, target.model_port) == ("10.0.0.7", 8000)
    result["spec"]["containers"][1]["args"] = ["--config", "/etc/driftline/sidecar.yaml"]
    assert inject.pod_targets([result], monitor())[0].model_port is None


def test_sidecar_container_is_locked_down():
    result, _ = injected(pod())
    sidecar = sidecar_of(result)
    assert sidecar["image"] == SETTINGS.sidecar_image
    assert sidecar["imagePullPolicy"] == "IfNotPresent"
    assert sidecar["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # A request and no CPU limit: throttling a proxy multiplies tail latency.
    assert sidecar["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"memory": "256Mi"},
    }
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "driftline-admin"}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "driftline-admin"}


def test_config_reference_and_log_are_mounted():
    result, _ = injected(pod())
    mounts = {m["mountPath"]: m for m in sidecar_of(result)["volumeMounts"]}
    assert mounts["/etc/driftline"]["readOnly"] is True
    assert "/var/log/driftline" in mounts
    assert "/tmp" in mounts  # the root filesystem is read-only
    volumes = {v["name"]: v for v in result["spec"]["volumes"]}
    config, reference = volumes[mounts["/etc/driftline"]["name"]]["projected"]["sources"]
    assert config["configMap"] == {
        "name": "driftline-fraud-sidecar",
        "items": [{"key": "sidecar.yaml", "path": "sidecar.yaml"}],
    }
    assert reference["configMap"] == {
        "name": "fraud-ref",
        "items": [{"key": "profile.json", "path": "reference/profile.json"}],
        "optional": True,
    }
    # The rendered config points at the file the volume provides.
    spec = monitor()
    profile = manifests.sidecar_config(spec, profile_path=reference_profile_path(spec))
    assert profile.profile_path == "/etc/driftline/" + reference["configMap"]["items"][0]["path"]
    assert profile.prediction_log.path.startswith(mounts["/var/log/driftline"]["mountPath"])
    assert "emptyDir" in volumes[mounts["/var/log/driftline"]["name"]]


def test_without_a_reference_only_the_config_is_projected():
    spec = ModelMonitorSpec.model_validate(
        {"selector": {"matchLabels": {"app": "fraud"}}, "model": {"name": "fraud"}}
    )
    result, _ = injected(pod(), spec)
    (config,) = next(v for v in result["spec"]["volumes"] if "projected" in v)["projected"][
        "sources"
    ]
    assert config["configMap"]["name"] == "driftline-fraud-sidecar"


def test_env_carries_identity_and_otel_settings():
    env = env_of(sidecar_of(injected(pod())[0]))
    label = "metadata.labels['{}']".format
    assert env["DRIFTLINE_MODEL_VERSION"] == {
        "fieldRef": {"fieldPath": label("app.kubernetes.io/version")}
    }
    assert env["DRIFTLINE_ROLE"] == {"fieldRef": {"fieldPath": label("driftline.io/role")}}
    assert env["DRIFTLINE_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["OTEL_SERVICE_NAME"] == "fraud"
    assert "k8s.pod.name=$(DRIFTLINE_POD_NAME)" in env["OTEL_RESOURCE_ATTRIBUTES"]
    assert "driftline.monitor=fraud" in env["OTEL_RESOURCE_ATTRIBUTES"]
    assert env["OTEL_TRACES_EXPORTER"] == "none"  # nowhere to send spans by default
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    assert env["OTEL_PROPAGATORS"] == "tracecontext,baggage"
    # $(VAR) only expands variables defined earlier in the list.
    names = [e["name"] for e in sidecar_of(injected(pod())[0])["env"]]
    assert names.index("DRIFTLINE_POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")


def test_spec_settings_win_over_operator_defaults():
    spec = monitor(
        model__version="2.3",
        sidecar__image="registry.local/sidecar:dev",
        sidecar__otlpEndpoint="http://collector:4318",
    )
    settings = InjectSettings(
        sidecar_image="x/default:1", pull_policy="Always", otlp_endpoint="http://other:4318"
    )
    sidecar = sidecar_of(injected(pod(), spec, settings=settings)[0])
    env = env_of(sidecar)
    assert sidecar["image"] == "registry.local/sidecar:dev"
    assert sidecar["imagePullPolicy"] == "Always"
    assert env["DRIFTLINE_MODEL_VERSION"] == "2.3"
    assert env["OTEL_TRACES_EXPORTER"] == "otlp"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    operator_wide = env_of(sidecar_of(injected(pod(), settings=settings)[0]))
    assert operator_wide["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://other:4318"


def test_metadata_maps_are_created_when_absent():
    original = pod()
    del original["metadata"]["labels"]
    result, patch = injected(original)
    assert {
        "op": "add",
        "path": "/metadata/annotations",
        "value": result["metadata"]["annotations"],
    } in patch
    assert result["metadata"]["labels"] == {"driftline.io/monitored": "true"}
    assert result["metadata"]["annotations"] == {
        "driftline.io/injected": "true",
        "driftline.io/monitor": "fraud",
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9090",
        "prometheus.io/path": "/metrics",
    }


def test_existing_maps_and_volumes_are_extended_with_escaped_keys():
    original = pod(volumes=[{"name": "models", "emptyDir": {}}])
    original["metadata"]["annotations"] = {"team": "risk"}
    result, patch = injected(original)
    paths = [op["path"] for op in patch]
    assert "/metadata/annotations/driftline.io~1injected" in paths
    assert "/metadata/labels/driftline.io~1monitored" in paths
    assert "/spec/volumes/-" in paths
    assert result["metadata"]["annotations"]["team"] == "risk"
    assert result["metadata"]["labels"]["app"] == "fraud"
    assert result["spec"]["volumes"][0] == {"name": "models", "emptyDir": {}}
    assert len(result["spec"]["volumes"]) == 4


def test_pointer_tokens_escape_tilde_before_slash():
    document = {"metadata": {"annotations": {}}}
    key = "example.com/a~b"
    patch = [{"op": "add", "path": "/metadata/annotations/" + inject._escape(key), "value": "v"}]
    assert jsonpatch.apply_patch(document, patch)["metadata"]["annotations"] == {key: "v"}


def test_model_scrape_hints_are_left_alone():
    original = pod()
    original["metadata"]["annotations"] = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8000",
    }
    result, _ = injected(original)
    assert result["metadata"]["annotations"]["prometheus.io/port"] == "8000"
    assert "prometheus.io/path" not in result["metadata"]["annotations"]


# -- other pod shapes -------------------------------------------------------------


def test_numbered_unnamed_port_gets_a_proxy_port_of_its_own():
    container = model_container(ports=[{"containerPort": 8000}], readinessProbe=None)
    del container["readinessProbe"], container["livenessProbe"]
    result, _ = injected(pod(container), monitor(model__port=8000))
    model, sidecar = result["spec"]["containers"]
    assert model["ports"] == [{"containerPort": 8000}]
    assert sidecar["ports"][0] == {
        "name": "driftline-proxy",
        "containerPort": 8080,
        "protocol": "TCP",
    }
    assert "http://127.0.0.1:8000" in sidecar["args"]


def test_numbered_port_that_has_a_name_is_taken_over_by_name():
    result, _ = injected(pod(), monitor(model__port="8000"))  # a digit string is a number
    model, sidecar = result["spec"]["containers"]
    assert model["ports"][0]["name"] == "http-model"
    assert sidecar["ports"][0]["name"] == "http"


def test_undeclared_port_number_on_a_single_container():
    container = model_container()
    del container["ports"], container["readinessProbe"], container["livenessProbe"]
    result, _ = injected(pod(container), monitor(model__port=5000))
    assert "http://127.0.0.1:5000" in sidecar_of(result)["args"]


def test_model_in_the_second_of_two_containers_and_taken_ports_avoided():
    logger = {
        "name": "logger",
        "image": "fluent/fluent-bit:3",
        "ports": [{"name": "metrics", "containerPort": 8080}],
    }
    model = model_container(ports=[{"name": "predict", "containerPort": 8081}])
    del model["readinessProbe"], model["livenessProbe"]
    result, _ = injected(pod(logger, model), monitor(model__port="predict"))
    assert result["spec"]["containers"][0] == logger
    assert result["spec"]["containers"][1]["ports"][0]["name"] == "predict-model"
    proxy = sidecar_of(result)["ports"][0]
    assert proxy == {"name": "predict", "containerPort": 8082, "protocol": "TCP"}


def test_explicit_container_name_picks_the_container():
    first = model_container(name="a", ports=[{"name": "http", "containerPort": 7000}])
    second = model_container(name="b", ports=[{"name": "web", "containerPort": 7001}])
    result, _ = injected(pod(first, second), monitor(model__container="b", model__port="web"))
    assert "http://127.0.0.1:7001" in sidecar_of(result)["args"]


def test_init_container_ports_are_not_reused():
    init = {
        "name": "warmup",
        "image": "busybox:1.36",
        "ports": [{"name": "warm", "containerPort": 8080}],
    }
    result, _ = injected(pod(initContainers=[init]))
    assert result["spec"]["initContainers"] == [init]
    assert sidecar_of(result)["ports"][0]["containerPort"] == 8081


def test_long_and_clashing_port_names_are_renamed_validly():
    model = model_container(
        ports=[
            {"name": "inference-https", "containerPort": 8443},
            {"name": "inference-model", "containerPort": 9000},
        ]
    )
    del model["readinessProbe"], model["livenessProbe"]
    result, _ = injected(pod(model), monitor(model__port="inference-https"))
    renamed = result["spec"]["containers"][0]["ports"][0]["name"]
    assert renamed == "inferenc-model2"
    assert renamed not in {"inference-https", "inference-model"}
    assert inject.renamed_port("http", set()) == "http-model"
    assert inject.renamed_port("http", {"http-model"}) == "http-model2"
    assert inject.renamed_port("a-b-c-d-e-f-g-h", set()) == "a-b-c-d-e-model"


def test_an_injected_pod_gets_no_ops():
    result, _ = injected(pod())
    assert inject.is_injected(result)
    assert mutate(result, monitor_name="fraud", spec=monitor(), settings=SETTINGS) == []
    # A sidecar container alone (annotations stripped by a copy-paste) also counts.
    stripped = copy.deepcopy(result)
    del stripped["metadata"]["annotations"]
    assert mutate(stripped, monitor_name="fraud", spec=monitor(), settings=SETTINGS) == []


# -- errors that name the pod, the field and the fix -------------------------------


def test_missing_port_names_the_pod_and_the_ports():
    with pytest.raises(InjectionError) as error:
        mutate(pod(), monitor_name="fraud", spec=monitor(model__port="grpc"), settings=SETTINGS)
    message = str(error.value)
    assert "pod ml/fraud-7d9c8b-<generated>" in message
    assert "'grpc'" in message and "spec.model.port" in message
    assert "model:http/8000" in message


def test_missing_container_is_named():
    with pytest.raises(InjectionError, match=r"no container 'server' \(spec.model.container\)"):
        mutate(
            pod(), monitor_name="fraud", spec=monitor(model__container="server"), settings=SETTINGS
        )


def test_undeclared_number_with_two_containers_asks_for_the_container():
    two = pod(model_container(name="a"), model_container(name="b", ports=[]))
    with pytest.raises(InjectionError, match=r"spec\.model\.container"):
        mutate(two, monitor_name="fraud", spec=monitor(model__port=5000), settings=SETTINGS)


def test_admin_port_clash_is_refused():
    with pytest.raises(InjectionError, match=r"spec\.sidecar\.adminPort"):
        mutate(
            pod(), monitor_name="fraud", spec=monitor(sidecar__adminPort=8000), settings=SETTINGS
        )


def test_requests_above_limits_are_refused():
    spec = monitor(
        sidecar__resources={"requests": {"memory": "1Gi"}, "limits": {"memory": "256Mi"}}
    )
    with pytest.raises(InjectionError, match=r"requests\.memory 1Gi exceeds the limit 256Mi"):
        mutate(pod(), monitor_name="fraud", spec=spec, settings=SETTINGS)


def test_volume_name_clash_is_refused():
    clashing = pod(volumes=[{"name": "driftline-log", "emptyDir": {}}])
    with pytest.raises(InjectionError, match="driftline-log"):
        mutate(clashing, monitor_name="fraud", spec=monitor(), settings=SETTINGS)


# -- the sidecar accepts what it is given ------------------------------------------


def test_the_sidecar_cli_accepts_the_injected_args(tmp_path: Path):
    spec = monitor()
    result, _ = injected(pod(), spec)
    config_file = tmp_path / "sidecar.yaml"
    config_file.write_text(
        manifests.config_map(
            "fraud",
            "ml",
            spec,
            owner={"metadata": {"name": "fraud", "uid": "u-1"}},
            admin_token="t",
        )["data"]["sidecar.yaml"]
    )
    args = sidecar_of(result)["args"]
    args = [str(config_file) if a == CONFIG_PATH else a for a in args]
    config = sidecar_main.build_config(sidecar_main.parse_args(args))
    assert config.upstream == "http://127.0.0.1:8000"
    assert config.listen == "0.0.0.0:8080"
    assert config.admin == "0.0.0.0:9090"
    assert config.model.name == "fraud"
