"""`driftline demo --scenario ...` for real: two model servers behind real
sidecars, the stable sidecar splitting traffic to the canary's, and the
operator's loop judging and moving the weight.

Each scenario runs the CLI as a subprocess with a short interval and steps
50,100 (enough requests per window at a modest rate), while a poller reads
the stable sidecar's `GET /v1/config` to see the weights actually pushed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

ARGS = [
    "--interval",
    "5s",
    "--steps",
    "50,100",
    "--rps",
    "120",
]  # ~300 requests per role and window
RUN_TIMEOUT = 240.0  # healthy and reliance start shap before the rollout's clock


@dataclass
class DemoResult:
    returncode: int
    output: str
    weights: list[float] = field(default_factory=list)  # as the stable sidecar ran them
    canary_urls: set[str] = field(default_factory=set)


def _poll_routing(admin: str, result: DemoResult, done: threading.Event) -> None:
    with httpx.Client(timeout=2.0) as client:
        while not done.is_set():
            try:
                routing = client.get(f"{admin}/v1/config").json()["routing"]
            except (httpx.HTTPError, ValueError, KeyError):
                time.sleep(0.05)  # not up yet, or already stopped
                continue
            weight = float(routing["canary_weight"])
            if not result.weights or result.weights[-1] != weight:
                result.weights.append(weight)
            result.canary_urls.add(routing["canary_url"])
            time.sleep(0.1)


def run_demo(scenario: str) -> DemoResult:
    command = [sys.executable, "-m", "driftline_operator.cli.main", "demo", "--scenario", scenario]
    process = subprocess.Popen(
        [*command, *ARGS], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    result = DemoResult(returncode=-1, output="")
    done = threading.Event()
    lines: list[str] = []
    poller: threading.Thread | None = None
    timer = threading.Timer(RUN_TIMEOUT, process.kill)
    timer.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            found = re.search(r"stable sidecar admin (http://\S+)", line)
            if found and poller is None:
                poller = threading.Thread(
                    target=_poll_routing, args=(found.group(1), result, done), daemon=True
                )
                poller.start()
            # The outcome is printed while the stable sidecar still runs.
            if "stable sidecar routing now" in line:
                time.sleep(0.3)
                done.set()
        result.returncode = process.wait()
    finally:
        timer.cancel()
        done.set()
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if poller is not None:
            poller.join(timeout=5)
    result.output = "".join(lines)
    return result


def canary_proxy(output: str) -> str:
    found = re.search(r"sidecar (http://\S+) \(role canary\)", output)
    assert found, output
    return found.group(1)


def pushed(result: DemoResult) -> list[float]:
    """The weights seen, without the 0 the stable sidecar may start with."""
    weights = result.weights
    return weights[1:] if weights[:1] == [0.0] else weights


def test_healthy_canary_is_promoted_step_by_step() -> None:
    result = run_demo("healthy")
    out = result.output
    assert result.returncode == 0, out
    assert "decision RolloutStarted" in out and "step 1 at weight 50%" in out
    assert "decision StepAdvanced: advanced to step 2 at weight 100%" in out, out
    assert "decision Promoted: all 2 steps passed; canary promoted" in out, out
    assert "canary judged against stable's last full window" in out
    assert "Outcome: promoted (as expected for scenario healthy)" in out
    assert "canary_weight 0" in out
    assert pushed(result) == [50.0, 100.0, 0.0], (result.weights, out)
    assert result.canary_urls == {canary_proxy(out)}
    # Canary-routed requests reached the canary's own sidecar and were counted there.
    canary_requests = [int(n) for n in re.findall(r"canary\s+(\d+) req", out)]
    assert canary_requests and max(canary_requests) >= 50, out
    # The same rows explained against both: a retrained model relies on what stable does.
    shares = attribution_profiles(out)
    assert shares["f0"][0] > 0.3 and shares["f0"][1] > 0.3, shares
    assert shares["f3"][0] < 0.05 and shares["f3"][1] < 0.05, shares
    assert re.search(r"total variation 0\.0\d\d \(fails above 0\.2\): alike", out), out


def attribution_profiles(output: str) -> dict[str, tuple[float, float]]:
    """feature -> (stable's share, the canary's) from the demo's closing table."""
    table = output.split("What each model relies on: each feature's share", 1)[1]
    rows = re.findall(r"^  (f\d)\s+([\d.]+)%\s+([\d.]+)%$", table, flags=re.MULTILINE)
    assert len(rows) == 4, table
    return {name: (float(a) / 100, float(b) / 100) for name, a, b in rows}


@pytest.mark.parametrize(
    ("scenario", "failing_check"),
    [
        ("errors", "errorRate: error rate canary"),
        ("latency", "latency: p95 canary"),
        ("drift", "scoreDrift: prediction distribution Jensen-Shannon"),
        ("quality", "accuracy: labelled accuracy canary"),  # labels sent 3 s late
        ("reliance", "attributions: reliance: total variation"),  # as accurate, leaning on f3
    ],
)
def test_bad_canary_is_rolled_back(scenario: str, failing_check: str) -> None:
    result = run_demo(scenario)
    out = result.output
    assert result.returncode == 0, out
    assert "decision AnalysisFailed: failure 1/2 at step 1 at weight 50%" in out, out
    assert "decision RolledBack: 2 consecutive failed analyses" in out, out
    rolled_back = out.split("decision RolledBack", 1)[1].splitlines()[0]
    assert failing_check in rolled_back, rolled_back
    assert "Promoted" not in out
    assert f"Outcome: rolled back (as expected for scenario {scenario})" in out
    assert pushed(result) == [50.0, 0.0], (result.weights, out)
    if scenario == "quality":  # the label-free estimate saw it too, from the scores alone
        found = re.search(r"\(CBPE, no labels\): canary ([\d.]+)%, stable ([\d.]+)%", out)
        assert found is not None, out
        assert float(found.group(1)) < float(found.group(2)) - 20, found.group(0)
    if scenario == "reliance":  # nothing but the explanations tells the two apart
        assert "errorRate" not in rolled_back and "scoreDrift:" not in rolled_back
        accuracies = [float(a) for a in re.findall(r"accuracy ([\d.]+)%", out.split("\n\n")[0])]
        assert len(accuracies) == 2 and abs(accuracies[0] - accuracies[1]) < 0.5, accuracies
        shares = attribution_profiles(out)
        assert shares["f0"][0] > 0.3 and shares["f0"][1] < 0.05, shares  # stable's f0 ...
        assert shares["f3"][0] < 0.05 and shares["f3"][1] > 0.3, shares  # ... is f3 to the canary
        assert "the candidate relies on other features" in out
