"""``driftline feedback FILE``: send ground-truth labels to a model's sidecars.

Each sidecar knows only the predictions it served, so every batch goes to
every sidecar of the monitor (its selected, injected, running pods, found
through the Kubernetes API; or the sidecars named with ``--sidecar``) and
each joins its own ids. An id is joined when some sidecar joined it;
otherwise it is reported with the most telling answer any sidecar gave
(duplicate, then expired, then unknown). With several sidecars the batch is
posted with ``fanout=true`` (a sidecar counts no id unknown), then the ids
no sidecar knew are posted again to one of them, which counts them unknown
once: the monitor's merged count is the ids nobody served.

FILE is CSV with columns ``id`` and ``label``, or JSON Lines of
``{"id": ..., "label": ...}``. The token comes from ``--token-file`` or the
environment variable ``DRIFTLINE_FEEDBACK_TOKEN``: the token whose SHA-256 is
``spec.quality.feedbackTokenSha256``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from driftline_operator import kube
from driftline_operator.api.selectors import selects
from driftline_operator.api.spec import spec_from
from driftline_operator.webhook.inject import is_injected

TOKEN_ENV = "DRIFTLINE_FEEDBACK_TOKEN"
BATCH = 10_000  # the sidecars' default feedback.max_batch
USAGE_ERROR = 2


class FeedbackInputError(Exception):
    """A file, option or answer that stops the command (exit 2)."""


@dataclass
class Outcome:
    sent: int = 0
    joined: set[str] = field(default_factory=set)
    duplicate: set[str] = field(default_factory=set)
    expired: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)

    def add(self, ids: Sequence[str], answers: Sequence[dict[str, Any]]) -> None:
        """One batch's answers, one per sidecar."""
        self.sent += len(ids)
        not_joined: dict[str, set[str]] = {"duplicate": set(), "expired": set(), "unknown": set()}
        for answer in answers:
            for kind, found in not_joined.items():
                found.update(answer["not_joined"][kind])
        # Joined by some sidecar: named as not joined by fewer than all of them.
        named = [answer_ids(a) for a in answers]
        for i in ids:
            if sum(i in n for n in named) < len(answers):
                self.joined.add(i)
            elif i in not_joined["duplicate"]:
                self.duplicate.add(i)
            elif i in not_joined["expired"]:
                self.expired.add(i)
            else:
                self.unknown.add(i)

    def settle(self, ids: Sequence[str], answer: dict[str, Any]) -> None:
        """The answer of the one sidecar the unknown ids were resent to: any it
        joined meanwhile (its prediction came in between) are joined."""
        named = answer_ids(answer)
        joined = {i for i in ids if i not in named}
        self.unknown -= joined
        self.joined |= joined

    def document(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "joined": len(self.joined),
            "not_joined": {
                kind: sorted(getattr(self, kind)) for kind in ("unknown", "expired", "duplicate")
            },
        }


def answer_ids(answer: dict[str, Any]) -> set[str]:
    return {i for kind in answer["not_joined"].values() for i in kind}


def read_labels(path: Path, *, numeric: bool) -> Iterator[dict[str, Any]]:
    """``{id, label}`` per line of a CSV or JSON Lines file; labels as numbers
    for a regression."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
                for n, line in enumerate(f, start=1):
                    if line.strip():
                        yield _item(_json_line(line, path, n), path, n, numeric=numeric)
                return
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"id", "label"} <= set(reader.fieldnames):
                raise FeedbackInputError(f"{path}: the CSV needs the columns id and label")
            for n, row in enumerate(reader, start=2):
                yield _item({"id": row["id"], "label": row["label"]}, path, n, numeric=numeric)
    except OSError as error:
        raise FeedbackInputError(f"{path}: {error.strerror}") from None


def _json_line(line: str, path: Path, n: int) -> Any:
    try:
        return json.loads(line)
    except ValueError as error:
        raise FeedbackInputError(f"{path}:{n}: not JSON: {error}") from None


def _item(row: Any, path: Path, n: int, *, numeric: bool) -> dict[str, Any]:
    if not isinstance(row, dict) or "id" not in row or "label" not in row:
        raise FeedbackInputError(f'{path}:{n}: expected {{"id": ..., "label": ...}}')
    label = row["label"]
    if numeric and isinstance(label, str):
        try:
            label = float(label)
        except ValueError:
            raise FeedbackInputError(f"{path}:{n}: label {label!r} is not a number") from None
    return {"id": row["id"], "label": label}


def monitor_sidecars(namespace: str, name: str) -> tuple[list[str], bool]:
    """The admin URLs of the monitor's sidecars, and whether it is a regression."""
    api = kube.connect()
    body = kube.get(api, kube.MONITORS, namespace, name)
    spec = spec_from(body)
    if spec.quality is None:
        raise FeedbackInputError(
            f"ModelMonitor {namespace}/{name}: spec.quality is not set, so its sidecars join no labels"
        )
    pods = kube.list_objects(api, kube.PODS, namespace, selector=spec.selector)
    urls = []
    for pod in pods:
        metadata, status = pod.get("metadata") or {}, pod.get("status") or {}
        labels = metadata.get("labels") or {}
        running = status.get("phase") == "Running" and status.get("podIP")
        if running and selects(spec.selector, labels) and is_injected(pod):
            urls.append(f"http://{status['podIP']}:{spec.sidecar.admin_port}")
    if not urls:
        raise FeedbackInputError(f"ModelMonitor {namespace}/{name}: no running sidecar to send to")
    return sorted(urls), spec.model.prediction.task == "regression"


