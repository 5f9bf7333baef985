"""``crm-scorer backtest --report``: one HTML page judging the scores on the file's later events,
its numbers checked against the scores file and the events, and the page opened in a browser."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from matplotlib import image
from scipy import stats
from sklearn.metrics import roc_auc_score

from tests.shop_file import write_shop_file
from tests.support import crm

# Three backtests with the report, about 30 s of CPU: not in make test-quick.
pytestmark = pytest.mark.slow

AS_OF = datetime(2011, 9, 1, tzinfo=UTC)
HORIZON = timedelta(days=90)
SECTIONS = ("churn", "value", "segments", "recommendations", "alerts")


@dataclass
class Report:
    result: subprocess.CompletedProcess[str]
    page: str
    numbers: dict[str, Any]
    scores: dict[str, dict[str, str]]
    source: Path
    path: Path


def run_report(folder: Path, as_of: str) -> Report:
    source = folder / "shop.csv"
    if not source.exists():
        write_shop_file(source)
    out, path = folder / f"scores-{as_of}.csv", folder / f"report-{as_of}.html"
    result = crm(
        "backtest", str(source), "--preset", "online-retail", "--as-of", as_of,
        "--out", str(out), "--report", str(path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    page = path.read_text()
    found = re.search(r'<script type="application/json" id="report-numbers">(.*?)</script>', page)
    assert found is not None
    with out.open(newline="") as handle:
        scores = {row["customer_id"]: row for row in csv.DictReader(handle)}
    return Report(result, page, orjson.loads(found.group(1)), scores, source, path)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return run_report(tmp_path_factory.mktemp("report"), AS_OF.date().isoformat())


def purchases(source: Path) -> dict[str, list[tuple[datetime, str, float]]]:
    """Each customer's purchases in the file: time, item, amount."""
    bought = defaultdict(list)
    with source.open(newline="") as handle:
        for row in csv.DictReader(handle):
            when = datetime.fromisoformat(row["InvoiceDate"]).replace(tzinfo=UTC)
            amount = int(row["Quantity"]) * float(row["UnitPrice"])
            bought[row["CustomerID"]].append((when, row["StockCode"], amount))
    return bought


def shown(page: str, value: float) -> bool:
    """Whether the page's tables show ``value`` as they print it."""
    return f'<td class="n">{value:,.3f}</td>' in page


def test_the_report_shows_every_section_with_its_numbers(report: Report) -> None:
    page, numbers = report.page, report.numbers
    assert f"wrote the report to {report.path}" in report.result.stdout
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    # Self-contained: six plots inlined, nothing to fetch.
    assert page.count('<img src="data:image/png;base64,') == 6
    assert "http://" not in page and "https://" not in page
    assert numbers["missing"] == []

    # Churn: the AUC of churn_risk is what the scores file and the later purchases give.
    bought = purchases(report.source)
    end = AS_OF + HORIZON
    buyers = sorted(c for c, buys in bought.items() if min(w for w, _, _ in buys) < AS_OF)
    churned = [not any(AS_OF < w <= end for w, _, _ in bought[c]) for c in buyers]
    risk = [float(report.scores[c]["churn_risk"]) for c in buyers]
    auc = numbers["churn"]["auc"]
    assert numbers["churn"]["customers"] == len(buyers)
    assert auc["churn_risk"] == pytest.approx(roc_auc_score(churned, risk), abs=1e-3)
    assert set(auc) == {"churn_risk", "logistic regression on RFM", "BG/NBD"}
    assert all(shown(page, value) for value in auc.values())
    assert auc["churn_risk"] > 0.6  # the shop's quiet customers are the ones who stop

    # Value: Spearman of predicted_clv against the spend after the cutoff.
    spend = [sum(a for w, _, a in bought[c] if AS_OF < w <= end) for c in buyers]
    clv = [float(report.scores[c]["predicted_clv"]) for c in buyers]
    value = numbers["value"]
    assert value["revenue_after"] == pytest.approx(sum(spend))
    assert value["spearman"]["predicted_clv"] == pytest.approx(
        stats.spearmanr(clv, spend).statistic, abs=0.01
    )
    assert all(shown(page, v) for v in value["spearman"].values())
    assert all(shown(page, v) for v in value["top_decile_capture"].values())

    # Segments: one row per segment, its size as in the scores file.
    sizes = Counter(row["segment"] for row in report.scores.values())
    table = {str(row["segment"]): row for row in numbers["segments"]}
    assert {k: row["customers"] for k, row in table.items()} == sizes
    for key, row in table.items():
        names = {s["segment_name"] for s in report.scores.values() if s["segment"] == key}
        assert names == {row["name"]}
        assert f"<td>{row['name']}</td>" in page

    # Recommendations: the hit rate of the lists in the scores file on the new items bought.
    owned = {c: {i for w, i, _ in bought[c] if w < AS_OF} for c in buyers}
    new = {c: {i for w, i, _ in bought[c] if AS_OF < w <= end} - owned[c] for c in buyers}
    judged = [c for c in buyers if new[c]]
    lists = {c: orjson.loads(report.scores[c]["recommendations"])[:10] for c in judged}
    hit_rate = np.mean([bool(set(lists[c]) & new[c]) for c in judged])
    recs = numbers["recommendations"]
    assert recs["judged_customers"] == len(judged)
    assert recs["hit_rate_at_10"]["scorer"] == pytest.approx(hit_rate)
    assert set(recs["hit_rate_at_10"]) == {"scorer", "popularity", "item-item"}
    assert all(shown(page, v) for v in recs["recall_at_10"].values())
    top_item, count = next(iter(recs["most_recommended"].items()))
    assert count == sum(top_item in orjson.loads(s["recommendations"])[:10]
                        for s in report.scores.values())  # fmt: skip

    # Alerts: each kind's total before the cutoff.
    assert numbers["alerts_per_kind"]
    for kind, total in numbers["alerts_per_kind"].items():
        assert f'<td>{kind}</td><td class="n">{total:,}</td>' in page


