"""The demo's models: logistic regression trained with numpy on synthetic data.

The world the demo lives in: four numeric features ``f0`` … ``f3`` drawn from
a standard normal, and a label ("fraud") drawn with probability
``sigmoid(x·w* + b*)``. Stable is trained on one sample of that world; the
candidate of each scenario is trained (or served) so that the rollout has
something true to find:

- ``healthy``: retrained on a fresh sample of the same world: a different
  but equally good model whose scores are distributed like stable's;
- ``latency`` / ``errors``: the same kind of model, served slowly or failing;
- ``drift``: trained on relabelled data (fraud labelled far more often), so it
  answers the same inputs with a visibly different score distribution;
- ``quality``: stable with the weights of two features swapped. The features
  are alike, so its scores are distributed as stable's (nothing to see
  without labels), but it is right far less often: only the labels, sent a
  few seconds after each answer, show it.
- ``reliance``: a world where ``f3`` is a second, noisier reading of what
  ``f0`` measures (the same amount in another currency, say). Stable was
  trained before ``f3`` was logged; the candidate without ``f0``. It is as
  accurate and its scores look alike; only its explanations show that it
  relies on ``f3`` where stable relies on ``f0``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

Scenario = Literal["healthy", "latency", "errors", "drift", "quality", "reliance"]
SCENARIOS: tuple[Scenario, ...] = ("healthy", "latency", "errors", "drift", "quality", "reliance")
N_FEATURES = 4
TRUE_WEIGHTS = np.array([1.5, -1.0, 0.7, 0.0])
TRUE_BIAS = -0.5
TRAINING_ROWS = 5_000
# drift: the relabelled data's log-odds are this much higher, which moves the
# candidate's scores far enough to be seen in a window of ~100 requests.
RELABEL_SHIFT = 2.5
# latency / errors: what the candidate's server adds to every prediction call.
BAD_LATENCY_MS = 150.0
BAD_ERROR_RATE = 0.15
# reliance: how far f3, the second reading of f0, is off (f0's spread is 1).
PROXY_NOISE = 0.05


@dataclass(frozen=True)
class Model:
    weights: tuple[float, ...]
    bias: float
    accuracy: float  # on a held-out sample of the true world

    def save(self, path: Path) -> Path:
        """The JSON ``model_server --weights`` loads."""
        path.write_text(json.dumps({"weights": list(self.weights), "bias": self.bias}))
        return path


@dataclass(frozen=True)
class Serving:
    """A model and how its server treats calls."""

    model: Model
    latency_ms: float = 0.0
    error_rate: float = 0.0
    note: str = ""  # how this candidate differs from stable, for the printout


def inputs(rng: np.random.Generator, rows: int, scenario: Scenario = "healthy") -> np.ndarray:
    """Feature rows of the scenario's world: standard normals, except that in
    ``reliance``'s ``f3`` reads ``f0`` again, with noise."""
    x = rng.normal(0.0, 1.0, (rows, N_FEATURES))
    if scenario == "reliance":
        x[:, 3] = x[:, 0] + rng.normal(0.0, PROXY_NOISE, rows)
    return x


def sample(
    rng: np.random.Generator, rows: int, *, shift: float = 0.0, scenario: Scenario = "healthy"
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of the demo's world (``shift`` relabels: higher log-odds)."""
    x = inputs(rng, rows, scenario)
    p = _sigmoid(x @ TRUE_WEIGHTS + TRUE_BIAS + shift)
    return x, (rng.random(rows) < p).astype(np.float64)


def fit(
    x: np.ndarray, y: np.ndarray, *, iterations: int = 25, l2: float = 1e-3
) -> tuple[np.ndarray, float]:
    """Logistic regression by Newton's method (IRLS): converges in a few steps."""
    design = np.column_stack([x, np.ones(len(x))])
    theta = np.zeros(design.shape[1])
    penalty = l2 * np.eye(design.shape[1])
    for _ in range(iterations):
        p = _sigmoid(design @ theta)
        gradient = design.T @ (p - y) + penalty @ theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + penalty
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return theta[:-1], float(theta[-1])


def train(
    rng: np.random.Generator,
    *,
    shift: float = 0.0,
    scenario: Scenario = "healthy",
    without: int | None = None,
) -> Model:
    """A model fitted to a sample of the world; ``without`` a feature it never saw."""
    x, y = sample(rng, TRAINING_ROWS, shift=shift, scenario=scenario)
    if without is not None:
        x[:, without] = 0.0  # a column of zeros: its weight stays 0
    weights, bias = fit(x, y)
    # judged on the true world, whatever it learnt from
    x, y = sample(rng, TRAINING_ROWS, scenario=scenario)
    accuracy = float(np.mean((_sigmoid(x @ weights + bias) >= 0.5) == (y == 1.0)))
    return Model(tuple(float(w) for w in weights), bias, accuracy)


def models(scenario: Scenario, *, seed: int) -> tuple[Serving, Serving]:
    """Stable and the scenario's candidate, both trained from ``seed``."""
    rng = np.random.default_rng(seed)
    stable = Serving(train(rng))
    match scenario:
        case "healthy":
            candidate = Serving(train(rng), note="retrained on fresh data from the same world")
        case "latency":
            note = f"retrained, but served with {BAD_LATENCY_MS:g} ms added to each call"
            candidate = Serving(train(rng), latency_ms=BAD_LATENCY_MS, note=note)
        case "errors":
            note = f"retrained, but {BAD_ERROR_RATE:.0%} of its calls fail with HTTP 500"
            candidate = Serving(train(rng), error_rate=BAD_ERROR_RATE, note=note)
        case "drift":
            note = "trained on relabelled data (fraud labelled far more often)"
            candidate = Serving(train(rng, shift=RELABEL_SHIFT), note=note)
        case "quality":
            w = list(stable.model.weights)
            w[0], w[1] = w[1], w[0]
            x, y = sample(rng, TRAINING_ROWS)
            accuracy = float(
                np.mean((_sigmoid(x @ np.asarray(w) + stable.model.bias) >= 0.5) == (y == 1.0))
            )
            note = (
                "stable with two features' weights swapped: same score distribution, less accurate"
            )
            candidate = Serving(Model(tuple(w), stable.model.bias, accuracy), note=note)
        case "reliance":
            old, new = (train(rng, scenario="reliance", without=i) for i in (3, 0))
            # Both judged on one large held-out sample: what differs is the models.
            x, y = sample(rng, 10 * TRAINING_ROWS, scenario="reliance")
            stable = Serving(replace(old, accuracy=held_out_accuracy(old, x, y)))
            note = "trained on f3 (a second, noisier reading of f0) instead of f0"
            candidate = Serving(replace(new, accuracy=held_out_accuracy(new, x, y)), note=note)
    return stable, candidate


def held_out_accuracy(model: Model, x: np.ndarray, y: np.ndarray) -> float:
    scores = _sigmoid(x @ np.asarray(model.weights) + model.bias)
    return float(np.mean((scores >= 0.5) == (y == 1.0)))


def labelled_scores(
    model: Model, *, seed: int, rows: int = 20_000
) -> tuple[np.ndarray, np.ndarray]:
    """A labelled held-out sample of the true world with the model's scores:
    what its reference profile's calibration map is built from."""
    x, y = sample(np.random.default_rng(seed), rows)
    return _sigmoid(x @ np.asarray(model.weights) + model.bias), y


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))
