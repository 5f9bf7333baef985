"""Backtest: the worker's scoring path over a history, with scores as of a cutoff."""

from __future__ import annotations

import csv
import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from online_models.customer.activity import DAY
from schemas.events import AnyEvent, validate_event
from streams.commands import csv_blocks
from streams.commands.backtest import SCORE_COLUMNS, run_backtest, write_scores
from streams.commands.transactions import load_transactions, read_transactions

START = datetime(2011, 1, 3, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "datasets" / "online_retail" / "online_retail.csv.gz"


def online_retail_head(directory: Path) -> Path:
    """The file's first two weeks (it is in time order): 30,000 lines, to 2010-12-14."""
    with gzip.open(DATA, "rt", encoding="utf-8", newline="") as handle:
        head = "".join(line for _, line in zip(range(30_001), handle, strict=False))
    (directory / "head.csv").write_text(head)
    return directory / "head.csv"


def purchase(customer: str, day: float, item: str, amount: float = 10.0) -> AnyEvent:
    moment = START + timedelta(days=day)
    return validate_event(
        {
            "event_id": f"{customer}-{day}-{item}",
            "customer_id": customer,
            "type": "purchase",
            "timestamp": moment.isoformat(),
            "item_id": item,
            "amount": amount,
            "quantity": 1,
        }
    )


def history() -> list[AnyEvent]:
    """Regulars buying weekly, one-off buyers, and customers who only show up late."""
    events = []
    for week in range(30):
        for n in range(5):
            events.append(purchase(f"regular-{n}", week * 7.0 + n * 0.1, f"sku-{(week + n) % 7}"))
    for n in range(10):
        events.append(purchase(f"once-{n}", 3.0 + n, f"sku-{n % 4}", 25.0))
    events.append(purchase("late-comer", 250.0, "sku-9"))
    return sorted(events, key=lambda e: e.timestamp)


def test_nothing_after_the_cutoff_is_used() -> None:
    events = history()
    cutoff = START + timedelta(days=120)
    before = [e for e in events if e.timestamp < cutoff]

    full = run_backtest(events, cutoff)
    truncated = run_backtest(before, cutoff)

    assert full.ignored_after_cutoff == len(events) - len(before) > 0
    assert full.events == truncated.events == len(before)
    assert [(r.customer_id, r.score, r.recommendations) for r in full.rows] == [
        (r.customer_id, r.score, r.recommendations) for r in truncated.rows
    ]
    assert "late-comer" not in {r.customer_id for r in full.rows}
    assert all(r.score.event_time < cutoff.timestamp() for r in full.rows)


def test_every_score_is_as_of_the_cutoff_and_silent_customers_were_rescored() -> None:
    cutoff = START + timedelta(days=120)

    result = run_backtest(history(), cutoff)

    by_customer = {row.customer_id: row.score for row in result.rows}
    assert len(by_customer) == 15
    assert {score.as_of for score in by_customer.values()} == {cutoff.timestamp()}
    # The one-off buyers went silent after day 12; event time then moves a week at a time
    # (the regulars' baskets), and each move re-scores them.
    assert result.rescores >= 10 * 15
    once = by_customer["once-0"]
    assert once.orders == 1
    assert (cutoff.timestamp() - once.event_time) / DAY == pytest.approx(117.0)
    # The model learned that silence means churn: one-off buyers are riskier than regulars.
    regular_risk = max(by_customer[f"regular-{n}"].churn_risk for n in range(5))
    once_risk = min(by_customer[f"once-{n}"].churn_risk for n in range(10))
    assert result.labels["churned"] > 0 and result.labels["stayed"] > 0
    assert once_risk > regular_risk


def test_the_scores_file_has_a_header_and_one_row_per_customer(tmp_path: Path) -> None:
    result = run_backtest(history(), START + timedelta(days=60))
    out = tmp_path / "scores.csv"

    written = write_scores(result.rows, out)

    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert written == len(rows) == len(result.rows)
    assert tuple(rows[0]) == SCORE_COLUMNS
    first = rows[0]
    assert 0.0 <= float(first["churn_risk"]) <= 1.0
    assert isinstance(orjson.loads(first["recommendations"]), list)
    assert first["as_of"] == (START + timedelta(days=60)).isoformat()


def test_a_file_read_a_chunk_at_a_time_scores_as_its_events_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_blocks, "BLOCK_BYTES", 1024)  # many chunks
    source = tmp_path / "history.csv"
    lines = ["customer_id,timestamp,item_id,quantity,amount"]
    for event in history():
        lines.append(f"{event.customer_id},{event.timestamp.isoformat()},{event.item_id},1,10.5")
    source.write_text("\n".join(lines))
    cutoff = START + timedelta(days=120)

    stream = read_transactions(source)
    chunked = run_backtest(stream, cutoff, partitions=4)
    one_by_one = run_backtest(
        [e.event for e in load_transactions(source).events], cutoff, partitions=4
    )

    assert stream.in_file_order
    assert chunked.events == one_by_one.events > 0
    assert chunked.ignored_after_cutoff == one_by_one.ignored_after_cutoff > 0
    assert [r.to_csv() for r in chunked.rows] == [r.to_csv() for r in one_by_one.rows]


