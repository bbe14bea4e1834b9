"""``driftline report``: the HTML holds every verdict, loads nothing, escapes names.
(The page in a real browser: tests/component/test_report_in_chromium.py.)"""

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftline_operator.api.status import ModelMonitorStatus
from driftline_operator.cli.compare import compare, drift_spec
from driftline_operator.cli.main import main
from driftline_operator.cli.report import build_report, render

ROWS = 2_000


class Page(HTMLParser):
    """The report's feature sections and every URL-bearing attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, str] = {}  # data-feature -> data-verdict
        self.urls: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        found = dict(attrs)
        if tag == "section" and "data-feature" in found:
            self.sections[found["data-feature"] or ""] = found["data-verdict"] or ""
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "srcset", "action")]


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


@pytest.fixture
def files(tmp_path) -> tuple[Path, Path]:
    rng = np.random.default_rng(7)
    reference = pd.DataFrame(
        {
            "amount": rng.normal(0, 1, ROWS),
            "<b>odd name</b>": rng.choice(["a", "b", "c"], ROWS),
            "steady": rng.normal(5, 2, ROWS),
            "score": rng.random(ROWS),
        }
    )
    current = reference.copy()
    current["amount"] = rng.normal(1.5, 1, ROWS)
    reference.to_csv(tmp_path / "reference.csv", index=False)
    current.to_parquet(tmp_path / "current.parquet")
    return tmp_path / "reference.csv", tmp_path / "current.parquet"


def test_every_feature_has_its_section_with_the_drift_commands_verdict(capsys, files, tmp_path):
    reference, current = files
    output = tmp_path / "report.html"
    argv = [str(reference), str(current), "--prediction", "score"]
    assert main(["report", *argv, "-o", str(output)]) == 0
    assert "1 of 3 features drifted" in capsys.readouterr().out
    assert main(["drift", *argv, "--json"]) == 0  # 1 of 3 is under the 50 % share
    verdicts = json.loads(capsys.readouterr().out)

    page = parse(output.read_text(encoding="utf-8"))
    expected = {f["feature"]: f["verdict"] for f in verdicts["features"]}
    expected["score"] = verdicts["prediction"]["verdict"]
    assert page.sections == expected
    assert page.sections["amount"] == "drift"


def test_the_page_loads_nothing_from_anywhere(files, tmp_path):
    reference, current = files
    html = render(build_report(compare(reference, current), drift_spec(), title="t"))
    page = parse(html)
    assert not page.tags & {"link", "img", "iframe", "object", "embed"}
    assert all(url.startswith("#") for url in page.urls), page.urls
    assert "default-src 'none'" in html  # and the browser is told to refuse any load


def test_names_are_escaped(files, tmp_path):
    reference, current = files
    html = render(build_report(compare(reference, current), drift_spec(), title="<i>x</i>"))
    assert "<b>odd name</b>" not in html
    assert "&lt;b&gt;odd name&lt;/b&gt;" in html
    assert "<i>x</i>" not in html
    assert parse(html).sections["<b>odd name</b>"] == "ok"


def test_a_monitors_slos_and_rollout_are_shown(files):
    reference, current = files
    status = ModelMonitorStatus.model_validate(
        {
            "phase": "Progressing",
            "drift": {"status": "insufficient_data"},
            "slos": [
                {"name": "p95", "verdict": "breach", "value": 312.0, "objective": 200.0},
                {"name": "availability", "verdict": "ok", "value": 0.9995, "burnRate": 0.5},
            ],
            "rollout": {
                "phase": "Progressing",
                "step": 2,
                "weight": 50,
                "decision": "continue: all checks passed",
            },
        }
    )
    report = build_report(compare(reference, current), drift_spec(), title="t", status=status)
    html = render(report)
    assert 'id="slos"' in html
    verdict = html[html.index('id="operator-verdict"') :]
    assert verdict.index("insufficient data") < verdict.index("over its last drift window")
    assert "p95" in html and "312" in html and "breach" in html
    assert "2 / 50.0%" in html
    assert "continue: all checks passed" in html


def test_report_errors_name_the_problem(capsys, files, tmp_path):
    reference, current = files
    assert main(["report", str(reference), "-o", str(tmp_path / "r.html")]) == 2
    assert "give REFERENCE and CURRENT" in capsys.readouterr().err
    target = tmp_path / "no-such-dir" / "r.html"
    assert main(["report", str(reference), str(current), "-o", str(target)]) == 2
    assert f"cannot write {target}" in capsys.readouterr().err


def test_data_quality_shows_the_operators_rates(files, tmp_path):
    reference, _ = files
    rng = np.random.default_rng(8)
    current = pd.read_csv(reference)
    current.loc[: ROWS // 10 - 1, "amount"] = np.nan  # 10 % missing
    current.loc[ROWS - 50 :, "<b>odd name</b>"] = "zz"  # 50 unseen
    current["steady"] = rng.normal(5, 2, ROWS)
    current.loc[:4, "steady"] = 1e6  # 5 far out of the reference's range
    current.to_csv(tmp_path / "quality.csv", index=False)
    html = render(
        build_report(compare(reference, tmp_path / "quality.csv"), drift_spec(), title="q")
    )
    rows = html[html.index('id="quality"') : html.index("</table>", html.index('id="quality"'))]
    assert '<td>amount</td><td class="num">2000</td><td class="num">200 (10.0%)</td>' in rows
    assert "50 unseen (2.5%)" in rows
    assert "5 out of range (0.2%)" in rows
    assert "Schema errors per row: 0.00% (0/2000)" in html
