"""What the sidecar bins, and the cumulative counts it reports.

``Layout`` decides, once at start, which features are binned and into which
bins: the reference profile's when one is loaded, the config's fixed bins
otherwise. ``take_snapshot`` reads the counts back from the Prometheus
registry, so ``/v1/snapshot`` and ``/metrics`` are one set of numbers.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client.utils import floatToGoString

from driftline_sidecar.contract.config import FeatureConfig, SidecarConfig
from driftline_sidecar.contract.profile import (
    BinnedBatch,
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    bin_categorical,
    bin_numeric,
)
from driftline_sidecar.contract.snapshot import (
    LATENCY_BUCKETS,
    BinCounts,
    CaptureCounts,
    Histogram,
    ProcessInfo,
    Snapshot,
)
from driftline_sidecar.metrics import PREFIX, SidecarMetrics
from driftline_sidecar.routing_metrics import shadow_counts

# Scores of a classifier binned in deciles while no profile says otherwise.
DEFAULT_SCORE_EDGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
_BASE_LABELS = frozenset({"model", "version", "role"})
# Bucket bounds as prometheus_client writes them in the `le` label.
_LES = [floatToGoString(b) for b in LATENCY_BUCKETS] + ["+Inf"]


@dataclass(frozen=True)
class Binning:
    """One feature's (or the prediction's) bins."""

    name: str
    kind: Literal["numeric", "categorical"]
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()
    low: float = -math.inf  # values outside [low, high] count as out of range
    high: float = math.inf

    @property
    def n_bins(self) -> int:
        return len(self.categories if self.kind == "categorical" else self.edges) + 1

    def bin(self, values: Sequence[Any]) -> BinnedBatch:
        if self.kind == "categorical":
            return bin_categorical(values, self.categories)
        return bin_numeric(_numbers(values), self.edges, low=self.low, high=self.high)


def _numbers(values: Sequence[Any]) -> Sequence[float | None]:
    # A string or bool where a number belongs is a schema violation the
    # extractor counts; here it is simply not a value.
    if set(map(type, values)) <= _PLAIN_NUMBERS:  # the usual case, checked at C speed
        return values
    return [v if isinstance(v, int | float) and not isinstance(v, bool) else None for v in values]


_PLAIN_NUMBERS = frozenset({int, float, type(None)})


def _from_profile(name: str, profile: NumericProfile | CategoricalProfile) -> Binning:
    if isinstance(profile, CategoricalProfile):
        return Binning(name, "categorical", categories=tuple(profile.categories))
    return Binning(name, "numeric", edges=tuple(profile.edges), low=profile.min, high=profile.max)


@dataclass(frozen=True)
class Layout:
    """The features to extract and bin, and the prediction's bins."""

    features: tuple[FeatureConfig, ...]  # what the extractor looks for
    binnings: tuple[Binning, ...]  # one per feature, same order
    prediction: Binning
    profile_sha256: str = ""

    @property
    def bins_per_feature(self) -> dict[str, int]:
        return {b.name: b.n_bins for b in self.binnings}


def build_layout(
    config: SidecarConfig, profile: ReferenceProfile | None = None, profile_sha256: str = ""
) -> Layout:
    """Configured features binned against the profile where it knows them;
    with no features configured, the profile's own features."""
    features = list(config.model.features)
    if not features and profile is not None:
        features = [FeatureConfig(name=n, type=p.kind) for n, p in profile.features.items()]
    binnings = []
    for feature in features:
        known = profile.features.get(feature.name) if profile is not None else None
        if known is not None:
            if known.kind != feature.type:
                raise ValueError(
                    f"model.features[{feature.name}]: type {feature.type} but the reference "
                    f"profile has it {known.kind}; fix the type in the config or rebuild the profile"
                )
            binnings.append(_from_profile(feature.name, known))
        elif feature.type == "categorical":
            binnings.append(Binning(feature.name, "categorical"))  # all in "other" until profiled
        else:
            binnings.append(Binning(feature.name, "numeric", edges=tuple(feature.bins or ())))
    return Layout(
        features=tuple(features),
        binnings=tuple(binnings),
        prediction=_prediction_binning(config, profile),
        profile_sha256=profile_sha256,
    )


