"""What the rollout demo prints: a header, one block per tick, the outcome."""

from __future__ import annotations

from typing import TYPE_CHECKING

from driftline_operator.analysis.signals import figures
from driftline_operator.analysis.windows import Window
from driftline_operator.api.spec import Rollout, Slo
from driftline_operator.cli.demo.fleet import Fleet
from driftline_operator.rollout.compare import ComparisonVerdict
from driftline_operator.stats.attribution import PairedAttributions

if TYPE_CHECKING:  # story imports this module
    from driftline_operator.cli.demo.story import Tick

PROMOTION_MEANS = (
    "promotion here: the stable model server restarted with the candidate's weights and "
    "settings (the operator copies the canary's pod template onto the stable Deployment), "
    "the weight went back to 0 and the canary's processes stopped (scaled to zero)"
)
ROLLBACK_MEANS = (
    "rollback here: the weight went back to 0 and the canary's processes stopped "
    "(scaled to zero); stable never changed"
)


def header(*, scenario: str, fleet: Fleet, spec: Rollout, slos: list[Slo], rps: float) -> str:
    stable, canary = fleet.stable, fleet.canary
    c = spec.comparison
    slo_text = ", ".join(_slo(s) for s in slos) or "none"
    expected = "promoted" if scenario == "healthy" else "rolled back"
    return "\n".join(
        [
            f"driftline demo: scenario {scenario}, a canary rollout on this machine (no cluster)",
            f"  stable v1  logistic regression, accuracy {stable.serving.model.accuracy:.1%}",
            f"             model {stable.model_url}  sidecar {stable.proxy_url}  "
            f"stable sidecar admin {stable.admin_url}",
            f"  canary v2  {canary.serving.note}, accuracy {canary.serving.model.accuracy:.1%}",
            f"             model {canary.model_url}  sidecar {canary.proxy_url} (role canary)  "
            f"admin {canary.admin_url}",
            f"  traffic    {rps:g} requests/s into the stable sidecar, which sends the canary "
            "weight's share on to the canary sidecar",
            f"  rollout    steps {','.join(str(s) for s in spec.steps)} %, each held "
            f"{spec.interval}, failureLimit {spec.failure_limit}, progressDeadline "
            f"{spec.progress_deadline}; router sidecar (PUT /v1/config with the admin token)",
            f"  judged by  error rate +{c.max_error_rate_increase:.0%} and p95 "
            f"+{c.max_latency_increase} over stable, score Jensen-Shannon <= "
            f"{c.max_score_drift:g}"
            + (
                f", attribution distance <= {c.max_attribution_distance:g} (SHAP of the same "
                "sampled rows against both models)"
                if c.max_attribution_distance is not None
                else ""
            )
            + f"; SLOs {slo_text}",
            f"  expected   {expected}; logs in {fleet.workdir}",
            "",
        ]
    )


def tick(number: int, t: Tick, *, started: float, steps: int) -> str:
    elapsed = t.now - started
    state = t.before if t.before.phase is not None else t.state
    where = f"step {state.step + 1}/{steps} weight {state.weight:g}%"
    if t.before.phase is None:
        where = "start"
    line = f"[{elapsed:5.0f}s] tick {number:<2} {where:<22}"
    line += f" stable {_window(t.stable)}  canary {_window(t.canary)}"
    js = _figure(t.verdict, "scoreDrift")
    if js is not None:
        line += f"  score JS {js:.3f}"
    reliance = _figure(t.verdict, "attributions")
    if reliance is not None:
        line += f"  attributions TV {reliance:.3f}"
    lines = [line]
    if t.estimated:
        shown = ", ".join(f"{role} {value:.1%}" for role, value in sorted(t.estimated.items()))
        lines.append(f"         accuracy estimated from scores alone (CBPE, no labels): {shown}")
    if t.stable_is_last_full_window:
        lines.append(
            "         (at 100% stable serves nothing: canary judged against stable's last full window)"
        )
    if t.verdict is not None:
        lines.append(f"         verdict {t.verdict.verdict}")
    event = t.decision.event if t.decision is not None else None
    if event is not None:
        lines.append(f"         decision {event.reason}: {event.message}")
    elif t.decision is not None:
        lines.append(f"         decision hold: {t.state.decision or 'waiting for the step to end'}")
    for problem in t.problems:
        lines.append(f"         problem: {problem}")
    for pod, why in t.unreachable.items():
        lines.append(f"         left out {pod}: {why}")
    return "\n".join(lines)


def _window(window: Window | None) -> str:
    if window is None:
        return "-"
    f = figures(window)
    p95 = f"{f.p95_ms:.1f}ms" if f.p95_ms is not None else "-"
    errors = f"{f.error_rate:.1%}" if f.error_rate is not None else "-"
    return f"{f.requests:>4} req p95 {p95:>7} err {errors:>5}"


def _figure(verdict: ComparisonVerdict | None, name: str) -> float | None:
    """The candidate's figure of check ``name`` (scoreDrift: Jensen-Shannon;
    attributions: total variation), None when it was not judged."""
    for check in verdict.checks if verdict is not None else ():
        if check.name == name and check.candidate is not None:
            return check.candidate
    return None


def attributions(paired: PairedAttributions | None, limit: float) -> str:
    """Both models' attribution profiles: each feature's share of the mean |SHAP|."""
    if paired is None or not paired.explained:
        return "\nWhat each model relies on: no rows were explained against both models."
    stable, canary = paired.shares()
    lines = [
        f"\nWhat each model relies on: each feature's share of the mean |SHAP|, over "
        f"{paired.explained} live rows explained against both models",
        f"  {'feature':<8} {'stable':>7} {'canary':>7}",
    ]
    for name in sorted(stable, key=lambda f: (-stable[f], f)):
        lines.append(f"  {name:<8} {stable[name]:>7.1%} {canary[name]:>7.1%}")
    distance = paired.distance()
    verdict = "the candidate relies on other features" if distance > limit else "alike"
    lines.append(f"  total variation {distance:.3f} (fails above {limit:g}): {verdict}")
    return "\n".join(lines)


def _slo(slo: Slo) -> str:
    if slo.metric == "successRate":
        return f"{slo.name} {slo.objective}"
    if slo.metric == "latency" and slo.quantile is not None:
        return f"p{slo.quantile * 100:g} <= {slo.max}"
    return f"{slo.name} <= {slo.max}"