def test_a_file_that_ends_at_the_cutoff_gets_what_can_be_shown_and_why_not_the_rest(
    tmp_path: Path,
) -> None:
    # A smaller shop than the module's: this test looks at what is shown, not at numbers.
    source = write_shop_file(tmp_path / "shop.csv", customers=30)
    last = max(w for buys in purchases(source).values() for w, _, _ in buys)
    ended = run_report(tmp_path, (last + timedelta(days=1)).date().isoformat())

    assert ended.numbers["churn"] is None and ended.numbers["value"] is None
    assert "The file ends at the cutoff" in ended.numbers["missing"][0]
    assert "report: The file ends at the cutoff" in ended.result.stdout
    assert "The file ends at the cutoff" in ended.page
    # The segment map and the alerts need no outcomes; the most recommended items neither.
    assert ended.page.count('<img src="data:image/png;base64,') == 2
    segments = ended.page.split('<section id="segments">')[1].split("</section>")[0]
    assert "segment map" in segments
    assert sum(row["customers"] for row in ended.numbers["segments"]) == len(ended.scores)
    assert ended.numbers["recommendations"]["most_recommended"]


def test_a_browser_shows_the_report(report: Report, tmp_path: Path) -> None:
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("no chromium to open the page (Debian: apt-get install chromium)")
    screenshot = tmp_path / "report.png"

    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1280,4000", f"--screenshot={screenshot}", report.path.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip

    pixels = image.imread(screenshot)[:, :, :3]
    assert pixels.shape[:2] == (4000, 1280)
    # The plots drew: the scorer's curves and bars are matplotlib's blue (#1f77b4).
    blue = np.abs(pixels - np.array([0x1F, 0x77, 0xB4]) / 255).max(axis=2) < 0.05
    assert blue.sum() > 2_000
    # ... down to the alerts at the bottom of the page, not only the first plots.
    rows = np.flatnonzero(blue.any(axis=1))
    assert rows.max() > 2_500


def test_without_matplotlib_the_command_says_how_to_install_it(tmp_path: Path) -> None:
    source = write_shop_file(tmp_path / "shop.csv", customers=5)
    hide = "import sys; sys.modules['matplotlib'] = None; "
    run = "from streams.commands.cli import main; sys.argv[0] = 'crm-scorer'; main()"
    args = ["backtest", str(source), "--as-of", "2011-09-01", "--preset", "online-retail",
            "--out", str(tmp_path / "s.csv"), "--report", str(tmp_path / "r.html")]  # fmt: skip

    result = subprocess.run(
        [sys.executable, "-c", hide + run, *args], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip

    assert result.returncode == 2
    assert "pip install 'crm-scorer[report]'" in result.stderr
    assert "scoring" not in result.stderr  # it stopped before the backtest
    # The option's help names the extra too (rich, rendering it, must not eat "[report]").
    assert "crm-scorer[report]" in crm("backtest", "--help", env={"COLUMNS": "200"}).stdout
