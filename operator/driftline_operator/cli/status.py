"""``driftline status [-n NS | -A] [MONITOR] [--watch]``, also ``kubectl driftline status``.

Without MONITOR: one line per ModelMonitor (phase, traffic, p95, error rate,
drift, SLOs, rollout). With MONITOR: everything its status holds (windows per
role, drift, data quality, each SLO with its error budget left, the rollout's
step, weight and last decision) and its Events, oldest first: the history of
its decisions. Reads what the operator wrote (status and Events) through the
Kubernetes API; judges nothing itself.

Rich tables when stdout is a terminal, plain aligned text otherwise (pipes,
``watch``, CI logs). ``--watch`` redraws every ``--interval``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

import kubernetes
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from rich.console import Console
from rich.live import Live

from driftline_operator import kube
from driftline_operator.api.names import GROUP, PLURAL, VERSION
from driftline_operator.api.values import parse_duration
from driftline_operator.cli.errors import UsageError
from driftline_operator.cli.status_view import View, detail, event_time, overview, plain, rich_group


class StatusError(UsageError):
    """The API could not be read; the message says what and why."""


# -- reading ---------------------------------------------------------------------


def default_namespace() -> str:
    try:
        _, context = kubernetes.config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
    except (kubernetes.config.ConfigException, FileNotFoundError):
        return "default"
    found: dict[str, Any] = context or {}
    return str(found.get("context", {}).get("namespace") or "default")


class Reader:
    def __init__(self, api: ApiClient) -> None:
        self.custom = CustomObjectsApi(api)
        self.core = CoreV1Api(api)

    def monitors(self, namespace: str | None) -> list[dict[str, Any]]:
        try:
            if namespace is None:
                found = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
            else:
                found = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
            found = cast(dict[str, Any], found)  # custom objects come back as plain JSON
        except ApiException as error:
            raise StatusError(_why("list ModelMonitors", error)) from None
        items: list[dict[str, Any]] = found.get("items") or []
        return sorted(items, key=lambda m: (m["metadata"]["namespace"], m["metadata"]["name"]))

    def monitor(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            found = cast(
                dict[str, Any],
                self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name),
            )
        except ApiException as error:
            if error.status == 404:
                raise StatusError(f"ModelMonitor {namespace}/{name} does not exist") from None
            raise StatusError(_why(f"read ModelMonitor {namespace}/{name}", error)) from None
        return found

    def events(self, namespace: str, name: str, uid: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind=ModelMonitor,involvedObject.name={name}"
        try:
            answer = self.core.list_namespaced_event(namespace, field_selector=selector)
        except ApiException as error:
            raise StatusError(_why(f"list the Events of {namespace}/{name}", error)) from None
        serialize = self.core.api_client.sanitize_for_serialization
        events: list[dict[str, Any]] = [serialize(e) for e in answer.items]
        # Only this incarnation's: a deleted and recreated monitor has another uid.
        mine = [e for e in events if (e.get("involvedObject") or {}).get("uid") in (uid, None)]
        return sorted(mine, key=event_time)


def _why(what: str, error: ApiException) -> str:
    return f"cannot {what}: HTTP {error.status} {error.reason}"


def snapshot_view(reader: Reader, args: argparse.Namespace) -> View:
    if args.monitor:
        namespace = args.namespace or default_namespace()
        body = reader.monitor(namespace, args.monitor)
        uid = body["metadata"].get("uid", "")
        return detail(body, reader.events(namespace, args.monitor, uid))
    namespace = None if args.all_namespaces else (args.namespace or default_namespace())
    return overview(reader.monitors(namespace), namespaces=namespace is None)


# -- the command -----------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Monitors and rollouts at a glance, from what the operator wrote."
    parser.add_argument("monitor", nargs="?", help="one ModelMonitor, in detail")
    parser.add_argument("-n", "--namespace", help="default: the kubeconfig context's")
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    parser.add_argument("-w", "--watch", action="store_true", help="refresh until interrupted")
    parser.add_argument("--interval", default="2s", help="--watch refresh period (default 2s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        interval = parse_duration(args.interval)
    except ValueError as error:
        raise StatusError(f"--interval: {error}") from None
    if args.monitor and args.all_namespaces:
        raise StatusError("give a MONITOR with -n NAMESPACE, not with -A")
    try:
        api = kube.connect()
    except (kubernetes.config.ConfigException, OSError) as error:
        raise StatusError(f"no Kubernetes API to ask: {error}") from None
    reader = Reader(api)
    terminal = sys.stdout.isatty()
    try:
        if not args.watch:
            _show(snapshot_view(reader, args), terminal=terminal)
        elif terminal:
            _watch_live(reader, args, interval)
        else:
            _watch_plain(reader, args, interval)
    except KeyboardInterrupt:
        pass
    finally:
        api.close()  # type: ignore[no-untyped-call]
    return 0


def _show(view: View, *, terminal: bool) -> None:
    if terminal:
        Console().print(rich_group(view))
    else:
        sys.stdout.write(plain(view))


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _watch_live(reader: Reader, args: argparse.Namespace, interval: float) -> None:
    with Live(rich_group(snapshot_view(reader, args)), auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            live.update(rich_group(snapshot_view(reader, args)), refresh=True)


def _watch_plain(reader: Reader, args: argparse.Namespace, interval: float) -> None:
    for view in _views(reader, args, interval):
        sys.stdout.write(f"--- {_stamp()}\n{plain(view)}")
        sys.stdout.flush()


def _views(reader: Reader, args: argparse.Namespace, interval: float) -> Iterable[View]:
    while True:
        yield snapshot_view(reader, args)
        time.sleep(interval)
