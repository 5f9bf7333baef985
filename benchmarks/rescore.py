"""Microbenchmark of re-scores: ``refresh`` one customer at a time against ``refresh_many``.

    python benchmarks/rescore.py [--customers 12000] [--events 120000] [--days 10]
                                 [--batches 64,1000,10000] [--profile 1000]

A scorer learns ``--events`` simulated events of ``--customers`` customers (weeks of event
time, through the engine, so silent customers are re-scored and churn labels arrive as in the
worker); then, from copies of that same scorer and states, ``--days`` event-time days of
re-scores of every customer still re-scored, once a day, each way: one ``refresh`` per customer
(what the engine did before batches), ``refresh_many`` over the day's customers in batches of
each of ``--batches`` (``day``: the whole day's), and the engine's ``advance`` re-scoring at
most as many due customers a call (its deadlines, checks, segment counts and next deadlines
included); and, as the worker does per event, ``advance`` 1,000 at most with each score turned
into the Redis hash the worker writes (``score_fields``, its reasons phrased,
without recommendations). The lifetime model's daily refit is off (it costs the same either
way and would hide the difference). CPU time of this process, so other work on the machine
counts less (wall time too), in ``--rounds`` rounds of every mode in turn; the median and the
best round are reported, with the re-scores a second one core does at the median.

``--profile N`` then runs one more round of ``refresh_many`` in batches of N under cProfile
and prints the 15 functions taking the most time of their own.

Writes benchmarks/results/rescore.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pickle
import platform
import pstats
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from online_models.customer.activity import DAY  # noqa: E402
from online_models.scoring.engine import Scored, ScoringEngine  # noqa: E402
from online_models.scoring.scorer import CustomerScorer, ScorerConfig  # noqa: E402
from schemas import decode_event  # noqa: E402
from schemas.score_hash import UnwritableScore  # noqa: E402
from streams.commands.simulator import SimulationConfig, generate_events  # noqa: E402
from streams.convert import activity_of, score_fields  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "rescore.json"
#: How a day's customers are re-scored: ``refresh`` one at a time, ``refresh_many`` or the
#: engine's ``advance`` in batches of at most the size (None: the whole day at once).
Mode = tuple[str, int | None]
#: The batch the worker re-scores per event at most (``MAX_RESCORES_PER_EVENT``).
WORKER_BATCH = 1_000
WRITTEN_AT = datetime(2026, 1, 1, tzinfo=UTC).isoformat()


def build_world(customers: int, events: int) -> tuple[bytes, dict[str, Any]]:
    """The engine (its scorer, states and deadlines) after ``events`` simulated events,
    pickled, and what it holds."""
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
    return pickle.dumps(engine), facts


def rescore(
    world: bytes, last: float, days: int, mode: Mode, profiler: cProfile.Profile | None = None
) -> dict[str, Any]:
    """``days`` daily re-scores of every customer still re-scored, the ``mode`` way (the
    re-scores alone under ``profiler``, when given)."""
    engine: ScoringEngine = pickle.loads(world)
    scorer, states = engine.scorer, engine.states
    way, size = mode
    rescored = unwritten = 0
    cpu = wall = 0.0
    for day in range(1, days + 1):
        now = last + day * DAY
        due = [
            (customer_id, state)
            for customer_id, state in sorted(states.items())
            if scorer.next_refresh(state, now - DAY) is not None
        ]
        started_cpu, started_wall = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        if way in ("engine", "hashes"):
            while scored := engine.advance(now, limit=size):
                rescored += len(scored)
                if way == "hashes":  # what the worker writes of each, recommendations aside
                    unwritten += _write_hashes(scored)
        elif way == "refresh":
            for customer_id, state in due:
                scorer.refresh(customer_id, state, now)
        else:  # refresh_many
            size = size or len(due)
            for start in range(0, len(due), size):
                scorer.refresh_many(due[start : start + size], now)
        if profiler is not None:
            profiler.disable()
        cpu += time.process_time() - started_cpu
        wall += time.perf_counter() - started_wall
        rescored += len(due) if way not in ("engine", "hashes") else 0
    return {
        "rescores": rescored,
        "cpu_seconds": round(cpu, 3),
        "wall_seconds": round(wall, 3),
        "us_per_rescore_cpu": round(cpu / rescored * 1e6, 2),
        "us_per_rescore_wall": round(wall / rescored * 1e6, 2),
        **({"unrenderable": unwritten} if way == "hashes" else {}),
    }


def _write_hashes(scored: list[Scored]) -> int:
    """Render each score as the worker's Redis hash; how many would not render (the worker
    logs, counts and drops those)."""
    failed = 0
    for each in scored:
        try:
            score_fields(each.customer_id, each.outcome.score, [], WRITTEN_AT)
        except UnwritableScore:
            failed += 1
    return failed


def profile(world: bytes, last: float, days: int, batch: int, top: int = 15) -> None:
    """Print where ``refresh_many`` in batches of ``batch`` spends its time (cProfile)."""
    profiler = cProfile.Profile()
    rescore(world, last, days, ("refresh_many", batch), profiler)
    print(f"cProfile of refresh_many in batches of {batch:,} ({days} days), by own time:")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


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


def _batches(text: str) -> list[int | None]:
    return [None if size == "day" else int(size) for size in text.split(",")]


def _world(args: argparse.Namespace) -> tuple[bytes, dict[str, Any]]:
    """The world of ``args``: read from ``--world`` when that file exists, else built (and
    written there, when named; a file from another commit's code may not read)."""
    if args.world is not None and args.world.exists():
        return pickle.loads(args.world.read_bytes())  # type: ignore[no-any-return]
    print(f"scoring {args.events:,} events of {args.customers:,} customers ...", flush=True)
    world = build_world(args.customers, args.events)
    if args.world is not None:
        args.world.write_bytes(pickle.dumps(world))
    return world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=12_000)
    parser.add_argument("--events", type=int, default=120_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=_batches, default=_batches("64,1000,10000"))
    parser.add_argument("--no-refresh", action="store_true", help="skip one-at-a-time refresh")
    parser.add_argument("--profile", type=int, default=None, metavar="BATCH")
    parser.add_argument("--world", type=Path, default=None, help="cache of the built world")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    world, facts = _world(args)
    print(
        f"{facts['customers']:,} customers over {facts['event_time_days']} days of event time, "
        f"{facts['churn_labels_learned']:,} churn labels learned",
        flush=True,
    )
    modes: dict[str, Mode] = {} if args.no_refresh else {"refresh, one at a time": ("refresh", 1)}
    for way, name in (("refresh_many", "refresh_many"), ("engine", "engine.advance")):
        modes.update({f"{name}, batch {size or 'day'}": (way, size) for size in args.batches})
    modes[f"engine.advance + hashes, {WORKER_BATCH}"] = ("hashes", WORKER_BATCH)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in modes}
    for round_ in range(1, args.rounds + 1):  # interleaved: the machine's load hits every mode
        for name, mode in modes.items():
            runs[name].append(rescore(world, facts["last_event_time"], args.days, mode))
            row = runs[name][-1]
            print(
                f"round {round_}  {name:34s} {row['rescores']:>8,} re-scores "
                f"{row['us_per_rescore_cpu']:7.2f} us CPU ({row['us_per_rescore_wall']:.2f} us "
                "wall) per re-score"
                + (f", {row['unrenderable']:,} not renderable" if "unrenderable" in row else ""),
                flush=True,
            )
    rows = {name: _summary(each) for name, each in runs.items()}
    one = rows.get("refresh, one at a time")
    print(f"median of {args.rounds} rounds, CPU time per re-score:")
    for name, row in rows.items():
        us = row["us_per_rescore_cpu_median"]
        row["rescores_per_second_cpu_median"] = round(1e6 / us)
        if one is not None:
            row["speedup_cpu_median"] = round(one["us_per_rescore_cpu_median"] / us, 2)
        print(
            f"  {name:34s} {us:7.2f} us (min {row['us_per_rescore_cpu_min']:.2f})  "
            f"{row['rescores_per_second_cpu_median']:>9,} re-scores/s"
        )
    if args.profile is not None:
        profile(world, facts["last_event_time"], args.days, args.profile)
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
            "batches": args.batches,
        },
        "population": {k: v for k, v in facts.items() if k != "last_event_time"},
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