@pytest.mark.parametrize("days", [60, 240])
def test_one_worker_writes_the_scores_file_it_would_syncing_every_part(
    tmp_path: Path, days: int
) -> None:
    """A lone worker syncs only its segments and lifetime parts (its churn, value and item
    parts would come back as its own model), and that changes no score."""
    cutoff = START + timedelta(days=days)
    alone = run_backtest(history(), cutoff, partitions=4)
    every_part = run_backtest(history(), cutoff, partitions=4, sync_all_parts=True)

    write_scores(alone.rows, tmp_path / "alone.csv")
    write_scores(every_part.rows, tmp_path / "every_part.csv")
    assert (tmp_path / "alone.csv").read_bytes() == (tmp_path / "every_part.csv").read_bytes()
    assert alone.model_version == every_part.model_version


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_file(), reason=f"Online Retail data not found at {DATA}")
def test_one_worker_scores_a_week_of_online_retail_as_syncing_every_part(
    tmp_path: Path,
) -> None:
    """On real baskets the one-worker scores match a run syncing every part, but for the
    order of some recommendations: the group's copy of the co-purchase lists, cut to their
    strongest half when the merger publishes, is not the worker's own (cut as it counts)."""
    cutoff = datetime(2010, 12, 8, tzinfo=UTC)  # a week: daily lifetime refits, syncs
    loaded = load_transactions(online_retail_head(tmp_path), preset="online-retail")
    events = [e.event for e in loaded.events if e.time < cutoff.timestamp()]
    alone = run_backtest(events, cutoff, partitions=8)
    every_part = run_backtest(events, cutoff, partitions=8, sync_all_parts=True)

    assert [(r.customer_id, r.score) for r in alone.rows] == [
        (r.customer_id, r.score) for r in every_part.rows
    ]
    overlap = [
        len(set(a.recommendations) & set(b.recommendations)) / len(a.recommendations)
        for a, b in zip(alone.rows, every_part.rows, strict=True)
        if a.recommendations
    ]
    assert sum(overlap) / len(overlap) >= 0.9


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_file(), reason=f"Online Retail data not found at {DATA}")
def test_a_slice_of_online_retail_scores_every_buyer_before_the_cutoff(tmp_path: Path) -> None:
    loaded = load_transactions(online_retail_head(tmp_path), preset="online-retail")
    cutoff = datetime(2010, 12, 10, tzinfo=UTC)
    events = [e.event for e in loaded.events]
    buyers = {e.customer_id for e in events if e.type == "purchase" and e.timestamp < cutoff}

    result = run_backtest(events, cutoff)

    scored = {row.customer_id for row in result.rows}
    assert buyers <= scored
    assert result.ignored_after_cutoff > 0
    assert all(row.score.orders >= 1 for row in result.rows if row.customer_id in buyers)


def test_an_event_id_seen_twice_is_counted_once() -> None:
    events = history()
    resent = [e for e in events if e.customer_id == "regular-0"][:5]
    cutoff = START + timedelta(days=240)

    once = run_backtest(events, cutoff)
    twice = run_backtest(sorted(events + resent, key=lambda e: e.timestamp), cutoff)

    assert twice.duplicates == 5
    assert twice.events == once.events
    assert [row.score for row in twice.rows] == [row.score for row in once.rows]


def test_a_snapshot_scores_as_a_backtest_cut_there_would() -> None:
    events = history()
    week_before, cutoff = START + timedelta(days=113), START + timedelta(days=120)

    run = run_backtest(events, cutoff, partitions=4, snapshots=[week_before])
    cut = run_backtest(events, week_before, partitions=4)

    snapshot = run.snapshots[week_before.timestamp()]
    assert snapshot == {row.customer_id: row.score for row in cut.rows}
    assert {score.as_of for score in snapshot.values()} == {week_before.timestamp()}
    assert {row.score.as_of for row in run.rows} == {cutoff.timestamp()}
