"""The engine benchmark runs on a tiny workload: every batch size counts its events and
re-scores, and the engine's batch entry point is used when it exists."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from online_models.scoring.engine import BatchScores, Scored, ScoringEngine
from online_models.scoring.scorer import CustomerScorer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from engine import Event, Workload, main, score_batch


def test_every_batch_size_has_a_row_with_events_and_rescores(tmp_path, monkeypatch):
    # What each child process of the benchmark runs: a workload in, the rows' JSON out.
    workload, result = tmp_path / "workload.json", tmp_path / "result.json"
    Workload.simulated(customers=50, events=300, days=3, seed=1).dump(workload)
    arguments = ["--workload", str(workload), "--result", str(result), "--rescore-days", "1"]
    monkeypatch.setattr(sys, "argv", ["engine.py", *arguments])

    main()

    rows = json.loads(result.read_text())["results"]
    assert [row["batch_size"] for row in rows] == [1, 64, 1_000, 10_000]
    customers = Workload.load(workload).facts()["customers"]
    for row in rows:
        assert row["entry_point"] == "process_many"
        assert row["events"] == 300
        # Three days of events: whoever was silent for a day was re-scored meanwhile, and on
        # the day with no events every customer still followed (not cancelled) is.
        assert row["rescores"] > 0
        assert 0 < row["idle_rescores"] <= customers
        assert row["customers_ranked"]["events"] > 0
        assert row["events_per_second"] > 0 and row["idle_rescores_per_second"] > 0
    # A batch moves the watermark once: its re-scores come at its end, fewer than one by one.
    assert rows[0]["rescores"] >= rows[-1]["rescores"]


class _BatchEngine(ScoringEngine):
    """An engine with a batch entry point of the shape the benchmark expects."""

    def __init__(self) -> None:
        super().__init__(CustomerScorer(), {})
        self.batches = 0

    def process_many(self, events: Sequence[Event], shard: int = 0) -> BatchScores:
        self.batches += 1
        own: list[Scored] = []
        rescored: list[Scored] = []
        for customer_id, activity, offset, event_id in events:
            first, *rest = self.process(
                customer_id, activity, shard, offset=offset, event_id=event_id
            )
            own.append(first)
            rescored += rest
        return BatchScores(own, rescored)


@pytest.mark.parametrize("batch_size", [1, 7])
def test_a_batch_entry_point_is_used_and_its_scores_split_by_kind(batch_size):
    events = Workload.simulated(customers=20, events=60, days=4, seed=3).decoded()
    batching, per_event = _BatchEngine(), ScoringEngine(CustomerScorer(), {})
    per_event.process_many = None  # type: ignore[assignment,method-assign]  # the loop

    split = [score_batch(batching, events[n : n + batch_size]) for n in range(0, 60, batch_size)]
    looped = [score_batch(per_event, events[n : n + batch_size]) for n in range(0, 60, batch_size)]

    assert batching.batches == len(split)
    ids = [[[s.customer_id for s in kind] for kind in batch] for batch in split]
    assert ids == [[[s.customer_id for s in kind] for kind in batch] for batch in looped]
    # The events' own scores are theirs, in order; what follows them are re-scores.
    assert [customer for batch in ids for customer in batch[0]] == [e[0] for e in events]
    assert sum(len(batch[1]) for batch in ids) > 0
