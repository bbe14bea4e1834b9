"""The ``driftline`` command: profiles, offline drift, reports, status, alerts, the demo.

    driftline profile build DATA -o profile.json [options]
    driftline profile show profile.json
    driftline profile configmap profile.json --name NAME [--namespace NS]
    driftline drift REFERENCE CURRENT [--json] [options]
    driftline report (REFERENCE CURRENT | --monitor NAME [-n NS]) -o report.html
    driftline status [-n NS | -A] [MONITOR] [--watch]   (also: kubectl driftline status)
    driftline rules MONITOR.yaml [--namespace NS]
    driftline explain --model URL --config SIDECAR.yaml --profile PROFILE (--request-id ID | --row JSON)
    driftline demo [args...]

User errors print one line to stderr and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import ValidationError

from driftline_operator.cli.errors import UsageError
from driftline_operator.cli.options import add_profile_options
from driftline_sidecar.contract.profile import CategoricalProfile, NumericProfile, ReferenceProfile

USAGE_ERROR = 2
CONFIGMAP_LIMIT_BYTES = 1_048_576  # Kubernetes refuses larger ConfigMaps
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")

# Each command's module, imported only when that command runs: between them
# they import scipy, pandas, kubernetes, jinja2, rich and shap, seconds that
# `driftline --help` or `kubectl driftline status` should not wait for.
COMMANDS = {
    "drift": (
        "driftline_operator.cli.drift",
        "judge drift between a reference and current data; exit 1 on dataset drift",
    ),
    "report": ("driftline_operator.cli.report", "write a self-contained HTML drift report"),
    "status": (
        "driftline_operator.cli.status",
        "monitors and rollouts at a glance (also: kubectl driftline status)",
    ),
    "rules": (
        "driftline_operator.cli.rules",
        "print a ModelMonitor's SLO, drift and data-quality alerts as a rule file",
    ),
    "feedback": (
        "driftline_operator.cli.feedback",
        "send ground-truth labels (CSV or JSON Lines) to a model's sidecars",
    ),
    "explain": (
        "driftline_operator.cli.explain",
        "explain one prediction with SHAP against the model itself",
    ),
}


class CliError(UsageError):
    """A user error: printed as one line, exit status 2."""


def _parser(chosen: str | None) -> argparse.ArgumentParser:
    """The parser, with the arguments of the `chosen` command only."""
    parser = argparse.ArgumentParser(prog="driftline", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    profile = commands.add_parser("profile", help="build and inspect reference profiles")
    actions = profile.add_subparsers(dest="action", required=True, metavar="ACTION")

    build = actions.add_parser("build", help="build a profile from training data")
    build.add_argument("data", help="training data: .csv, .parquet or .jsonl")
    build.add_argument("-o", "--output", required=True, help="where to write profile.json")
    add_profile_options(build, "profiling")
    build.add_argument("--sample-size", type=int, default=1000, help="rows kept as a raw sample")
    build.add_argument(
        "--background-size", type=int, default=10, help="rows kept as the SHAP background"
    )
    build.add_argument("--seed", type=int, default=0, help="seed of the sample")
    build.set_defaults(handler=_build)

    show = actions.add_parser("show", help="print a readable summary of a profile")
    show.add_argument("profile")
    show.set_defaults(handler=_show)

    configmap = actions.add_parser("configmap", help="print a ConfigMap manifest holding a profile")
    configmap.add_argument("profile")
    configmap.add_argument("--name", required=True, help="the ConfigMap's name")
    configmap.add_argument("--namespace", help="the ConfigMap's namespace")
    configmap.add_argument(
        "--key", default="profile.json", help="the data key (default profile.json)"
    )
    configmap.set_defaults(handler=_configmap)

    for name, (module, summary) in COMMANDS.items():
        command = commands.add_parser(name, help=summary)
        if name == chosen:
            importlib.import_module(module).add_arguments(command)

    # Listed for --help only: main() hands "demo ..." to the demo's own parser.
    commands.add_parser("demo", help="run the local demo (model, sidecar, traffic)", add_help=False)
    return parser


def _build(args: argparse.Namespace) -> int:
    from driftline_operator.cli.drift import profile_options  # pandas
    from driftline_operator.cli.profiles import build_profile_from_file

    options = profile_options(
        args, sample_size=args.sample_size, background_size=args.background_size, seed=args.seed
    )
    profile = build_profile_from_file(args.data, options)
    try:
        Path(args.output).write_text(profile.model_dump_json(indent=2) + "\n", encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot write {args.output}: {error.strerror}") from None
    print(
        f"wrote {args.output}: {len(profile.features)} features from {profile.source.rows} rows",
        file=sys.stderr,
    )
    return 0


def _load(path: str) -> ReferenceProfile:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror}") from None
    try:
        return ReferenceProfile.model_validate_json(text)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "document"
        raise CliError(f"{path} is not a Driftline profile: {where}: {first['msg']}") from None


def _summary(profile: NumericProfile | CategoricalProfile) -> str:
    if isinstance(profile, NumericProfile):
        return f"min {profile.min:.4g}  max {profile.max:.4g}  mean {profile.mean:.4g}  std {profile.std:.4g}"
    top = ", ".join(
        f"{category} {share:.0%}"
        for category, share in zip(profile.categories[:3], profile.expected, strict=False)
    )
    more = len(profile.categories) - 3
    return top + (f", +{more} more" if more > 0 else "") + f", other {profile.expected[-1]:.0%}"


def _show(args: argparse.Namespace) -> int:
    profile = _load(args.profile)
    print(f"profile   schema v{profile.schema_version}, created {profile.created_at}")
    print(
        f"source    {profile.source.path} ({profile.source.rows} rows, sha256 {profile.source.sha256[:12]})"
    )
    print(f"target    {profile.target_column or '-'}")
    print(f"sample    {max((len(v) for v in profile.sample.values()), default=0)} rows")
    rows = [(name, p) for name, p in profile.features.items()]
    if profile.prediction is not None:
        rows.append(
            (f"{profile.prediction_column or 'prediction'} (prediction)", profile.prediction)
        )
    width = max(len("feature"), *(len(name) for name, _ in rows))
    print()
    print(f"{'feature':<{width}}  {'kind':<11}  {'bins':>4}  {'missing':>7}  summary")
    for name, p in rows:
        print(
            f"{name:<{width}}  {p.kind:<11}  {p.n_bins:>4}  {p.missing_rate:>7.1%}  {_summary(p)}"
        )
    return 0


def _configmap(args: argparse.Namespace) -> int:
    if not DNS_SUBDOMAIN.match(args.name):
        raise CliError(
            f"--name {args.name!r} is not a valid ConfigMap name: use lower-case letters, "
            "digits, '-' and '.', starting and ending with a letter or digit"
        )
    if not CONFIGMAP_KEY.match(args.key):
        raise CliError(f"--key {args.key!r} is not a valid ConfigMap key (letters, digits, -._)")
    document = _load(args.profile).model_dump_json()
    if len(document.encode()) > CONFIGMAP_LIMIT_BYTES:
        raise CliError(
            f"{args.profile} is {len(document.encode())} bytes, over the 1 MiB ConfigMap limit; "
            "rebuild it with a smaller --sample-size"
        )
    metadata: dict[str, object] = {"name": args.name}
    if args.namespace:
        metadata["namespace"] = args.namespace
    metadata["labels"] = {"app.kubernetes.io/part-of": "driftline", "driftline.io/profile": "true"}
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {args.key: document},
    }
    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False, width=1 << 30))
    return 0


def _demo(argv: list[str]) -> int:
    demo = importlib.import_module("driftline_operator.cli.demo")  # heavy: only when asked for
    try:
        return int(demo.main(argv))
    except SystemExit as exit_:  # the demo's own --help or usage error
        return exit_.code if isinstance(exit_.code, int) else USAGE_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["demo"]:
        return _demo(arguments[1:])
    parser = _parser(next((a for a in arguments if not a.startswith("-")), None))
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exit_:  # --help, or a usage error argparse already printed
        return exit_.code if isinstance(exit_.code, int) else USAGE_ERROR
    try:
        return int(args.handler(args))
    except UsageError as error:
        print(f"driftline: error: {error}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
