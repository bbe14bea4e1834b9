"""``driftline explain``: why did the model answer what it answered?

One row (a request id looked up in the sidecar's prediction log, or a JSON
object of feature values) is explained with SHAP against the model itself,
through the model's own protocol (one request), over the reference profile's
background. It prints the model's answer, the base value (the model's mean
answer over the background) and each feature's contribution, largest first,
as a text waterfall; ``--json`` for the numbers, ``--png FILE`` for shap's
waterfall plot. Contributions plus base value add up to the model's answer
(the difference, float rounding, is printed: under 1e-9).

    driftline explain --model http://127.0.0.1:8081/v1/models/fraud:predict \\
        --config sidecar.yaml --profile profile.json --request-id 7f3a... [--log FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from driftline_operator.explain.background import BackgroundError, from_profile
from driftline_operator.explain.explainer import Explainer, Explanation
from driftline_operator.explain.model import BlackBoxModel, ModelError
from driftline_sidecar.contract.config import SidecarConfig, load_config
from driftline_sidecar.contract.profile import ReferenceProfile
from driftline_sidecar.protocols import Detected

USAGE_ERROR = 2
BAR_WIDTH = 30
PERMUTATIONS = 10  # one row: a finer estimate than the monitor's running budget


class ExplainInputError(Exception):
    """An option, file or answer that stops the command (exit 2)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="the model's predict URL (not the sidecar's)"
    )
    parser.add_argument("--config", required=True, type=Path, help="the sidecar config (features)")
    parser.add_argument("--profile", required=True, type=Path, help="the reference profile")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--request-id", help="a request id from the prediction log")
    which.add_argument("--row", help='a JSON object of feature values, e.g. {"amount": 12.5}')
    parser.add_argument("--log", type=Path, help="the prediction log (default: the config's)")
    parser.add_argument("--protocol", choices=["kserve-v1", "open-inference-v2", "json"])
    parser.add_argument("--permutations", type=int, default=PERMUTATIONS)
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument("--png", type=Path, help="write shap's waterfall plot to this file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        explanation, label = explain(args)
    except ExplainInputError as error:
        print(f"driftline explain: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    if args.png is not None:
        write_png(explanation, args.png)
    print(as_json(explanation, label) if args.json else waterfall(explanation, label))
    return 0


def explain(args: argparse.Namespace) -> tuple[Explanation, str]:
    if args.permutations < 1:
        raise ExplainInputError(f"--permutations must be at least 1, got {args.permutations}")
    config = _config(args.config)
    profile = _profile(args.profile)
    features = config.model.features
    try:
        columns, background = from_profile(profile, features)
    except BackgroundError as error:
        raise ExplainInputError(f"{args.profile}: {error}") from None
    if args.row is not None:
        values, label = _row(args.row), "the given row"
    else:
        log = args.log or Path(config.prediction_log.path)
        values, label = _logged(log, args.request_id), f"request {args.request_id}"
    unknown = sorted(set(values) - {f.name for f in features})
    if unknown:
        raise ExplainInputError(
            f"the row names {', '.join(unknown)}, which {args.config} does not declare"
        )
    protocol = args.protocol or _protocol(config, args.model)
    try:
        with BlackBoxModel(
            url=args.model, protocol=protocol, columns=columns, prediction=config.model.prediction
        ) as model:
            explainer = Explainer(model, background, permutations=args.permutations)
            matrix = columns.matrix([[values.get(name) for name in columns.names]])
            return explainer.explain(matrix)[0], label
    except ModelError as error:
        raise ExplainInputError(f"{error} ({error.reason})") from None
    except ValueError as error:  # a model URL that is not http://host:port/path
        raise ExplainInputError(str(error)) from None


def waterfall(explanation: Explanation, label: str) -> str:
    items = explanation.sorted()
    largest = max((abs(v) for _, _, v in items), default=0.0) or 1.0
    width = max((len(f"{name} = {_show(value)}") for name, value, _ in items), default=0)
    lines = [
        f"prediction   {explanation.output:.6g}   (the model's answer for {label})",
        f"base value   {explanation.base_value:.6g}   (its mean answer over the background)",
        "",
    ]
    for name, value, contribution in items:
        bar = "█" * max(1, round(BAR_WIDTH * abs(contribution) / largest)) if contribution else ""
        lines.append(f"  {f'{name} = {_show(value)}':<{width}}  {contribution:+.6g}  {bar}")
    total = sum(explanation.values)
    lines += [
        "",
        f"base value {explanation.base_value:.6g} {total:+.6g} (contributions) = "
        f"{explanation.base_value + total:.6g}; the model said {explanation.output:.6g} "
        f"(difference {explanation.additivity_error:.1e})",
    ]
    return "\n".join(lines)


def as_json(explanation: Explanation, label: str) -> str:
    return json.dumps(
        {
            "explained": label,
            "prediction": explanation.output,
            "base_value": explanation.base_value,
            "contributions": [
                {"feature": name, "value": value, "contribution": contribution}
                for name, value, contribution in explanation.sorted()
            ],
            "additivity_error": explanation.additivity_error,
        },
        indent=2,
    )


def write_png(explanation: Explanation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt
    import numpy as np
    import shap

    shap.plots.waterfall(
        shap.Explanation(
            values=np.asarray(explanation.values),
            base_values=explanation.base_value,
            data=np.asarray(explanation.row, dtype=object),
            feature_names=explanation.features,
        ),
        max_display=20,
        show=False,
    )
    try:
        plt.savefig(path, bbox_inches="tight", dpi=120)
    except OSError as error:
        raise ExplainInputError(f"cannot write {path}: {error.strerror}") from None
    finally:
        plt.close("all")


def _config(path: Path) -> SidecarConfig:
    try:
        config = load_config(path)
    except (OSError, ValueError) as error:  # pydantic's ValidationError is a ValueError
        detail = error if not isinstance(error, ValidationError) else _fields(error)
        raise ExplainInputError(f"{path}: {detail}") from None
    if not config.model.features:
        raise ExplainInputError(f"{path}: model.features declares no features to explain")
    return config


def _fields(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())


def _profile(path: Path) -> ReferenceProfile:
    try:
        return ReferenceProfile.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ExplainInputError(f"cannot read {path}: {error.strerror}") from None
    except ValidationError as error:
        raise ExplainInputError(f"{path} is not a reference profile: {_fields(error)}") from None


def _row(text: str) -> dict[str, Any]:
    try:
        row = json.loads(text)
    except ValueError as error:
        raise ExplainInputError(f"--row is not JSON: {error}") from None
    if not isinstance(row, dict):
        raise ExplainInputError('--row must be a JSON object of feature values, e.g. {"f0": 1.5}')
    return row


def _logged(log: Path, request_id: str) -> dict[str, Any]:
    try:
        with open(log, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut by rotation or a crash: not ours to judge
                if isinstance(record, dict) and record.get("request_id") == request_id:
                    features = record.get("features")
                    if not isinstance(features, dict):
                        raise ExplainInputError(f"{log}:{number}: the record has no features")
                    return features
    except OSError as error:
        raise ExplainInputError(f"cannot read the prediction log {log}: {error.strerror}") from None
    raise ExplainInputError(
        f"request {request_id} is not in {log} (the log keeps a sample of requests: "
        "prediction_log.sample_ratio)"
    )


def _protocol(config: SidecarConfig, url: str) -> Detected:
    if config.model.protocol != "auto":
        return config.model.protocol
    if "/v2/models/" in url:
        return "open-inference-v2"
    if ":predict" in url:
        return "kserve-v1"
    return "json"


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
