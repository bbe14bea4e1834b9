"""`driftline-operator`: run the kopf handlers, the webhook and /metrics.

    driftline-operator                      # every namespace
    driftline-operator --namespace ml       # one namespace (repeatable)
    driftline-operator --dev                # also manage the webhook configuration

Settings come from DRIFTLINE_* variables (see `settings`); this command
only adds what is about how kopf runs. With DRIFTLINE_LEASE_NAME set, any
number of replicas run side by side: all serve the webhook, the Lease's
holder alone acts (`replica`, `election`). With DRIFTLINE_SHARD_NAMESPACES
set too, a set of replicas is one shard: it acts only on the ModelMonitors of
those namespaces (under its own Lease) and still serves every namespace's
webhook.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from collections.abc import Sequence

import kopf

from driftline_operator.analysis import metrics as opmetrics
from driftline_operator.controller import replica
from driftline_operator.controller.settings import OperatorConfig, SettingsError

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"

# Each analysis interval parses and adds up snapshots: ~100 small models and
# lists each, short-lived. At CPython's default generation-0 threshold (700
# allocations) the collector runs every few snapshots and rescans every young
# object, about a third of the operator's CPU per interval (bench/analysis.py).
GC_THRESHOLDS = (50_000, 20, 10)


def tune_garbage_collector() -> None:
    """Collect less often; what start-up loaded lives as long as the process,
    so it is frozen out of the collector's scans."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftline-operator",
        description="The Driftline operator: ModelMonitor handlers and the sidecar webhook.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="Serve only this namespace (repeatable; globs as kopf allows).",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="Serve every namespace (the default)."
    )
    parser.add_argument(
        "--liveness",
        default=DEFAULT_LIVENESS,
        metavar="URL",
        help=f"Where kopf serves its liveness probe (default {DEFAULT_LIVENESS}).",
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        help="Create and update the MutatingWebhookConfiguration itself (development only).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Log more.")
    parser.add_argument("--debug", action="store_true", help="Log everything kopf does.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = OperatorConfig.from_env()
    except SettingsError as error:
        print(f"driftline-operator: {error}", file=sys.stderr)
        return 2

    kopf.configure(verbose=args.verbose, debug=args.debug)
    logging.getLogger("driftline_operator").setLevel(logging.DEBUG if args.debug else logging.INFO)
    opmetrics.serve(config.metrics_port)  # the operator's own /metrics
    scope = replica.Scope(namespaces=tuple(args.namespace))
    tune_garbage_collector()
    return asyncio.run(replica.run(config, scope=scope, liveness=args.liveness, dev=args.dev))


if __name__ == "__main__":
    sys.exit(main())
