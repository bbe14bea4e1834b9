"""The SHAP background: built into the profile, read back as a matrix, and
wire rows to shap's numbers and back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftline_operator.cli.profiles import ProfileError, ProfileOptions, build_profile
from driftline_operator.explain.background import BackgroundError, from_profile
from driftline_sidecar.contract.config import FeatureConfig
from driftline_sidecar.contract.profile import SourceInfo

SOURCE = SourceInfo(path="train.csv", sha256="0" * 64, rows=500)


def training() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "amount": rng.lognormal(3.0, 1.0, 500),
            "country": rng.choice(["DE", "FR", "US"], 500),
            "email": [f"user{i}@example.com" for i in range(500)],
            "label": rng.integers(0, 2, 500),
        }
    )
    frame.loc[::3, "amount"] = np.nan
    return frame


FEATURES = [
    FeatureConfig(name="amount"),
    FeatureConfig(name="email", type="categorical", pii="hash"),
    FeatureConfig(name="country", type="categorical"),
]


def profile(**options: object):  # type: ignore[no-untyped-def]
    return build_profile(
        training(),
        source=SOURCE,
        options=ProfileOptions(
            features=["amount", "country", "email"],
            categorical=["email"],
            target="label",
            **options,  # type: ignore[arg-type]
        ),
    )


def test_the_background_is_a_small_seeded_sample_of_complete_rows() -> None:
    built = profile(background_size=7)
    assert set(built.background) == {"amount", "country", "email"}
    assert all(len(column) == 7 for column in built.background.values())
    assert None not in built.background["amount"]  # rows with a missing feature left out
    assert built.background == profile(background_size=7).background
    assert profile(background_size=0).background == {"amount": [], "country": [], "email": []}
    with pytest.raises(ProfileError, match="--background-size"):
        ProfileOptions(background_size=-1)


def test_wire_rows_become_numbers_and_back() -> None:
    built = profile(background_size=5)
    columns, background = from_profile(built, FEATURES)
    assert columns.names == ["amount", "country"]  # the PII feature is not explained
    assert background.shape == (5, 2)
    assert np.all(np.isfinite(background))
    sent = columns.wire(background)
    assert [row[0] for row in sent] == built.background["amount"]
    assert [row[2] for row in sent] == built.background["country"]
    assert {row[1] for row in sent} == {built.background["email"][0]}  # held fixed
    # A category the profile never saw gets a code of its own and comes back unchanged.
    matrix = columns.matrix([[12.5, "JP"], [None, "DE"]])
    assert columns.wire(matrix)[0][::2] == [12.5, "JP"]
    assert columns.wire(matrix)[1][::2] == [None, "DE"]


def test_a_profile_without_a_background_is_refused_with_the_fix() -> None:
    with pytest.raises(BackgroundError, match="--background-size"):
        from_profile(profile(background_size=0), FEATURES)
