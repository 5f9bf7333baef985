"""``crm-scorer backtest`` as a user runs it: a history in, a scores file out."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson

from tests.support import crm

#: Online Retail layout: two customers, a guest row and a line after the cutoff.
RETAIL_CSV = (
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850,UK\n"
    "536370,22728,ALARM CLOCK BAKELIKE PINK,24,2010-12-01 08:45:00,3.75,12583,France\n"
    "536414,22139,,56,2010-12-01 11:52:00,0,,UK\n"
    "536500,22728,ALARM CLOCK BAKELIKE PINK,2,2010-12-20 10:00:00,3.75,17850,UK\n"
    "539000,22139,RETROSPOT TEA SET,1,2011-01-20 10:00:00,4.95,17850,UK\n"
)


def read_scores(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row["customer_id"]: row for row in csv.DictReader(handle)}


def test_backtest_writes_scores_as_of_the_cutoff(tmp_path: Path) -> None:
    source = tmp_path / "retail.csv"
    source.write_text(RETAIL_CSV)
    out = tmp_path / "scores.csv"

    result = crm(
        "backtest", str(source), "--preset", "online-retail", "--as-of", "2011-01-01",
        "--out", str(out),
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "scored 3 events" in result.stdout
    assert "1 later ones ignored" in result.stdout
    assert "no_customer 1" in result.stdout
    scores = read_scores(out)
    assert set(scores) == {"17850", "12583"}
    assert scores["17850"]["orders"] == "2"
    assert float(scores["17850"]["monetary"]) == 15.3 + 7.5  # the January basket is not in it
    assert scores["17850"]["as_of"] == "2011-01-01T00:00:00+00:00"
    assert scores["17850"]["last_event"] == "2010-12-20T10:00:00+00:00"
    assert isinstance(orjson.loads(scores["12583"]["recommendations"]), list)
    # Not a terminal: progress comes as plain lines, not a bar.
    assert "scoring: 3 of 3 events (100%)" in result.stderr  # the events before the cutoff
    assert "\x1b[" not in result.stderr


def test_backtest_reads_readme_events_without_flags(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    lines = [
        {"event_id": "e1", "customer_id": "c-1", "type": "purchase", "item_id": "a",
         "amount": 9.5, "quantity": 1, "timestamp": "2024-03-01T10:00:00+01:00"},
        {"event_id": "e2", "customer_id": "c-2", "type": "view", "item_id": "a",
         "timestamp": "2024-03-02T10:00:00Z"},
    ]  # fmt: skip
    source.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    out = tmp_path / "scores.csv"

    result = crm("backtest", str(source), "--as-of", "2024-03-10T00:00:00", "--out", str(out))

    assert result.returncode == 0, result.stderr
    scores = read_scores(out)
    assert set(scores) == {"c-1", "c-2"}
    assert scores["c-1"]["orders"] == "1" and scores["c-2"]["orders"] == "0"
    assert scores["c-1"]["as_of"] == "2024-03-10T00:00:00+00:00"


def test_a_bad_cutoff_is_refused_with_the_option_named(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text("")

    result = crm("backtest", str(source), "--as-of", "next tuesday")

    assert result.returncode == 2
    assert "--as-of" in result.stderr


def test_an_unwritable_scores_file_is_refused_before_scoring(tmp_path: Path) -> None:
    source = tmp_path / "retail.csv"
    source.write_text(RETAIL_CSV)

    result = crm(
        "backtest", str(source), "--preset", "online-retail", "--as-of", "2011-01-01",
        "--out", str(tmp_path / "missing-dir" / "scores.csv"),
    )  # fmt: skip

    assert result.returncode == 2
    assert "cannot write --out" in result.stderr
    assert "scored" not in result.stdout
