"""What the product catalogue costs the worker: its throughput with and without it, in turns.

    python benchmarks/catalogue_cost.py [--events 100000] [--customers 10000] [--turns 3]
                                        [--span-days 30] [--baseline DIR]

The throughput benchmark (``benchmarks/throughput.py``) measures the worker with and without
the catalogue once each, minutes apart; on a shared machine that ratio moved from 0.96 to 0.73
between two runs of nearly the same code. This script measures only that ratio, and
measures it ``--turns`` times: each turn scores the same pre-produced events (the throughput
benchmark's: every event type over ``--span-days`` of event time, so silent customers are
re-scored daily) with a fresh worker and no catalogue and with a fresh worker that first
reads the 5,000-item catalogue (``CRM_ITEMS_TOPIC``), which one first moving every turn, each
timed as the throughput benchmark times its first pass (from the partition assignment until
every score is in Redis). A load
that comes and goes hits a turn's two rows alike, so the result is the median of the turns'
ratios, every turn kept. With ``--baseline DIR`` (``git worktree add DIR COMMIT``) each turn
also scores the events with that checkout's worker, with the catalogue, so a change's effect
on the catalogue's cost is in the same run.

Starts its own Tansu broker and redis-server on free ports. Writes
benchmarks/results/catalogue-cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.throughput_workload import recent_events  # noqa: E402
from benchmarks.worker_harness import (  # noqa: E402
    bench_worker_env,
    clean_environment,
    commit_of,
    create_catalogue_topics,
    create_topic,
    measure_first_pass,
    produce,
)
from streams.commands.local_services import LocalBroker, LocalRedis  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "catalogue-cost.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--span-days", type=float, default=30.0)
    parser.add_argument("--turns", type=int, default=3, help="with and without, this many times")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of an earlier commit: its worker, with the catalogue, in every turn",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.turns < 1:
        parser.error(f"--turns must be at least 1, got {args.turns}")
    events = recent_events(args.events, args.customers, args.span_days, time.time())
    turns: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="crm-catalogue-cost-") as tmp:
        work = Path(tmp)
        broker, server = LocalBroker(), LocalRedis()
        broker.start()
        server.start()
        try:
            topic = "bench.events"
            create_topic(broker.bootstrap, topic, args.partitions)
            create_catalogue_topics(broker.bootstrap, args.partitions)
            produce(broker.bootstrap, topic, events)
            env = clean_environment()
            for turn in range(args.turns):
                row: dict[str, Any] = {}
                for kind in order(turn, args.baseline is not None):
                    name = f"{kind}-{turn}"
                    items = "bench.no-items" if kind == "no_catalogue" else "bench.items"
                    worker = bench_worker_env(
                        env, name, broker, server, topic, args.partitions, work, items=items
                    )
                    checkout = args.baseline if kind == "baseline" else None
                    row[kind] = measure_first_pass(args, worker, work, server.url, checkout)
                row["ratio"] = (
                    row["catalogue"]["events_per_second"] / row["no_catalogue"]["events_per_second"]
                )
                print(f"turn {turn + 1}: with / without the catalogue {row['ratio']:.3f}")
                turns.append(row)
        finally:
            server.stop()
            broker.stop()
    document = summary(args, turns)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")


def order(turn: int, baseline: bool) -> list[str]:
    """The rows of a turn, in the order measured: which goes first moves every turn, so a
    worker measured first (or last) in its turn is not always the same one.

    >>> order(0, False), order(1, False)
    (['no_catalogue', 'catalogue'], ['catalogue', 'no_catalogue'])
    >>> order(2, True)
    ['baseline', 'no_catalogue', 'catalogue']
    """
    kinds = ["no_catalogue", "catalogue", *(["baseline"] if baseline else [])]
    shift = turn % len(kinds)
    return kinds[shift:] + kinds[:shift]


def summary(args: Any, turns: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians of the turns' rates and ratios, printed, and every turn."""
    ratios = [turn["ratio"] for turn in turns]
    median = {
        kind: statistics.median(turn[kind]["events_per_second"] for turn in turns)
        for kind in ("no_catalogue", "catalogue", "baseline")
        if kind in turns[0]
    }
    document: dict[str, Any] = {
        "benchmark": "catalogue_cost",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit_of(ROOT),
        "events": args.events,
        "customers": args.customers,
        "span_days": args.span_days,
        "median_events_per_second": median,
        "catalogue_over_no_catalogue": statistics.median(ratios),
        "ratios": ratios,
        "turns": turns,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    if "baseline" in median:
        document["baseline_commit"] = turns[0]["baseline"]["commit"]
        document["catalogue_over_baseline"] = statistics.median(
            turn["catalogue"]["events_per_second"] / turn["baseline"]["events_per_second"]
            for turn in turns
        )
    print(f"events/s, medians of {len(turns)} turns: {median}")
    print(
        "with / without the catalogue (target >= 0.9): "
        f"{document['catalogue_over_no_catalogue']:.3f} "
        f"(turns: {', '.join(f'{r:.3f}' for r in ratios)})"
    )
    if "catalogue_over_baseline" in document:
        ratio = document["catalogue_over_baseline"]
        print(f"this commit / {document['baseline_commit']}, both with it: {ratio:.3f}")
    return document


if __name__ == "__main__":
    main()
