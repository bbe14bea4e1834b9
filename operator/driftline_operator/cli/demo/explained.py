"""The demo's explanations (scenarios healthy and reliance): the operator's own
``analysis.explanations`` on the demo's pods, as for a ModelMonitor with
``spec.explain`` and ``rollout.comparison.maxAttributionDistance``.

Each tick the sidecars' reservoirs are read and their rows explained with
shap in a worker process, against the stable model and the candidate alike;
the pairs are one more comparison in the canary verdict. The reference
profile (its SHAP background) is built from a sample of the scenario's world,
as ``driftline profile build`` builds it from training data; in a cluster
the operator reads it from the ConfigMap ``spec.reference`` names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from driftline_operator.analysis.explanations import ExplainOutcome, MonitorExplanations
from driftline_operator.api.spec import ModelMonitorSpec
from driftline_operator.cli.demo.training import N_FEATURES, Scenario, sample
from driftline_operator.cli.profiles import ProfileOptions, build_profile
from driftline_operator.explain.worker import ExplanationPool
from driftline_operator.sources import PodTarget
from driftline_operator.stats.attribution import PairedAttributions
from driftline_sidecar.contract.profile import ReferenceProfile, SourceInfo

EXPLAINED: tuple[Scenario, ...] = ("healthy", "reliance")
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
MAX_ATTRIBUTION_DISTANCE = 0.2
MIN_EXPLANATIONS = 20
EXPLANATIONS_PER_MINUTE = 1200  # half for each model; 4 features cost a few ms each
PROFILE_ROWS = 2000


def spec_fields(name: str) -> dict[str, Any]:
    """What the demo's ModelMonitor adds to explain and compare attributions."""
    return {
        "model": {
            "name": name,
            "protocol": "json",
            "features": [{"name": f} for f in FEATURES],
            "prediction": {"path": "prediction", "score": "probability"},
        },
        "reference": {"configMapRef": {"name": f"{name}-reference"}},
        "explain": {
            "enabled": True,
            "minExplanations": MIN_EXPLANATIONS,
            "explanationsPerMinute": EXPLANATIONS_PER_MINUTE,
        },
    }


def reference_profile(scenario: Scenario, *, seed: int) -> ReferenceProfile:
    x, _ = sample(np.random.default_rng(seed + 2), PROFILE_ROWS, scenario=scenario)
    frame = pd.DataFrame(x, columns=FEATURES)
    digest = hashlib.sha256(frame.to_numpy().tobytes()).hexdigest()
    source = SourceInfo(path=f"the {scenario} world's training sample", sha256=digest, rows=len(x))
    return build_profile(frame, source=source, options=ProfileOptions(background_size=10))


class DemoExplanations:
    """One worker process and the monitor's explanations; ``close`` stops both."""

    def __init__(self, *, scenario: Scenario, seed: int, admin_token: str) -> None:
        self.profile = reference_profile(scenario, seed=seed)
        self._pool = ExplanationPool(processes=1, operator_per_minute=EXPLANATIONS_PER_MINUTE)
        self._monitor = MonitorExplanations(
            "demo/demo", pool=lambda: self._pool, admin_token=admin_token
        )
        self.paired: PairedAttributions | None = None  # the last rows explained on both

    async def warm_up(
        self, spec: ModelMonitorSpec, pods: Sequence[PodTarget], *, now: float
    ) -> None:
        """The reference explained, so shap has started before the rollout's clock does."""
        await self._monitor.run(
            spec=spec, pods=pods, profile=self.profile, profile_key="demo", now=now
        )

    def poll(self, spec: ModelMonitorSpec, pods: Sequence[PodTarget], now: float) -> ExplainOutcome:
        """The last finished run's outcome; the next one starts in the background."""
        outcome = self._monitor.poll(
            spec=spec, pods=pods, profile=self.profile, profile_key="demo", now=now
        )
        if outcome.paired is not None and outcome.paired.explained:
            self.paired = outcome.paired
        return outcome

    def close(self) -> None:
        self._monitor.close()
        self._pool.close()
