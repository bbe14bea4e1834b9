"""Raw samples (the profile's stored sample, or a window's) as clean float arrays."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def clean_sample(values: ArrayLike, *, name: str = "sample") -> np.ndarray:
    """Floats with None, NaN and infinities dropped (Evidently drops them too)."""
    array = np.asarray(values, dtype=np.float64)  # None becomes NaN
    array = array[np.isfinite(array)]
    if array.size == 0:
        raise ValueError(f"the {name} sample holds no finite values")
    return array
