"""The PrometheusRule the operator owns per ModelMonitor, and the condition
that says whether it is in place.

The rules are ``analysis.rules``' (the same ``driftline rules`` prints). The
object is written on every reconcile (create, spec change, resume), owned by
the monitor so it goes when the monitor does. Without the prometheus-operator's
CRD the API answers 404 for the kind: the condition says so and how to load
the rules by hand; the rest of the monitor works as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from driftline_operator import kube
from driftline_operator.analysis.rules import rule_groups
from driftline_operator.api.names import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MONITOR_LABEL,
    alert_rules_name,
    monitor_label_value,
)
from driftline_operator.api.spec import ModelMonitorSpec
from driftline_operator.api.status import Condition, condition
from driftline_operator.controller.manifests import owner_reference

PROMETHEUS_RULES: Final = kube.Resource(
    "monitoring.coreos.com/v1", "prometheusrules", "PrometheusRule"
)

ALERT_RULES: Final = "AlertRules"  # the condition's type
APPLIED: Final = "PrometheusRuleApplied"
CRD_MISSING: Final = "PrometheusRuleCRDMissing"
FORBIDDEN: Final = "PrometheusRuleForbidden"


def prometheus_rule(
    monitor_name: str,
    namespace: str,
    spec: ModelMonitorSpec,
    *,
    owner: Mapping[str, Any],
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The monitor's PrometheusRule; ``labels`` are added for the Prometheus'
    ruleSelector (Driftline's own labels win)."""
    return {
        "apiVersion": PROMETHEUS_RULES.group_version,
        "kind": PROMETHEUS_RULES.kind,
        "metadata": {
            "name": alert_rules_name(monitor_name),
            "namespace": namespace,
            "labels": {
                **(labels or {}),
                MANAGED_BY_LABEL: MANAGED_BY,
                MONITOR_LABEL: monitor_label_value(monitor_name),
            },
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {"groups": rule_groups(spec, namespace=namespace, monitor=monitor_name)},
    }


def apply_alert_rules(
    api: ApiClient,
    monitor_name: str,
    namespace: str,
    spec: ModelMonitorSpec,
    *,
    owner: Mapping[str, Any],
    labels: Mapping[str, str] | None = None,
) -> Condition:
    """Create or update the monitor's PrometheusRule; the AlertRules condition."""
    manifest = prometheus_rule(monitor_name, namespace, spec, owner=owner, labels=labels)
    where = f"PrometheusRule {namespace}/{manifest['metadata']['name']}"
    try:
        kube.apply(api, PROMETHEUS_RULES, manifest)
    except ApiException as error:
        if error.status == 404:
            return condition(
                ALERT_RULES,
                "False",
                reason=CRD_MISSING,
                message=(
                    "the cluster has no PrometheusRule kind (monitoring.coreos.com/v1, the "
                    "Prometheus Operator's CRD); load the alerts into Prometheus yourself: "
                    "driftline rules MONITOR.yaml > rules.yaml"
                ),
            )
        if error.status == 403:
            return condition(
                ALERT_RULES,
                "False",
                reason=FORBIDDEN,
                message=f"{where}: the operator may not write it ({error.reason})",
            )
        raise
    groups = manifest["spec"]["groups"]
    count = sum(len(g["rules"]) for g in groups)
    return condition(
        ALERT_RULES,
        "True",
        reason=APPLIED,
        message=f"{where}: {count} rules in {len(groups)} groups",
    )
