"""``driftline drift``: real files in, the operator's verdicts and exit codes out."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftline_operator.analysis.judge import judge_drift
from driftline_operator.analysis.windows import Window
from driftline_operator.api.spec import Drift
from driftline_operator.cli.compare import DriftInputError, bin_frame, compare
from driftline_operator.cli.main import main
from driftline_operator.cli.profiles import ProfileOptions, build_profile_from_file, read_table
from driftline_sidecar.contract.profile import NumericProfile, bin_numeric

ROWS = 3_000


def _frame(seed: int, *, amount_mean: float = 3.0, countries=("DE", "FR", "US")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.lognormal(amount_mean, 1.0, ROWS),
            "age": rng.integers(18, 90, ROWS),
            "country": rng.choice(list(countries), ROWS),
            "score": rng.random(ROWS),
        }
    )


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


@pytest.fixture
def reference(tmp_path) -> Path:
    return _write(_frame(1), tmp_path / "reference.csv")


def _shifted() -> pd.DataFrame:
    return _frame(2, amount_mean=3.8, countries=("DE", "FR", "US", "XX"))


@pytest.fixture(params=["csv", "parquet", "jsonl"])
def each_format(request, tmp_path) -> Path:
    return _write(_shifted(), tmp_path / f"current.{request.param}")


@pytest.fixture
def drifted(tmp_path) -> Path:
    return _write(_shifted(), tmp_path / "current.parquet")


def _run_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main(["drift", *argv, "--json"])
    out = capsys.readouterr().out

    def refuse(constant: str) -> None:
        raise AssertionError(f"not JSON: {constant}")

    return code, json.loads(out, parse_constant=refuse)


def test_drifted_data_exits_1_and_names_the_drifted_features(capsys, reference, each_format):
    drifted = each_format
    code, result = _run_json(capsys, str(reference), str(drifted), "--prediction", "score")
    assert code == 1
    assert result["drift"] is True
    assert result["drifted"] == ["amount", "country"]
    by_name = {f["feature"]: f for f in result["features"]}
    assert set(by_name) == {"amount", "age", "country"}
    assert by_name["amount"]["verdict"] == "drift"
    assert by_name["amount"]["statistic"] == "wasserstein"
    assert by_name["amount"]["value"] >= by_name["amount"]["threshold"] == 0.1
    assert by_name["age"]["verdict"] == "ok"
    assert by_name["country"]["statistic"] == "jensenshannon"
    assert by_name["country"]["out_of_range_rate"] == pytest.approx(0.25, abs=0.03)  # "XX"
    assert result["prediction"]["feature"] == "score"
    assert result["prediction"]["verdict"] == "ok"
    assert result["drifted_share"] == pytest.approx(2 / 3)
    assert result["current"] == {"path": str(drifted), "kind": "data", "rows": ROWS}


def test_same_distribution_exits_0(capsys, reference, tmp_path):
    current = _write(_frame(3), tmp_path / "current.parquet")
    code, result = _run_json(capsys, str(reference), str(current))
    assert code == 0
    assert result["drift"] is False
    assert result["drifted"] == []
    assert {f["verdict"] for f in result["features"]} == {"ok"}


def test_the_verdicts_are_the_operators(capsys, reference, drifted):
    """The command prints judge_drift's verdicts on the counts the sidecar's
    own binning gives for the same rows."""
    profile = build_profile_from_file(reference, ProfileOptions())
    frame = read_table(drifted)
    counts, absent = bin_frame(frame, profile)
    amount = profile.features["amount"]
    assert isinstance(amount, NumericProfile)
    sidecar = bin_numeric(frame["amount"].to_numpy(), amount.edges, low=amount.min, high=amount.max)
    assert counts.features["amount"].counts == sidecar.counts
    assert absent == []
    expected = judge_drift(profile, Window("stable", counts, 0.0, 1), Drift(method="psi"))
    code, result = _run_json(capsys, str(reference), str(drifted), "--method", "psi")
    assert code == 1
    assert [
        (f["feature"], f["verdict"], f["statistic"], f["value"]) for f in result["features"]
    ] == [(v.feature, v.status, v.method, v.score) for v in expected.features]


def test_profile_json_as_reference_gives_the_same_verdicts(capsys, reference, drifted, tmp_path):
    profile = tmp_path / "profile.json"
    assert main(["profile", "build", str(reference), "-o", str(profile)]) == 0
    _, from_data = _run_json(capsys, str(reference), str(drifted))
    code, from_profile = _run_json(capsys, str(profile), str(drifted))
    assert code == 1
    assert from_profile["reference"]["kind"] == "profile"
    assert from_profile["features"] == from_data["features"]


def test_a_snapshot_as_current(capsys, reference, drifted, tmp_path):
    profile_path = tmp_path / "profile.json"
    assert main(["profile", "build", str(reference), "-o", str(profile_path)]) == 0
    _, from_data = _run_json(capsys, str(profile_path), str(drifted))
    comparison = compare(profile_path, drifted)
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(comparison.counts.model_dump_json())
    code, from_snapshot = _run_json(capsys, str(profile_path), str(snapshot))
    assert code == 1
    assert from_snapshot["current"]["kind"] == "snapshot"
    assert from_snapshot["features"] == from_data["features"]

    # Counts binned against another profile are refused, naming both.
    other = comparison.counts.model_copy(update={"profile_sha256": "ab" * 32})
    snapshot.write_text(other.model_dump_json())
    assert main(["drift", str(profile_path), str(snapshot)]) == 2
    assert "binned against profile sha256 abababababab" in capsys.readouterr().err


def test_text_output_lists_every_feature_and_the_dataset_verdict(capsys, reference, drifted):
    assert main(["drift", str(reference), str(drifted)]) == 1
    lines = capsys.readouterr().out.splitlines()
    header = lines[3].split()
    assert header == ["feature", "kind", "statistic", "value", "threshold", "verdict", "samples"]
    rows = {line.split()[0]: line.split() for line in lines[4:8]}
    assert rows["amount"][1:3] == ["numeric", "wasserstein"]
    assert rows["amount"][5] == "drift"
    assert rows["score"][5] == "ok"
    assert lines[-1].endswith("DRIFT")


def test_a_feature_missing_from_current_counts_as_missing(capsys, reference, tmp_path):
    current = _write(_frame(4).drop(columns=["age"]), tmp_path / "current.csv")
    code, result = _run_json(capsys, str(reference), str(current))
    assert code == 0
    assert result["absent"] == ["age"]
    age = next(f for f in result["features"] if f["feature"] == "age")
    assert age["verdict"] == "insufficient_data"
    assert age["missing_rate"] == 1.0
    assert result["insufficient_data"] == ["age"]


def test_values_of_the_wrong_type_count_as_missing(reference, tmp_path):
    frame = _frame(5).astype({"amount": object})
    frame.loc[:99, "amount"] = "unknown"  # not a marker read_csv takes for missing
    comparison = compare(reference, _write(frame, tmp_path / "current.csv"))
    assert comparison.counts.features["amount"].missing == 100
    assert comparison.counts.capture.wrong_type == 100


def test_infinite_statistics_are_null_in_json(capsys, reference, drifted):
    # Chi-square of a category the reference never saw is infinite.
    code, result = _run_json(capsys, str(reference), str(drifted), "--method", "chisquare")
    assert code == 1
    country = next(f for f in result["features"] if f["feature"] == "country")
    assert country["stats"]["chisquare_statistic"] is None
    assert country["value"] == 0.0  # the p-value


def _error(capsys, *argv: str) -> str:
    assert main(["drift", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    assert len(captured.err.splitlines()) == 1
    return captured.err


def test_missing_file(capsys, reference, tmp_path):
    err = _error(capsys, str(reference), str(tmp_path / "nope.csv"))
    assert f"CURRENT: {tmp_path / 'nope.csv'}: no such file" in err
    err = _error(capsys, str(tmp_path / "gone.parquet"), str(reference))
    assert f"REFERENCE: {tmp_path / 'gone.parquet'}: no such file" in err


def test_no_shared_features(capsys, reference, tmp_path):
    other = _write(pd.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]}), tmp_path / "other.csv")
    err = _error(capsys, str(reference), str(other))
    assert "no shared features" in err
    assert "amount, age, country, score" in err
    assert "has x, y" in err


def test_unreadable_format(capsys, reference, tmp_path):
    broken = tmp_path / "current.parquet"
    broken.write_bytes(b"this is not parquet")
    assert "cannot read it as Parquet" in _error(capsys, str(reference), str(broken))
    text = tmp_path / "current.txt"
    text.write_text("a,b\n1,2\n")
    assert "unknown data format '.txt'" in _error(capsys, str(reference), str(text))


def test_a_broken_profile_names_the_field(capsys, reference, drifted, tmp_path):
    profile = tmp_path / "profile.json"
    assert main(["profile", "build", str(reference), "-o", str(profile)]) == 0
    capsys.readouterr()
    document = json.loads(profile.read_text())
    document["features"]["amount"]["edges"] = [3.0, 1.0]
    profile.write_text(json.dumps(document))
    err = _error(capsys, str(profile), str(drifted))
    assert f"{profile} is not a valid Driftline profile: features.amount" in err
    assert "strictly increasing" in err


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [("--drift-share", "1.5", "--drift-share"), ("--min-samples", "0", "--min-samples")],
)
def test_bad_options_name_the_option(capsys, reference, drifted, option, value, named):
    assert _error(capsys, str(reference), str(drifted), option, value).startswith(
        f"driftline: error: {named}: "
    )


def test_compare_raises_a_typed_error(reference, tmp_path):
    with pytest.raises(DriftInputError, match="no such file"):
        compare(reference, tmp_path / "missing.jsonl")


def test_the_installed_command_exits_with_the_verdict(reference, drifted, tmp_path):
    """As a CI job runs it: a real process, its exit status the verdict."""
    same = _write(_frame(6), tmp_path / "same.csv")
    command = [sys.executable, "-m", "driftline_operator.cli.main", "drift", str(reference)]
    assert subprocess.run([*command, str(drifted)], capture_output=True).returncode == 1
    assert subprocess.run([*command, str(same)], capture_output=True).returncode == 0
    missing = subprocess.run([*command, str(tmp_path / "x.csv")], capture_output=True, text=True)
    assert missing.returncode == 2
    assert "no such file" in missing.stderr
