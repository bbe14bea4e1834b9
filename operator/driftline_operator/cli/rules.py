"""``driftline rules MONITOR.yaml``: a ModelMonitor's alerts as a plain
Prometheus rule file (the rules the operator puts in its PrometheusRule)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from driftline_operator.analysis.rules import rule_file
from driftline_operator.api.names import KIND
from driftline_operator.api.spec import ModelMonitorSpec, spec_from
from driftline_operator.cli.errors import UsageError


class RulesError(UsageError):
    """A monitor file the rules cannot be made from: the message names the field."""


def _documents(path: str) -> Iterator[dict[str, Any]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise RulesError(f"cannot read {path}: {error.strerror}") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise RulesError(f"{path} is not YAML: {error}") from None
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == KIND:
            yield document


def _spec(document: dict[str, Any], where: str) -> ModelMonitorSpec:
    try:
        return spec_from(document)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        field = ".".join(["spec", *(str(part) for part in first["loc"])])
        message = first["msg"].removeprefix("Value error, ")
        raise RulesError(f"{where}: {field}: {message}") from None


def rules_document(path: str, *, namespace: str | None = None) -> dict[str, Any]:
    """One rule file with the groups of every ModelMonitor in ``path``.

    The namespace is the monitor's ``metadata.namespace``, else ``namespace``;
    one of them must say it, since the rules select series by it.
    """
    groups: list[dict[str, Any]] = []
    for document in _documents(path):
        metadata = document.get("metadata") or {}
        name = metadata.get("name")
        if not name:
            raise RulesError(f"{path}: a ModelMonitor without metadata.name")
        ns = metadata.get("namespace") or namespace
        if not ns:
            raise RulesError(
                f"{path}: ModelMonitor {name} has no metadata.namespace; pass --namespace"
            )
        spec = _spec(document, f"ModelMonitor {ns}/{name}")
        groups += rule_file(spec, namespace=ns, monitor=name)["groups"]
    if not groups:
        raise RulesError(f"{path} holds no ModelMonitor (kind: {KIND})")
    return {"groups": groups}


class _Dumper(yaml.SafeDumper):
    """Writes a repeated label map out each time: no &anchors, as people write rule files."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1 << 30)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("monitor", help="a YAML file with one or more ModelMonitors")
    parser.add_argument("-n", "--namespace", help="for monitors without metadata.namespace")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(render(rules_document(args.monitor, namespace=args.namespace)))
    return 0