def send(
    labels: Iterator[dict[str, Any]], sidecars: Sequence[str], token: str, *, batch: int = BATCH
) -> Outcome:
    outcome = Outcome()
    headers = {"authorization": f"Bearer {token}"}
    fanout = len(sidecars) > 1

    def post(chunk: list[dict[str, Any]]) -> None:
        ids = [c["id"] for c in chunk]
        outcome.add(ids, [_post(client, s, chunk, fanout=fanout) for s in sidecars])
        nobody = [c for c in chunk if c["id"] in outcome.unknown]
        if fanout and nobody:  # counted unknown once, by one sidecar
            outcome.settle([c["id"] for c in nobody], _post(client, sidecars[0], nobody))

    with httpx.Client(timeout=30, headers=headers) as client:
        chunk: list[dict[str, Any]] = []
        for item in labels:
            chunk.append(item)
            if len(chunk) == batch:
                post(chunk)
                chunk = []
        if chunk:
            post(chunk)
    return outcome


def _post(
    client: httpx.Client, sidecar: str, chunk: list[dict[str, Any]], *, fanout: bool = False
) -> dict[str, Any]:
    params = {"fanout": "true"} if fanout else {}
    try:
        response = client.post(f"{sidecar}/v1/feedback", json={"labels": chunk}, params=params)
    except httpx.HTTPError as error:
        raise FeedbackInputError(f"{sidecar}: {error}") from None
    if response.status_code != 200:
        try:
            why = response.json().get("error", response.text)
        except ValueError:
            why = response.text
        raise FeedbackInputError(f"{sidecar}: {response.status_code} {why}")
    answer: dict[str, Any] = response.json()
    return answer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="CSV with id,label columns, or JSON Lines")
    parser.add_argument("--monitor", help="the ModelMonitor, as NAMESPACE/NAME")
    parser.add_argument(
        "--sidecar",
        action="append",
        default=[],
        help="a sidecar's admin URL instead of the monitor's pods (repeatable)",
    )
    parser.add_argument("--numeric", action="store_true", help="labels are numbers (regression)")
    parser.add_argument("--token-file", type=Path, help=f"the token (default: ${TOKEN_ENV})")
    parser.add_argument("--batch", type=int, default=BATCH, help="labels per request")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        token = (
            args.token_file.read_text().strip()
            if args.token_file
            else os.environ.get(TOKEN_ENV, "")
        )
        if not token:
            raise FeedbackInputError(f"no token: pass --token-file or set {TOKEN_ENV}")
        numeric = args.numeric
        sidecars = list(args.sidecar)
        if args.monitor:
            namespace, _, name = args.monitor.partition("/")
            if not name:
                raise FeedbackInputError(f"--monitor {args.monitor!r}: expected NAMESPACE/NAME")
            found, regression = monitor_sidecars(namespace, name)
            sidecars += found
            numeric = numeric or regression
        if not sidecars:
            raise FeedbackInputError("name the sidecars: --monitor NAMESPACE/NAME or --sidecar URL")
        outcome = send(read_labels(args.file, numeric=numeric), sidecars, token, batch=args.batch)
    except (FeedbackInputError, kube.NotFound) as error:
        print(f"driftline: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    print(json.dumps(outcome.document(), indent=2))
    return 0