def _prediction_binning(config: SidecarConfig, profile: ReferenceProfile | None) -> Binning:
    if profile is not None and profile.prediction is not None:
        return _from_profile("prediction", profile.prediction)
    edges = config.model.prediction.bins
    if edges is None and config.model.prediction.task == "classification":
        edges = list(DEFAULT_SCORE_EDGES)
    return Binning("prediction", "numeric", edges=tuple(edges or ()))


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def new_process_info() -> ProcessInfo:
    return ProcessInfo(id=uuid.uuid4().hex, pid=os.getpid(), start_time=time.time())


def take_snapshot(
    metrics: SidecarMetrics, *, layout: Layout, process: ProcessInfo, config: SidecarConfig
) -> Snapshot:
    """The cumulative counts, read from the registry that ``/metrics`` renders."""
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    families = list(metrics.registry.collect())
    for family in families:
        if not family.name.startswith(PREFIX):
            continue
        for sample in family.samples:
            labels = tuple(
                sorted((k, v) for k, v in sample.labels.items() if k not in _BASE_LABELS)
            )
            values[(sample.name, labels)] = sample.value

    def get(name: str, **labels: str) -> int:
        return int(values.get((PREFIX + name, tuple(sorted(labels.items()))), 0))

    def by_label(name: str, label: str) -> dict[str, int]:
        return {
            dict(key)[label]: int(value)
            for (sample, key), value in values.items()
            if sample == PREFIX + name and value
        }

    def histogram(name: str) -> Histogram:
        cumulative = [values.get((PREFIX + name + "_bucket", (("le", le),)), 0.0) for le in _LES]
        counts = [int(b - a) for a, b in zip([0.0, *cumulative], cumulative, strict=False)]
        return Histogram(counts=counts, sum=values.get((PREFIX + name + "_sum", ()), 0.0))

    def binned(binning: Binning, feature: str | None) -> BinCounts:
        if feature is None:
            counts = [get("prediction_bin_total", bin=str(i)) for i in range(binning.n_bins)]
            return BinCounts(
                counts=counts,
                missing=get("prediction_missing_total"),
                out_of_range=get("prediction_out_of_range_total"),
            )
        return BinCounts(
            counts=[
                get("feature_bin_total", feature=feature, bin=str(i)) for i in range(binning.n_bins)
            ],
            missing=get("feature_missing_total", feature=feature),
            out_of_range=get("feature_out_of_range_total", feature=feature),
        )

    model = config.model
    return Snapshot(
        process=process,
        taken_at=time.time(),
        model=model.name,
        version=model.version,
        role=model.role,
        profile_sha256=layout.profile_sha256,
        requests=by_label("requests_total", "code"),
        latency=histogram("request_duration_seconds"),
        upstream_latency=histogram("upstream_duration_seconds"),
        request_bytes=get("request_bytes_total"),
        response_bytes=get("response_bytes_total"),
        capture=CaptureCounts(
            records=get("capture_records_total"),
            bodies_parsed=get("capture_bodies_parsed_total"),
            unparsed=get("capture_skipped_total", reason="unparsed"),
            too_large=get("capture_skipped_total", reason="too_large"),
            dropped=get("capture_dropped_total", queue="capture"),
            log_dropped=get("capture_dropped_total", queue="log"),
            unknown_fields=get("schema_violations_total", kind="unknown_field"),
            wrong_type=get("schema_violations_total", kind="wrong_type"),
            missing_fields=get("schema_violations_total", kind="missing_field"),
        ),
        features={b.name: binned(b, b.name) for b in layout.binnings},
        prediction=binned(layout.prediction, None),
        classes=by_label("prediction_class_total", "class"),
        shadow=shadow_counts(families),
    )
