"""The few Kubernetes API calls the handlers make, as plain dicts in and out.

Kopf talks to the API for its own watching and patching; these calls are the
operator's own (ConfigMaps, pods, status from the analysis loop). They use the
official client, synchronously: kopf runs sync handlers in a thread pool, and
the analysis loop wraps them in `asyncio.to_thread`. Responses are read raw
(`_preload_content=False`), so callers get the JSON the server sent, not the
client's models.
"""

from __future__ import annotations

import json
from typing import Any

import kubernetes
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from driftline_operator.crd import GROUP, PLURAL, VERSION, LabelSelector

# A JSON merge patch: plain nested dicts, lists replaced whole (RFC 7386).
MERGE_PATCH = "application/merge-patch+json"


def connect() -> ApiClient:
    """A client configured in-cluster (service account) or from KUBECONFIG."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    return ApiClient(configuration)


def selector_query(selector: LabelSelector) -> str:
    """The selector in the API's query syntax (app=fraud,tier in (a,b),!legacy)."""
    terms = [f"{key}={value}" for key, value in sorted(selector.match_labels.items())]
    for requirement in selector.match_expressions:
        values = ",".join(requirement.values)
        terms.append(
            {
                "In": f"{requirement.key} in ({values})",
                "NotIn": f"{requirement.key} notin ({values})",
                "Exists": requirement.key,
                "DoesNotExist": f"!{requirement.key}",
            }[requirement.operator]
        )
    return ",".join(terms)


def _json(response: Any) -> Any:
    return json.loads(response.data)


def read_config_map(api: ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return _json(
            CoreV1Api(api).read_namespaced_config_map(name, namespace, _preload_content=False)
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def read_service(api: ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return _json(
            CoreV1Api(api).read_namespaced_service(name, namespace, _preload_content=False)
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def apply_config_map(api: ApiClient, manifest: dict[str, Any]) -> dict[str, Any]:
    """Create the ConfigMap, or replace its data, labels and owners if it exists."""
    core = CoreV1Api(api)
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    try:
        return _json(core.create_namespaced_config_map(namespace, manifest, _preload_content=False))
    except ApiException as error:
        if error.status != 409:
            raise
    patch = {
        "metadata": {
            "labels": manifest["metadata"].get("labels"),
            "ownerReferences": manifest["metadata"].get("ownerReferences"),
        },
        "data": manifest.get("data"),
    }
    return _json(
        core.patch_namespaced_config_map(
            name, namespace, patch, _content_type=MERGE_PATCH, _preload_content=False
        )
    )


def delete_config_map(api: ApiClient, namespace: str, name: str) -> bool:
    """Delete it; False when it was already gone."""
    try:
        CoreV1Api(api).delete_namespaced_config_map(name, namespace, _preload_content=False)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def list_pods(api: ApiClient, namespace: str, selector: LabelSelector) -> list[dict[str, Any]]:
    response = CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=selector_query(selector), _preload_content=False
    )
    return list(_json(response).get("items") or [])


def _drop_empty_strings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_empty_strings(v) for k, v in value.items() if v != ""}
    if isinstance(value, list):
        return [_drop_empty_strings(v) for v in value]
    return value


CONFLICT_RETRIES = 5


def get_monitor(api: ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return _json(
            CustomObjectsApi(api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _preload_content=False
            )
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def patch_monitor_status(
    api: ApiClient,
    namespace: str,
    name: str,
    status: dict[str, Any],
    *,
    resource_version: str | None = None,
) -> dict[str, Any]:
    """Merge `status` into the ModelMonitor's status subresource.

    With `resource_version` the write only lands on the object as it was
    read (what a decision was computed from); a conflict (409: someone wrote
    in between) is retried against the current version, because the status
    reports what was already done. Empty strings are left out: a real
    apiserver (seen on v1.20) turns "" in a merge patch of a custom resource
    into null, which the CRD's string schema then refuses; an absent optional
    field means the same.
    """
    status = _drop_empty_strings(status)
    for _ in range(CONFLICT_RETRIES):
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            return _json(
                CustomObjectsApi(api).patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    body,
                    _content_type=MERGE_PATCH,
                    _preload_content=False,
                )
            )
        except ApiException as error:
            if error.status != 409 or resource_version is None:
                raise
            current = get_monitor(api, namespace, name)
            if current is None:
                raise
            resource_version = current["metadata"]["resourceVersion"]
    raise RuntimeError(
        f"ModelMonitor {namespace}/{name}: {CONFLICT_RETRIES} conflicting status writes in a row"
    )


def remove_monitor_annotation(api: ApiClient, namespace: str, name: str, key: str) -> None:
    """Remove one annotation (a one-shot control that has been acted on)."""
    CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {"metadata": {"annotations": {key: None}}},
        _content_type=MERGE_PATCH,
        _preload_content=False,
    )


def apply_secret(api: ApiClient, manifest: dict[str, Any]) -> None:
    """Create the Secret, or overwrite its data if it exists.

    Write-only on purpose: the operator never reads Secrets (its RBAC grants
    create and patch on them, not get), so whatever it puts there it can
    compute again.
    """
    core = CoreV1Api(api)
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    try:
        core.create_namespaced_secret(namespace, manifest, _preload_content=False)
        return
    except ApiException as error:
        if error.status != 409:
            raise
    patch = {
        "metadata": {
            "labels": manifest["metadata"].get("labels"),
            "ownerReferences": manifest["metadata"].get("ownerReferences"),
        },
        "stringData": manifest.get("stringData"),
    }
    core.patch_namespaced_secret(
        name, namespace, patch, _content_type=MERGE_PATCH, _preload_content=False
    )
