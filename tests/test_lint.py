"""The layering in DESIGN.md and the code style, as tests that fail."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)


def test_import_contracts_hold():
    result = run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_finds_nothing():
    result = run(str(BIN / "ruff"), "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing():
    # pyproject.toml's [tool.mypy] names the packages and turns strict mode on.
    result = run(str(BIN / "mypy"), "--config-file", "pyproject.toml", "--cache-dir", os.devnull)
    assert result.returncode == 0, result.stdout + result.stderr


def test_test_modules_have_unique_names():
    # The test folders are not packages (pytest's default "prepend" import
    # mode), so two test modules with one basename cannot be collected in one
    # run: the second fails with "import file mismatch".
    names: dict[str, list[str]] = {}
    for path in (ROOT / "tests").rglob("*.py"):
        if path.name != "conftest.py":
            names.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert [paths for paths in names.values() if len(paths) > 1] == []
