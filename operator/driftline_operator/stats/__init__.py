"""Drift statistics computed from mergeable bin counts (pure: no kopf, no kubernetes).

The sidecar bins values into a reference profile's bins
(``driftline_sidecar.profile``); the operator merges the counts over pods and
time and judges them here: ``judge_dataset`` for a whole window,
``judge_feature`` for one feature, and the statistics on their own.
"""

from driftline_operator.stats.distances import (
    bin_points,
    jensen_shannon,
    proportions,
    psi,
    wasserstein_binned,
    wasserstein_samples,
)
from driftline_operator.stats.policy import DriftPolicy, Method
from driftline_operator.stats.tests import TestResult, chi_square, ks_binned, ks_samples, z_test
from driftline_operator.stats.verdict import (
    Counts,
    DatasetDrift,
    FeatureDrift,
    judge_dataset,
    judge_feature,
)

__all__ = [
    "Counts",
    "DatasetDrift",
    "DriftPolicy",
    "FeatureDrift",
    "Method",
    "TestResult",
    "bin_points",
    "chi_square",
    "jensen_shannon",
    "judge_dataset",
    "judge_feature",
    "ks_binned",
    "ks_samples",
    "proportions",
    "psi",
    "wasserstein_binned",
    "wasserstein_samples",
    "z_test",
]
