"""The drift report of a real sidecar's snapshot, opened in a real headless
Chromium (Debian's ``chromium``): it renders every feature and logs nothing.

The browser runs with ``--enable-logging=stderr``, which prints every console
message and uncaught error as an ``INFO:CONSOLE`` line; the page's Content
Security Policy turns any attempt to load something into such a line too. A
negative control proves the check sees both. A screenshot of the report is
left in ``tests/artifacts/report.png`` (ignored by git) for a person to look at.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pandas as pd
import pytest

from driftline_operator.cli.main import main
from tests.component.conftest import ModelServer

if TYPE_CHECKING:
    from tests.component.conftest import Sidecar

CHROMIUM = shutil.which("chromium")
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
FEATURES = [f"f{i}" for i in range(4)]
REQUESTS = 300

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (scripts/setup.sh installs it)"
)


@dataclass
class Loaded:
    dom: str
    console: list[str]  # console messages and uncaught errors, as Chromium logged them


def load(page: Path, *, screenshot: Path | None = None) -> Loaded:
    """Open ``page`` in headless Chromium: its DOM after scripts ran, and its console."""
    assert CHROMIUM is not None
    common = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # tests run as root
        "--disable-gpu",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={page.parent / 'chromium-profile'}",
    ]
    run = subprocess.run(
        [*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        shot = subprocess.run(
            [
                *common,
                "--hide-scrollbars",
                "--window-size=1280,3000",
                f"--screenshot={screenshot}",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    return Loaded(run.stdout, console)


class Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.features: dict[str, str] = {}
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(found["id"] or "")
        if tag == "section" and found.get("data-feature"):
            self.features[found["data-feature"] or ""] = found.get("data-verdict") or ""


def test_the_console_check_sees_errors_and_blocked_loads(tmp_path: Path) -> None:
    """Negative control: without it, an empty console list would prove nothing."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head>"
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "script-src 'unsafe-inline'\"></head><body><p id=x>x</p>"
        '<img src="https://example.invalid/chart.png">'
        "<script>document.getElementById('x').textContent = 'ran'; undefinedCall();</script>"
        "</body></html>"
    )
    loaded = load(page)
    assert '<p id="x">ran</p>' in loaded.dom
    joined = "\n".join(loaded.console)
    assert "Uncaught ReferenceError: undefinedCall is not defined" in joined
    assert "Content Security Policy" in joined


def training(path: Path) -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({name: rng.uniform(-1.0, 1.0, 2_000) for name in FEATURES})
    frame.to_csv(path, index=False)


def test_report_of_a_live_sidecars_snapshot_renders_in_chromium(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar], tmp_path: Path, capsys
) -> None:
    training(tmp_path / "train.csv")
    profile = tmp_path / "profile.json"
    assert main(["profile", "build", str(tmp_path / "train.csv"), "-o", str(profile)]) == 0
    sidecar = sidecar_factory(
        model.url,
        model={
            "name": "fraud",
            "version": "v1",
            "protocol": "json",
            "features": [{"name": name} for name in FEATURES],
            "prediction": {"path": "prediction", "score": "probability"},
        },
        profile_path=str(profile),
    )
    rng = np.random.default_rng(4)
    with httpx.Client(base_url=sidecar.proxy, timeout=10) as client:
        for _ in range(REQUESTS):
            row = {name: float(rng.uniform(-1.0, 1.0)) for name in FEATURES}
            row["f0"] = float(rng.normal(0.8, 0.2))  # f0 has moved; the others have not
            assert client.post("/predict", json=[row]).status_code == 200
    snapshot = sidecar.wait_records(lambda s: s["capture"]["records"] >= REQUESTS)
    (tmp_path / "snapshot.json").write_text(httpx.get(sidecar.admin + "/v1/snapshot").text)

    output = tmp_path / "report.html"
    # PSI: at 300 values its noise (about bins/n = 0.03) is far below 0.2.
    argv = [str(profile), str(tmp_path / "snapshot.json"), "--method", "psi", "-o", str(output)]
    assert main(["report", *argv]) == 0
    capsys.readouterr()

    screenshot = ARTIFACTS / "report.png"
    loaded = load(output, screenshot=screenshot)
    print(f"report screenshot: {screenshot}")
    assert loaded.console == []
    page = Sections()
    page.feed(loaded.dom)
    assert page.features == {"f0": "drift", "f1": "ok", "f2": "ok", "f3": "ok"}
    assert {"summary", "verdicts", "data-quality", "predictions", "service"} <= page.ids
    requests = sum(snapshot["requests"].values())
    assert re.search(rf"<th>requests</th><td[^>]*>{requests}</td>", loaded.dom)
    assert "<svg" in loaded.dom
    shutil.copy(output, ARTIFACTS / "report.html")
