"""Microbenchmark of re-scores: ``refresh`` one customer at a time against ``refresh_many``.

    python benchmarks/rescore.py [--customers 2000] [--events 20000] [--days 10]

A scorer learns ``--events`` simulated events of ``--customers`` customers (weeks of event
time, through the engine, so silent customers are re-scored and churn labels arrive as in the
worker); then, from copies of that same scorer and states, ``--days`` event-time days of
re-scores of every customer still re-scored, once a day, each way: one ``refresh`` per customer
(what the engine did before batches), and ``refresh_many`` over the day's customers in batches
of the whole day, 256, 64 and 16 (the smallest the engine batches). The lifetime model's daily
refit is off (it costs the same either way and would hide the difference). CPU time of this
process, so other work on the machine counts less (wall time too), in ``--rounds`` rounds of
every mode in turn; the median and the best round are reported.

Writes benchmarks/results/rescore.json.
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from online_models.activity import DAY  # noqa: E402
from online_models.engine import ScoringEngine  # noqa: E402
from online_models.scorer import CustomerScorer, ScorerConfig  # noqa: E402
from schemas import decode_event  # noqa: E402
from streams.commands.simulator import SimulationConfig, generate_events  # noqa: E402
from streams.convert import activity_of  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "rescore.json"
BATCHES = (None, 256, 64, 16)  # None: the whole day's customers in one batch


def build_world(customers: int, events: int) -> tuple[bytes, dict[str, Any]]:
    """The scorer and states after ``events`` simulated events, pickled, and what they hold."""
    scorer = CustomerScorer(ScorerConfig(lifetime_refit_days=1e9))  # fitted once, at the start
    engine = ScoringEngine(scorer, {})
    first = last = None
    rescores = 0
    for event in generate_events(SimulationConfig(customers=customers, days=60), limit=events):
        decoded = decode_event(orjson.dumps(event))
        activity = activity_of(decoded)
        rescores += len(engine.process(decoded.customer_id, activity)) - 1
        first = activity.time if first is None else first
        last = activity.time
    assert first is not None and last is not None
    facts = {
        "customers": len(engine.states),
        "events": events,
        "event_time_days": round((last - first) / DAY, 1),
        "rescores_while_learning": rescores,
        "churn_labels_learned": scorer.churn_model.labels_learned,
        "last_event_time": last,
    }
    return pickle.dumps((scorer, dict(engine.states))), facts


def rescore(world: bytes, last: float, days: int, batch: int | str | None) -> dict[str, Any]:
    """``days`` daily re-scores of every customer still re-scored; ``batch="one"``: refresh."""
    scorer, states = pickle.loads(world)
    rescored = 0
    cpu = wall = 0.0
    for day in range(1, days + 1):
        now = last + day * DAY
        due = [
            (customer_id, state)
            for customer_id, state in sorted(states.items())
            if scorer.next_refresh(state, now - DAY) is not None
        ]
        started_cpu, started_wall = time.process_time(), time.perf_counter()
        if batch == "one":
            for customer_id, state in due:
                scorer.refresh(customer_id, state, now)
        else:
            size = len(due) if batch is None else int(batch)
            for start in range(0, len(due), max(size, 1)):
                scorer.refresh_many(due[start : start + size], now)
        cpu += time.process_time() - started_cpu
        wall += time.perf_counter() - started_wall
        rescored += len(due)
    return {
        "rescores": rescored,
        "cpu_seconds": round(cpu, 3),
        "wall_seconds": round(wall, 3),
        "us_per_rescore_cpu": round(cpu / rescored * 1e6, 1),
        "us_per_rescore_wall": round(wall / rescored * 1e6, 1),
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    cpu = sorted(run["us_per_rescore_cpu"] for run in runs)
    wall = sorted(run["us_per_rescore_wall"] for run in runs)
    return {
        "rescores": runs[0]["rescores"],
        "us_per_rescore_cpu_median": cpu[len(cpu) // 2],
        "us_per_rescore_cpu_min": cpu[0],
        "us_per_rescore_wall_median": wall[len(wall) // 2],
        "rounds": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    print(f"scoring {args.events:,} events of {args.customers:,} customers ...", flush=True)
    world, facts = build_world(args.customers, args.events)
    print(
        f"{facts['customers']:,} customers over {facts['event_time_days']} days of event time, "
        f"{facts['churn_labels_learned']:,} churn labels learned",
        flush=True,
    )
    modes = {"refresh, one at a time": "one"}
    modes.update({f"refresh_many, batch {batch or 'day'}": batch for batch in BATCHES})
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in modes}
    for round_ in range(1, args.rounds + 1):  # interleaved: the machine's load hits every mode
        for name, batch in modes.items():
            runs[name].append(rescore(world, facts["last_event_time"], args.days, batch))
            row = runs[name][-1]
            print(
                f"round {round_}  {name:32s} {row['rescores']:>7,} re-scores "
                f"{row['us_per_rescore_cpu']:7.1f} us CPU ({row['us_per_rescore_wall']:.1f} us "
                "wall) per re-score",
                flush=True,
            )
    rows = {name: _summary(each) for name, each in runs.items()}
    base = rows["refresh, one at a time"]["us_per_rescore_cpu_median"]
    print(f"median of {args.rounds} rounds, CPU time per re-score:")
    for name, row in rows.items():
        row["speedup_cpu_median"] = round(base / row["us_per_rescore_cpu_median"], 2)
        print(
            f"  {name:32s} {row['us_per_rescore_cpu_median']:7.1f} us "
            f"(min {row['us_per_rescore_cpu_min']:.1f})  x{row['speedup_cpu_median']}"
        )
    document = {
        "benchmark": "rescore",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "arguments": {
            "customers": args.customers,
            "events": args.events,
            "days": args.days,
            "rounds": args.rounds,
        },
        "population": {k: v for k, v in facts.items() if k != "last_event_time"},
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
