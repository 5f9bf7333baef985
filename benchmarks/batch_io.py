"""The worker's Kafka output per batch, before and after: events/s and changelog records written.

    python benchmarks/batch_io.py --baseline DIR [--events 50000] [--customers 5000]

``DIR`` is a checkout of the commit to compare with (``git worktree add --detach DIR COMMIT``);
its packages go first on the worker's PYTHONPATH and share this checkout's dependencies.
Starts Tansu and a redis-server on free ports, pre-produces ``--events`` events of every type
over ``--span-days`` of event time (so silent customers are re-scored, as in production) and
runs the baseline's worker, then this checkout's, over the same events, each in its own
consumer group, timed as ``benchmarks/throughput.py`` times (c): from the partition
assignment until every event is counted and every score is in Redis. Then each reads its
changelog and alerts topics to the end and counts their records, and, still running, takes
``--latency-seconds`` of events at ``--latency-rate`` for its event-to-Redis latency.
Prints one table; writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaConsumer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.throughput_workload import make_events, recent_events  # noqa: E402
from benchmarks.worker_harness import (  # noqa: E402
    bench_worker_env,
    clean_environment,
    create_topic,
    handled,
    histogram_quantiles,
    produce,
    settled,
    wait_until,
)
from streams.commands.demo import WorkerProcess, read_metrics  # noqa: E402
from streams.commands.local_services import LocalBroker, LocalRedis  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--span-days", type=float, default=30.0)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument(
        "--latency-rate", type=float, help="events/s of the steady stream (half of before's)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    now = time.time()
    events = recent_events(args.events, args.customers, args.span_days, now)
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="crm-batch-io-") as tmp:
        work = Path(tmp)
        broker, server = LocalBroker(), LocalRedis()
        broker.start()
        server.start()
        try:
            checkouts = {"before": args.baseline.resolve(), "after": ROOT}
            for name in checkouts:  # a topic each: the other's steady events are not theirs
                create_topic(broker.bootstrap, f"bench.{name}.events", args.partitions)
                produce(broker.bootstrap, f"bench.{name}.events", events)
            base = clean_environment()
            for name, source in checkouts.items():
                topic = f"bench.{name}.events"
                env = bench_worker_env(base, name, broker, server, topic, args.partitions, work)
                env["PYTHONPATH"] = str(source)
                rows[name] = measure(env, work / f"{name}.log", broker, topic, events, args)
                args.latency_rate = args.latency_rate or rows[name]["events_per_second"] / 2
                rows[name]["changelog_records"] = count_records(
                    broker.bootstrap, f"bench-{name}-customers-changelog"
                )
                rows[name]["alerts"] = count_records(broker.bootstrap, f"bench.{name}.alerts")
                client = redis.Redis.from_url(server.url)
                rows[name]["totals"] = customer_totals(client)
                client.flushall()
                shown = {k: v for k, v in rows[name].items() if k != "totals"}
                print(name, shown, f"{len(rows[name]['totals'])} scores", flush=True)
        finally:
            server.stop()
            broker.stop()
    report(rows, args)


def measure(
    env: dict[str, str], log: Path, broker: LocalBroker, topic: str, events: list, args: Any
) -> dict[str, Any]:
    """Throughput over the pre-produced events, then the latency of a steady stream."""
    worker = WorkerProcess(env, log)
    worker.start()
    try:
        wait_until(lambda: handled(worker) > 0, args.timeout, "the first event", log)
        first = read_metrics(worker.port)["crm_scorer_last_rebalance_timestamp_seconds"]
        wait_until(lambda: settled(worker, len(events)), args.timeout, "every event", log)
        seconds = time.time() - first
        metrics = read_metrics(worker.port)
        rate = args.latency_rate or len(events) / seconds / 2
        count = int(rate * args.latency_seconds)
        steady = make_events(count, args.customers, time.time(), time.time(), 2, "lat")
        produce(broker.bootstrap, topic, steady, rate=rate)
        total = len(events) + count
        wait_until(lambda: settled(worker, total), args.timeout, "the steady events", log)
        latency = histogram_quantiles(metrics, read_metrics(worker.port))
    finally:
        worker.stop()
    return {
        "seconds": seconds,
        "events_per_second": len(events) / seconds,
        "rescores": metrics.get("crm_scorer_rescores_total", 0.0),
        # A rebalance mid-run rebuilds the re-score schedule: re-scores and alerts then differ.
        "rebalanced": metrics["crm_scorer_last_rebalance_timestamp_seconds"] != first,
        "latency_ms": {q: round(v * 1000) for q, v in latency.items() if q.startswith("p")},
    }


def customer_totals(client: redis.Redis) -> dict[bytes, tuple[Any, ...]]:
    """Every score hash's orders and net monetary: what the events alone decide, so the same
    for any correct worker."""
    keys = list(client.scan_iter(match=b"crm:score:*", count=1000))
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, "orders", "monetary")
        return dict(zip(keys, map(tuple, pipe.execute()), strict=True))


def count_records(bootstrap: str, topic: str, idle_seconds: float = 3.0) -> int:
    """Records on ``topic``, read from the start until none came for ``idle_seconds`` (Tansu
    reports a partition's end as its last batch's base offset + 1, so end offsets would not
    count the records of a multi-record batch)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(idle_seconds * 1000),
    )
    try:
        return sum(1 for _ in consumer)
    finally:
        consumer.close()


def report(rows: dict[str, dict[str, Any]], args: Any) -> None:
    before, after = rows["before"], rows["after"]
    print(
        f"\n{args.events:,} events of {args.customers:,} customers over {args.span_days:g} days, "
        f"{args.partitions} partitions; latency at {args.latency_rate:,.0f} events/s\n"
    )
    print(f"| measure | before ({args.baseline.name}) | after | after / before |")
    print("|---|---|---|---|")
    for label, key in (
        ("events/s", "events_per_second"),
        ("re-scores", "rescores"),
        ("changelog records", "changelog_records"),
        ("alerts", "alerts"),
    ):
        b, a = before[key], after[key]
        print(f"| {label} | {b:,.0f} | {a:,.0f} | {a / max(b, 1e-9):.2f} |")
    differ = sum(
        before["totals"].get(key) != totals for key, totals in after["totals"].items()
    ) + len(before["totals"].keys() - after["totals"].keys())
    print(f"| customers whose orders or monetary differ | | {differ} | |")
    print(f"| rebalanced mid-run | {before['rebalanced']} | {after['rebalanced']} | |")
    for q in ("p50", "p95", "p99"):
        b, a = before["latency_ms"].get(q, 0), after["latency_ms"].get(q, 0)
        print(f"| event to Redis {q}, ms | {b} | {a} | |")


if __name__ == "__main__":
    main()
