"""``shap`` against the model as a black box, one request per explanation.

shap calls the model several times per explained row (PermutationExplainer
once per permutation; KernelExplainer once for the row and once for its
coalitions). To send the model one request per explanation, each row is
explained twice with the same random state: the first pass records the
matrices shap asks about (answering zeros), those are sent as one batch, and
the second pass replays the model's answers in order, checking each matrix
is the one recorded. shap's own arithmetic (a few ms per row) runs twice; the
model, whose answer costs a network round trip and its own CPU, once.

The choice of algorithm and budget comes from ``bench/explain.py``:
PermutationExplainer with an independent masker over the profile's
background is exact in its additivity (the permutation's steps telescope
from the background's mean output to the row's output) and needs
``2 * features + 1`` evaluations per permutation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from driftline_operator.explain.model import BlackBoxModel

Algorithm = Literal["permutation", "kernel"]
DEFAULT_PERMUTATIONS = 4  # max_evals = permutations * (2 * features + 1)
KERNEL_SAMPLES_PER_FEATURE = 8  # KernelExplainer's nsamples = this * features + 2048 // features


@dataclass(frozen=True)
class Explanation:
    """One row explained: ``base_value + values.sum() == output`` (within float error)."""

    features: list[str]
    row: list[Any]  # the explained features' values, as sent to the model
    output: float  # the model's own answer for the row
    base_value: float  # the model's mean answer over the background
    values: list[float]  # one contribution per feature

    def sorted(self) -> list[tuple[str, Any, float]]:
        """(feature, value, contribution), largest contribution first."""
        items = zip(self.features, self.row, self.values, strict=True)
        return sorted(items, key=lambda item: -abs(item[2]))

    @property
    def additivity_error(self) -> float:
        return abs(self.base_value + sum(self.values) - self.output)


class _OneRequest:
    """The model as shap sees it: recorded, sent once, replayed."""

    def __init__(self, model: BlackBoxModel) -> None:
        self.model = model
        self.mode: Literal["direct", "record", "replay"] = "direct"
        self.calls: list[np.ndarray] = []
        self.answers: list[np.ndarray] = []
        self.position = 0

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        matrix = np.asarray(matrix, dtype=np.float64)
        if self.mode == "direct":
            return self.model(matrix)
        if self.mode == "record":
            self.calls.append(matrix.copy())
            return np.zeros(len(matrix))
        recorded = self.calls[self.position]
        if recorded.shape != matrix.shape or not np.array_equal(recorded, matrix, equal_nan=True):
            raise RuntimeError("shap asked different rows when replayed; its random state leaked")
        answer = self.answers[self.position]
        self.position += 1
        return answer

    def send(self, rows: np.ndarray) -> np.ndarray:
        """Every recorded matrix and ``rows`` in one request; the answers to the
        calls are kept for the replay, those to ``rows`` returned."""
        outputs = self.model(np.concatenate([*self.calls, rows]))
        splits = np.cumsum([len(call) for call in self.calls])
        *self.answers, own = np.split(outputs, splits)
        self.mode, self.position = "replay", 0
        return own

    def reset(self) -> None:
        self.mode, self.calls, self.answers, self.position = "record", [], [], 0


class Explainer:
    """Explain rows of the model against a background, one request per row."""

    def __init__(
        self,
        model: BlackBoxModel,
        background: np.ndarray,
        *,
        algorithm: Algorithm = "permutation",
        permutations: int = DEFAULT_PERMUTATIONS,
        kernel_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        import shap  # heavy (numba, sklearn): only where explanations run

        if background.ndim != 2 or len(background) == 0:
            raise ValueError("the background needs at least one row of every feature")
        self.model = model
        self.feature_names = model.columns.names
        self.algorithm = algorithm
        self._wrapped = _OneRequest(model)
        width = background.shape[1]
        self._rng = np.random.RandomState(seed)
        if algorithm == "permutation":
            masker = shap.maskers.Independent(background, max_samples=len(background))
            self._shap: Any = shap.PermutationExplainer(self._wrapped, masker, seed=seed)
            self._call = {"max_evals": permutations * (2 * width + 1), "silent": True}
        else:
            # KernelExplainer asks f(background) once here: a request per explainer, not per row.
            self._shap = shap.KernelExplainer(self._wrapped, background)
            samples = kernel_samples or KERNEL_SAMPLES_PER_FEATURE * width + 2048 // width
            # No L1 feature selection: it would run on the recording pass's zeros too.
            self._call = {"nsamples": samples, "silent": True, "l1_reg": False}

    def explain(self, matrix: np.ndarray) -> list[Explanation]:
        """One explanation per row of ``matrix`` (each one request to the model)."""
        return [self._explain_row(row) for row in np.atleast_2d(matrix)]

    def _explain_row(self, row: np.ndarray) -> Explanation:
        wrapped, batch = self._wrapped, row[np.newaxis, :]
        state = self._rng.get_state()
        wrapped.reset()
        self._run(batch, state)
        # The row itself rides along: its own output checks additivity independently.
        output = wrapped.send(batch)
        values, base = self._run(batch, state)
        wrapped.mode = "direct"
        return Explanation(
            features=self.feature_names,
            row=[self.model.columns.wire(batch)[0][i] for i in self.model.columns.explained],
            output=float(output[0]),
            base_value=base,
            values=values,
        )

    def _run(self, batch: np.ndarray, state: Any) -> tuple[list[float], float]:
        """shap's values and base value, from one random state."""
        saved = np.random.get_state()
        np.random.set_state(state)  # shap draws permutations and coalitions from numpy's global
        try:
            if self.algorithm == "permutation":
                result = self._shap(batch, **self._call)
                values = np.asarray(result.values[0], dtype=np.float64)
                base = float(np.ravel(result.base_values)[0])
            else:
                values = np.asarray(
                    self._shap.shap_values(batch, **self._call)[0], dtype=np.float64
                )
                base = float(np.ravel(self._shap.expected_value)[0])
        finally:
            self._rng.set_state(np.random.get_state())
            np.random.set_state(saved)
        return values.tolist(), base
