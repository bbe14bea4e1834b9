"""Reference profiles built from real files, through the library and the CLI."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from driftline_operator.cli.main import main
from driftline_operator.cli.profiles import ProfileError, ProfileOptions, build_profile_from_file
from driftline_sidecar.contract.profile import (
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    bin_categorical,
    bin_numeric,
    load_profile,
)

ROWS = 2_000


@pytest.fixture(scope="module")
def training() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(
        {
            "amount": rng.lognormal(3.0, 1.0, ROWS),
            "age": rng.integers(18, 90, ROWS),
            "country": rng.choice(
                ["DE", "FR", "US", "GB", "IT"], ROWS, p=[0.4, 0.3, 0.2, 0.06, 0.04]
            ),
            "items": rng.integers(0, 4, ROWS),
            "returning": rng.random(ROWS) < 0.3,
            "score": rng.random(ROWS),
            "label": rng.integers(0, 2, ROWS),
        }
    )
    frame.loc[::10, "amount"] = np.nan
    return frame


@pytest.fixture(params=["csv", "parquet", "jsonl"])
def data_file(request, training, tmp_path) -> Path:
    path = tmp_path / f"train.{request.param}"
    if request.param == "csv":
        training.to_csv(path, index=False)
    elif request.param == "parquet":
        training.to_parquet(path)
    else:
        training.to_json(path, orient="records", lines=True)
    return path


def test_profile_of_each_file_format(data_file, training):
    options = ProfileOptions(target="label", prediction="score", sample_size=300, seed=5)
    profile = build_profile_from_file(data_file, options)

    assert list(profile.features) == ["amount", "age", "country", "items", "returning"]
    assert profile.source.rows == ROWS and len(profile.source.sha256) == 64
    assert (profile.target_column, profile.prediction_column) == ("label", "score")

    amount = profile.features["amount"]
    assert isinstance(amount, NumericProfile)
    assert amount.missing_rate == pytest.approx(0.1)
    present = training["amount"].dropna().to_numpy()
    assert (amount.min, amount.max) == (pytest.approx(present.min()), pytest.approx(present.max()))
    assert amount.std == pytest.approx(present.std())
    assert len(amount.edges) == 9
    # Quantile bins: each holds about a tenth, computed by the sidecar's own binning.
    assert amount.expected == pytest.approx([0.1] * 10, abs=0.002)
    live = bin_numeric(present, amount.edges).counts
    assert amount.expected == pytest.approx((np.asarray(live) / present.size).tolist())

    country = profile.features["country"]
    assert isinstance(country, CategoricalProfile)
    assert country.categories == ["DE", "FR", "US", "GB", "IT"]
    assert sum(country.expected) == pytest.approx(1.0)
    # Integers with at most 10 values and booleans are categorical, as in Evidently.
    assert profile.features["items"].kind == "categorical"
    assert profile.features["returning"].kind == "categorical"
    assert profile.features["age"].kind == "numeric"

    assert isinstance(profile.prediction, NumericProfile)
    assert set(profile.sample) == {
        "amount",
        "age",
        "country",
        "items",
        "returning",
        "label",
        "score",
    }
    assert all(len(values) == 300 for values in profile.sample.values())


def test_sample_is_seeded_and_bounded(tmp_path, training):
    path = tmp_path / "train.parquet"
    training.to_parquet(path)

    first = build_profile_from_file(path, ProfileOptions(sample_size=50, seed=1))
    again = build_profile_from_file(path, ProfileOptions(sample_size=50, seed=1))
    other = build_profile_from_file(path, ProfileOptions(sample_size=50, seed=2))
    everything = build_profile_from_file(path, ProfileOptions(sample_size=10**6))

    assert first.sample == again.sample != other.sample
    assert len(everything.sample["age"]) == ROWS
    assert None in everything.sample["amount"]  # missing values stay missing, as JSON null


def test_top_categories_then_other(tmp_path):
    values = ["a"] * 50 + ["b"] * 30 + ["c"] * 10 + ["d"] * 6 + ["e"] * 4
    path = tmp_path / "cats.csv"
    pd.DataFrame({"x": values, "y": range(100)}).to_csv(path, index=False)

    profile = build_profile_from_file(path, ProfileOptions(features=["x"], max_categories=3))
    x = profile.features["x"]

    assert isinstance(x, CategoricalProfile)
    assert x.categories == ["a", "b", "c"]
    assert x.expected == pytest.approx([0.5, 0.3, 0.1, 0.1])
    assert bin_categorical(["e"], x.categories).counts == [0, 0, 0, 1]


def test_discrete_numbers_get_one_bin_per_value(tmp_path):
    path = tmp_path / "discrete.csv"
    values = [0.0] * 70 + [1.0] * 20 + [2.5] * 10
    pd.DataFrame({"n": values}).to_csv(path, index=False)

    n = build_profile_from_file(path, ProfileOptions()).features["n"]

    assert isinstance(n, NumericProfile)
    assert n.edges == [1.0, 2.5]
    assert n.distinct_values == 3
    assert n.expected == pytest.approx([0.7, 0.2, 0.1])


def test_zero_inflated_numbers_get_deduplicated_edges(tmp_path):
    rng = np.random.default_rng(2)
    values = np.where(rng.random(1_000) < 0.6, 0.0, rng.exponential(5.0, 1_000))
    path = tmp_path / "zeros.csv"
    pd.DataFrame({"z": values}).to_csv(path, index=False)

    z = build_profile_from_file(path, ProfileOptions()).features["z"]

    assert isinstance(z, NumericProfile)
    assert z.edges[0] > 0.0  # no edge at the minimum: its bin below would be empty
    assert len(z.edges) == len(set(z.edges)) < 9
    assert z.expected[0] == pytest.approx(0.6, abs=0.05)


# --- bad data ---------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


BAD_DATA = [
    ("empty.csv", "", [], "empty.csv: the file is empty"),
    ("header.csv", "a,b\n", [], "header.csv: the file holds no data rows"),
    ("gaps.csv", "a,b\n1,\n2,\n3,\n", [], "column 'b': every value is missing"),
    ("const.csv", "a,b\n1.5,x\n1.5,y\n", [], "column 'a' is constant (1.5 in every row)"),
    ("mixed.csv", "a\n1\n2\n3\nN/A?\n", [], "column 'a': mixed types (3 of 4 values are numbers"),
    (
        "mixed.jsonl",
        '{"a": 1}\n{"a": "x"}\n{"a": 2}\n',
        [],
        "column 'a': mixed types (int and text",
    ),
    ("ok.csv", "a,b\n1,x\n2,y\n", ["--features", "a,c"], "column 'c' is not in"),
    ("ok.csv", "a,b\n1,x\n2,y\n", ["--numeric", "b"], "column 'b' is numeric but holds 'x'"),
    ("data.xlsx", "a\n1\n", [], "unknown data format '.xlsx'"),
    ("bad.parquet", "a,b\n1,2\n", [], "bad.parquet: cannot read it as Parquet"),
    ("bad.jsonl", "{not json\n", [], "bad.jsonl: cannot read it as JSON lines"),
    ("ok.csv", "a,b\n1,x\n2,y\n", ["--bins", "1"], "--bins must be at least 2"),
]


@pytest.mark.parametrize(("name", "text", "extra", "message"), BAD_DATA)
def test_bad_data_is_a_clear_error_with_exit_code_2(tmp_path, capsys, name, text, extra, message):
    path = write(tmp_path, name, text)

    code = main(["profile", "build", str(path), "-o", str(tmp_path / "p.json"), *extra])

    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.startswith("driftline: error: ") and "Traceback" not in err
    assert not (tmp_path / "p.json").exists()


def test_identifier_columns_are_refused_unless_declared(tmp_path):
    ids = [f"user-{i}" for i in range(100)]
    path = tmp_path / "ids.csv"
    pd.DataFrame({"id": ids, "v": np.arange(100.0)}).to_csv(path, index=False)

    with pytest.raises(ProfileError, match="column 'id': 100 distinct text values"):
        build_profile_from_file(path, ProfileOptions())
    declared = build_profile_from_file(path, ProfileOptions(categorical=["id"]))
    assert len(declared.features["id"].categories) == 20  # type: ignore[union-attr]


# --- CLI --------------------------------------------------------------------------


def test_cli_build_show_configmap(tmp_path, training, capsys):
    data = tmp_path / "train.csv"
    training.to_csv(data, index=False)
    out = tmp_path / "profile.json"

    code = main(
        [
            "profile", "build", str(data), "-o", str(out), "--target", "label",
            "--prediction", "score", "--features", "amount,country,items",
            "--numeric", "items", "--bins", "5", "--sample-size", "20", "--seed", "3",
        ]
    )  # fmt: skip
    assert code == 0
    profile = load_profile(str(out))
    assert list(profile.features) == ["amount", "country", "items"]
    assert profile.features["items"].kind == "numeric"
    assert profile.features["amount"].n_bins == 5
    assert len(profile.sample["score"]) == 20
    capsys.readouterr()

    assert main(["profile", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "2000 rows" in shown and "target    label" in shown
    assert re.search(r"country +categorical +6 +0.0%  DE \d+%, FR \d+%", shown)
    assert "score (prediction)" in shown

    assert main(["profile", "configmap", str(out), "--name", "fraud-ref", "--namespace", "ml"]) == 0
    manifest = yaml.safe_load(capsys.readouterr().out)
    assert manifest["kind"] == "ConfigMap"
    assert manifest["metadata"]["name"] == "fraud-ref"
    assert manifest["metadata"]["namespace"] == "ml"
    stored = ReferenceProfile.model_validate_json(manifest["data"]["profile.json"])
    assert stored == profile


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["profile", "show", "{missing}"], "cannot read"),
        (["profile", "show", "{notprofile}"], "is not a Driftline profile: schema_version"),
        (
            ["profile", "configmap", "{notprofile}", "--name", "Bad_Name"],
            "not a valid ConfigMap name",
        ),
    ],
)
def test_cli_errors_on_profiles(tmp_path, capsys, args, message):
    notprofile = write(tmp_path, "np.json", json.dumps({"schema_version": 9}))
    paths = {"missing": str(tmp_path / "missing.json"), "notprofile": str(notprofile)}

    code = main([arg.format(**paths) for arg in args])

    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_cli_usage_errors_exit_2_and_help_exits_0(capsys):
    assert main(["profile", "build"]) == 2
    assert "the following arguments are required" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "profile" in capsys.readouterr().out


def test_console_script_runs_in_a_subprocess(tmp_path):
    data = write(tmp_path, "train.csv", "a,b\n1.0,x\n2.0,y\n3.5,x\n")
    script = Path(sys.executable).parent / "driftline"

    ok = subprocess.run(
        [str(script), "profile", "build", str(data), "-o", str(tmp_path / "p.json")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    bad = subprocess.run(
        [str(script), "profile", "build", str(tmp_path / "nope.csv"), "-o", "x.json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert ok.returncode == 0, ok.stderr
    assert load_profile(str(tmp_path / "p.json")).features["a"].kind == "numeric"
    assert bad.returncode == 2
    assert bad.stderr == f"driftline: error: {tmp_path / 'nope.csv'}: no such file\n"


def test_demo_is_handed_its_own_arguments(capsys):
    assert main(["demo", "--help"]) == 0
    assert "usage: driftline demo" in capsys.readouterr().out
    assert main(["demo", "--requests", "many"]) == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err
