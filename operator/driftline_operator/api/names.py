"""The names Driftline gives things: the resource, labels and annotations,
owned objects, the sidecar container and its files in the pod.

Every part that writes or reads one of these imports it from here, so the
webhook, the controller, the rollout and the chart tests cannot disagree.
"""

from __future__ import annotations

import hashlib

# -- the resource --------------------------------------------------------------
GROUP = "driftline.io"
VERSION = "v1alpha1"
KIND = "ModelMonitor"
PLURAL = "modelmonitors"
SINGULAR = "modelmonitor"
SHORT_NAMES = ("mm",)

# -- labels and annotations ----------------------------------------------------
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "driftline"
VERSION_LABEL = "app.kubernetes.io/version"
MONITOR_LABEL = "driftline.io/monitor"
ROLE_LABEL = "driftline.io/role"  # canary / shadow pods carry it
MONITORED_LABEL = "driftline.io/monitored"  # lets the operator list monitored pods cheaply
INJECT_ANNOTATION = "driftline.io/inject"  # "false" opts a pod out (label or annotation)
INJECTED_ANNOTATION = "driftline.io/injected"
MONITOR_ANNOTATION = "driftline.io/monitor"
CONTROL_ANNOTATION = "driftline.io/rollout"  # pause | resume | promote | abort

# -- the sidecar in the pod ----------------------------------------------------
SIDECAR_NAME = "driftline-sidecar"
ADMIN_PORT_NAME = "driftline-admin"
CONFIG_VOLUME = "driftline-config"
LOG_VOLUME = "driftline-log"
TMP_VOLUME = "driftline-tmp"
CONFIG_DIR = "/etc/driftline"
CONFIG_KEY = "sidecar.yaml"  # the key of the sidecar ConfigMap
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
REFERENCE_SUBDIR = "reference"
LOG_DIR = "/var/log/driftline"  # a writable emptyDir: the root filesystem is read-only
PREDICTION_LOG_PATH = f"{LOG_DIR}/predictions.jsonl"

# -- owned objects -------------------------------------------------------------
_MAX_NAME = 253  # a ConfigMap name is a DNS subdomain
_MAX_LABEL_VALUE = 63


def _shortened(text: str, room: int) -> str:
    """text if it fits in room characters, else a prefix and a hash of the whole."""
    if len(text) <= room:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{text[: room - len(digest) - 1].rstrip('-.')}-{digest}"


def config_map_name(monitor_name: str) -> str:
    """`driftline-<monitor>-sidecar` (a hash stands in for the end of very long names)."""
    room = _MAX_NAME - len("driftline--sidecar")
    return f"driftline-{_shortened(monitor_name, room)}-sidecar"


def alert_rules_name(monitor_name: str) -> str:
    """`driftline-<monitor>-alerts`, the monitor's PrometheusRule."""
    room = _MAX_NAME - len("driftline--alerts")
    return f"driftline-{_shortened(monitor_name, room)}-alerts"


def monitor_label_value(monitor_name: str) -> str:
    """The monitor's name as a label value (at most 63 characters)."""
    return _shortened(monitor_name, _MAX_LABEL_VALUE)
