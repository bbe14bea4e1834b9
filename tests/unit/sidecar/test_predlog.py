"""The prediction log: rotation, PII hashing, sampling, drops and flushing, on real files."""

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from driftline_sidecar import predlog
from driftline_sidecar.contract.config import PredictionLogConfig
from driftline_sidecar.predlog import PredictionLog, hash_value

SALT_ENV = "DRIFTLINE_TEST_PII_SALT"


def config(path: Path, **overrides: Any) -> PredictionLogConfig:
    return PredictionLogConfig(path=str(path), salt_env=SALT_ENV, **overrides)


def record(i: int, **features: Any) -> dict[str, Any]:
    return {
        "ts": 1700000000.0 + i,
        "request_id": f"req-{i}",
        "model": "fraud",
        "version": "v1",
        "features": {"amount": i * 1.5, **features},
        "prediction": i % 2,
        "score": 0.5,
        "latency_ms": 1.25,
    }


def lines(*paths: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for p in paths for line in p.read_text().splitlines()]


@pytest.fixture
def salted(monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setenv(SALT_ENV, "pepper")
    return b"pepper"


@pytest.fixture
def opened() -> Iterator[list[PredictionLog]]:
    """Logs a test opened, closed afterwards even when the test fails."""
    logs: list[PredictionLog] = []
    yield logs
    for one in logs:
        one.close()


# ---------------------------------------------------------------- writing and rotating


def test_close_writes_every_queued_record_in_order(tmp_path: Path, opened: list) -> None:
    path = tmp_path / "deep" / "dir" / "predictions.jsonl"  # parents are created
    log = PredictionLog(config(path, queue_size=1000), pii_fields=[])
    opened.append(log)

    assert all(log.write(record(i)) for i in range(500))
    log.close()

    written = lines(path)
    assert [r["request_id"] for r in written] == [f"req-{i}" for i in range(500)]
    assert written[7] == record(7)
    assert log.dropped == 0


def test_rotation_keeps_backups_and_bounds_the_total_size(tmp_path: Path, opened: list) -> None:
    path = tmp_path / "predictions.jsonl"
    log = PredictionLog(config(path, max_bytes=2048, backups=2), pii_fields=[])
    opened.append(log)

    for i in range(300):  # ~45 KB of records into 3 files of 2 KB
        log.write(record(i))
    log.close()

    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["predictions.jsonl", "predictions.jsonl.1",
                                       "predictions.jsonl.2"]  # fmt: skip
    assert all(f.stat().st_size <= 2048 for f in files)
    assert sum(f.stat().st_size for f in files) <= 3 * 2048
    kept = lines(tmp_path / "predictions.jsonl.2", tmp_path / "predictions.jsonl.1", path)
    ids = [int(r["request_id"].split("-")[1]) for r in kept]
    assert ids == list(range(ids[0], 300))  # the newest records, oldest file first


def test_without_backups_the_file_starts_over(tmp_path: Path, opened: list) -> None:
    path = tmp_path / "predictions.jsonl"
    log = PredictionLog(config(path, max_bytes=1024, backups=0), pii_fields=[])
    opened.append(log)

    for i in range(200):
        log.write(record(i))
    log.close()

    assert [f.name for f in tmp_path.iterdir()] == ["predictions.jsonl"]
    assert 0 < path.stat().st_size <= 1024
    assert lines(path)[-1]["request_id"] == "req-199"


def test_values_that_are_not_json_are_written_as_text(tmp_path: Path, opened: list) -> None:
    path = tmp_path / "predictions.jsonl"
    log = PredictionLog(config(path), pii_fields=[])
    opened.append(log)

    log.write({"features": {"when": Path("/x")}, "note": "100% sure"})
    log.close()

    assert lines(path) == [{"features": {"when": "/x"}, "note": "100% sure"}]


def test_a_path_that_cannot_be_written_fails_at_start(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")

    with pytest.raises(OSError):
        PredictionLog(config(tmp_path / "a-file" / "predictions.jsonl"), pii_fields=[])


# ---------------------------------------------------------------- PII


def test_hash_value_is_keyed_by_the_salt() -> None:
    one = hash_value("alice@example.com", b"salt-1")

    assert one == hash_value("alice@example.com", b"salt-1")
    assert one != hash_value("alice@example.com", b"salt-2")
    assert one != hash_value("bob@example.com", b"salt-1")
    assert one.startswith("hmac-sha256:") and len(one) == len("hmac-sha256:") + 64
    assert hash_value(42, b"s") == hash_value("42", b"s")


def test_pii_fields_are_hashed_with_the_configured_salt(
    tmp_path: Path, salted: bytes, opened: list
) -> None:
    path = tmp_path / "predictions.jsonl"
    log = PredictionLog(config(path), pii_fields=["email", "user_id"])
    opened.append(log)
    mine = record(1, email="alice@example.com", user_id=987654321, country=None)

    log.write(mine)
    log.write(record(2, email=None))
    log.close()

    assert mine["features"]["email"] == "alice@example.com"  # the caller's dict is untouched
    text = path.read_text()
    assert "alice@example.com" not in text
    assert "987654321" not in text
    first, second = lines(path)
    assert first["features"] == {
        "amount": 1.5,
        "email": hash_value("alice@example.com", salted),
        "user_id": hash_value(987654321, salted),
        "country": None,
    }
    assert second["features"]["email"] is None  # nothing to hide in a missing value


def test_without_a_salt_one_random_salt_per_process_and_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    opened: list,
) -> None:  # fmt: skip
    monkeypatch.delenv(SALT_ENV, raising=False)
    monkeypatch.setattr(predlog, "_process_salt", None)
    first_path, second_path = tmp_path / "a.jsonl", tmp_path / "b.jsonl"

    with caplog.at_level(logging.WARNING, logger="driftline_sidecar.predlog"):
        first = PredictionLog(config(first_path), pii_fields=["email"])
        second = PredictionLog(config(second_path), pii_fields=["email"])
    opened.extend([first, second])
    first.write(record(1, email="alice@example.com"))
    second.write(record(1, email="alice@example.com"))
    first.close()
    second.close()

    warnings = [r for r in caplog.records if SALT_ENV in r.getMessage()]
    assert len(warnings) == 1
    assert "will not join across restarts" in warnings[0].getMessage()
    hashed = lines(first_path)[0]["features"]["email"]
    assert hashed == lines(second_path)[0]["features"]["email"]
    assert hashed != hash_value("alice@example.com", b"")


# ---------------------------------------------------------------- sampling, drops, closing


def test_sampling_ratio_zero_and_one(tmp_path: Path, opened: list) -> None:
    never = PredictionLog(config(tmp_path / "a.jsonl", sample_ratio=0.0), pii_fields=[])
    always = PredictionLog(config(tmp_path / "b.jsonl", sample_ratio=1.0), pii_fields=[])
    disabled = PredictionLog(config(tmp_path / "c.jsonl", sample_ratio=1.0, enabled=False),
                             pii_fields=[])  # fmt: skip
    opened.extend([never, always, disabled])

    assert not any(never.sampled() for _ in range(10_000))
    assert all(always.sampled() for _ in range(10_000))
    assert not any(disabled.sampled() for _ in range(100))
    assert disabled.write(record(1)) is False
    assert not (tmp_path / "c.jsonl").exists()


def test_sampling_ratio_in_between_samples_about_that_share(tmp_path: Path, opened: list) -> None:
    log = PredictionLog(config(tmp_path / "a.jsonl", sample_ratio=0.25), pii_fields=[])
    opened.append(log)

    share = sum(log.sampled() for _ in range(20_000)) / 20_000

    assert 0.22 < share < 0.28  # ~10 standard deviations either side


def test_a_full_queue_drops_and_counts(tmp_path: Path, opened: list) -> None:
    path = tmp_path / "predictions.jsonl"
    log = PredictionLog(config(path, queue_size=2), pii_fields=[])
    opened.append(log)

    # Hold the file's lock so the writer thread cannot take more than one
    # record off the queue: what the queue cannot hold must be dropped.
    with log._file.lock:  # type: ignore[union-attr]
        accepted = sum(log.write(record(i)) for i in range(10))
        assert accepted in (2, 3)  # the writer may hold one record, blocked
        assert log.dropped == 10 - accepted
    log.close()

    assert len(lines(path)) == accepted


def test_after_close_writes_are_refused(tmp_path: Path) -> None:
    log = PredictionLog(config(tmp_path / "a.jsonl"), pii_fields=[])
    log.close()

    assert log.write(record(1)) is False
    assert log.sampled() is False
    log.close()  # twice is fine
