"""Throughput, latency and memory of the worker, against Faust's ceiling and a naive scorer.

    python benchmarks/throughput.py [--events 200000] [--customers 20000] [--latency-seconds 30]

Starts a Tansu broker and a redis-server on free ports and pre-produces the events (a mix of
every type over ``--span-days`` of event time, ending an hour ago: 30 days by default, so the
daily re-scores of silent customers are part of the load, as in production). Then, one after another
over the same events, it times, from the consumer's partition assignment (when it may start
fetching) to the last event's effect:
  (a) a bare Faust agent that only decodes the JSON (Faust's per-event ceiling),
  (a') the same decoding on the batched delivery path the worker uses (streams/batching.py),
  (b) a naive scorer written the obvious way (benchmarks/throughput_consumers.py),
  (c) the real ``crm-scorer worker`` with every model and alert on, until every score is in Redis.
Then, with (c) still running, it sends events at half of (c)'s rate for ``--latency-seconds``
and reads the worker's own event-to-Redis histogram; and it reads the worker's resident memory
before the events, after them, after a second pass over the same customers (growth with events)
and after ``--new-customers`` never seen before arrive (memory per customer of state).
(c) reads a product catalogue of the events' 5,000 items first (``CRM_ITEMS_TOPIC``: a name,
a category and a price each), so content scores are part of every ranking; before it, the same
worker scores the same events with no catalogue (first pass only), and the ratio of the two is
what the catalogue costs.
With ``--baseline DIR`` (a checkout of an earlier commit, e.g. ``git worktree add DIR COMMIT``)
that commit's worker first scores the same events the same way, so the cost of what changed
since is a ratio of two rows of one run, not of two runs on a noisy machine.
Prints a table and writes benchmarks/results/throughput.json.
The events and the catalogue are ``benchmarks/throughput_workload.py``'s; starting, feeding
and timing a worker is ``benchmarks/worker_harness.py``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.throughput_workload import make_events, recent_events  # noqa: E402
from benchmarks.worker_harness import (  # noqa: E402
    bench_worker_env,
    clean_environment,
    create_catalogue_topics,
    create_topic,
    handled,
    histogram_quantiles,
    measure_first_pass,
    produce,
    rss_bytes,
    send_and_settle,
    settled,
    wait_until,
    worker_pid,
)
from streams.commands.demo import WorkerProcess, read_metrics  # noqa: E402
from streams.commands.local_services import LocalBroker, LocalRedis  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "throughput.json"
CONSUMERS = ROOT / "benchmarks" / "throughput_consumers.py"


def run_reference(kind: str, env: dict[str, str], work: Path, timeout: float) -> dict[str, float]:
    """Run (a) or (b) until it handled every event; its own first and last timestamps."""
    result = work / f"{kind}.json"
    env = {**env, "BENCH_KIND": kind, "BENCH_RESULT": str(result)}
    env["BENCH_DATADIR"] = str(work / f"{kind}-data")
    log = (work / f"{kind}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(CONSUMERS), "worker", "-l", "warn"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=work,
    )

    def finished() -> bool:
        if process.poll() is not None and not result.exists():
            tail = (work / f"{kind}.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"({kind}) exited with {process.returncode}:\n{tail}")
        return result.exists()

    try:
        wait_until(finished, timeout, f"({kind}) to finish", work / f"{kind}.log")
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    timing = orjson.loads(result.read_bytes())
    seconds = timing["last"] - timing["first"]
    return {"seconds": seconds, "events_per_second": timing["events"] / seconds}


def main() -> None:  # one linear script: each step reads top to bottom
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--span-days",
        type=float,
        default=30.0,
        help="event time the events cover: every silent customer is re-scored once per "
        "event-time day, as in production (a day or less measures a burst without re-scores)",
    )
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument(
        "--second-pass", type=float, default=0.25, help="share of --events sent again (memory)"
    )
    parser.add_argument(
        "--new-customers",
        type=int,
        default=100_000,
        help="customers never seen before, sent last with 3 events each (memory per customer)",
    )
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of an earlier commit (git worktree add DIR COMMIT): its worker scores "
        "the same events first, so (c) before and after a change are rows of one run",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    now = time.time()
    events = recent_events(args.events, args.customers, args.span_days, now)

    results: dict[str, Any] = {
        "events": args.events,
        "customers": args.customers,
        "span_days": args.span_days,
    }
    with tempfile.TemporaryDirectory(prefix="crm-throughput-") as tmp:
        work = Path(tmp)
        broker, server = LocalBroker(), LocalRedis()
        broker.start()
        server.start()
        try:
            topic = "bench.events"
            create_topic(broker.bootstrap, topic, args.partitions)
            create_catalogue_topics(broker.bootstrap, args.partitions)
            seconds = produce(broker.bootstrap, topic, events)
            print(f"pre-produced {args.events:,} events in {seconds:.1f}s", flush=True)
            env = clean_environment()
            bench_env = {
                **env,
                "BENCH_BROKER": broker.url,
                "BENCH_REDIS": server.url,
                "BENCH_TOPIC": topic,
                "BENCH_EVENTS": str(args.events),
                "BENCH_PARTITIONS": str(args.partitions),
            }
            for kind in ("ceiling", "batched", "naive"):
                results[kind] = run_reference(kind, bench_env, work, args.timeout)
                print(f"({kind}) {results[kind]['events_per_second']:,.0f} events/s", flush=True)

            def worker_env(name: str, items: str = "bench.items") -> dict[str, str]:
                return bench_worker_env(
                    env, name, broker, server, topic, args.partitions, work, items=items
                )

            if args.baseline is not None:
                results["baseline"] = measure_first_pass(
                    args, worker_env("baseline"), work, server.url, args.baseline
                )
            results["no_catalogue"] = measure_first_pass(
                args, worker_env("no-catalogue", "bench.no-items"), work, server.url
            )
            worker = WorkerProcess(worker_env("worker"), work / "worker.log")
            worker.start()
            try:
                results["worker"] = measure_worker(worker, args, broker, topic, events, now)
            finally:
                worker.stop()
        finally:
            server.stop()
            broker.stop()

    a = results["ceiling"]["events_per_second"]
    b = results["naive"]["events_per_second"]
    c = results["worker"]["events_per_second"]
    results["c_over_a"], results["c_over_b"] = c / a, c / b
    if "baseline" in results:
        results["c_over_baseline"] = c / results["baseline"]["events_per_second"]
    results["c_over_no_catalogue"] = c / results["no_catalogue"]["events_per_second"]
    results["machine"] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    results["versions"] = _versions()
    report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


def measure_worker(
    worker: WorkerProcess, args: Any, broker: LocalBroker, topic: str, events: list, now: float
) -> dict[str, Any]:
    """(c): throughput over the pre-produced events, then latency, then memory."""
    pid = worker_pid(worker)
    wait_until(
        lambda: "crm_scorer_events_total" in read_metrics(worker.port), 120, "(c)", worker.log_path
    )
    time.sleep(3)  # idle: the baseline memory of a worker with no customers yet
    rss_empty = rss_bytes(pid)
    wait_until(lambda: handled(worker) > 0, args.timeout, "(c)'s first event", worker.log_path)
    # From the worker's partition assignment, as for (a), (a') and (b).
    first = read_metrics(worker.port)["crm_scorer_last_rebalance_timestamp_seconds"]
    wait_until(lambda: settled(worker, args.events), args.timeout, "(c) to finish", worker.log_path)
    seconds = time.time() - first
    rss_loaded = rss_bytes(pid)
    rate = args.events / seconds
    metrics = read_metrics(worker.port)
    customers = int(metrics.get("crm_scorer_customers", 0))
    rescores = metrics.get("crm_scorer_rescores_total", 0.0)
    print(
        f"(c) {rate:,.0f} events/s and {rescores / seconds:,.0f} re-scores/s "
        f"({rescores:,.0f} re-scores), {customers:,} customers",
        flush=True,
    )

    latency_rate = rate / 2
    count = int(latency_rate * args.latency_seconds)
    latency_events = make_events(count, args.customers, now, now, 2, "lat")
    before = send_and_settle(worker, broker, topic, latency_events, args, rate=latency_rate)
    latency = histogram_quantiles(before, read_metrics(worker.port))
    latency["rate"] = latency_rate
    print(f"latency at {latency_rate:,.0f}/s: {latency}", flush=True)

    # Memory growth with events once customers are no longer new: the same customers again.
    again = make_events(
        int(args.events * args.second_pass), args.customers, now, now + 600, 3, "again"
    )
    send_and_settle(worker, broker, topic, again, args)
    rss_again = rss_bytes(pid)

    # Memory per customer of state: the growth while many customers never seen before
    # arrive. Fixed costs (imports, fetch buffers, the models' item tables) do not scale
    # with customers, and the heap the first pass freed again is reused first, so many new
    # customers make the growth theirs.
    fresh = make_events(
        3 * args.new_customers, args.new_customers, now + 600, now + 1200, 4, "new", prefix="n"
    )
    known = int(send_and_settle(worker, broker, topic, fresh, args)["crm_scorer_customers"])
    added = int(read_metrics(worker.port)["crm_scorer_customers"]) - known
    rss_new = rss_bytes(pid)
    print(f"{added:,} new customers: RSS {rss_again / 2**20:,.0f} -> {rss_new / 2**20:,.0f} MiB")
    return {
        "seconds": seconds,
        "events_per_second": rate,
        "rescores": rescores,
        "rescores_per_second": rescores / seconds,
        "customers": customers,
        "latency_seconds": latency,
        "rss_empty_bytes": rss_empty,
        "rss_loaded_bytes": rss_loaded,
        "rss_after_second_pass_bytes": rss_again,
        "rss_after_new_customers_bytes": rss_new,
        "new_customers": added,
        "bytes_per_customer": (rss_new - rss_again) / max(added, 1),
        "bytes_per_customer_with_fixed_costs": (rss_loaded - rss_empty) / max(customers, 1),
        "growth_second_pass_bytes": rss_again - rss_loaded,
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("faust-streaming", "river", "redis", "aiokafka")}


def report(results: dict[str, Any]) -> None:
    worker = results["worker"]
    latency = worker["latency_seconds"]
    rows = [
        ("(a) bare Faust agent, decode only", f"{results['ceiling']['events_per_second']:,.0f}/s"),
        (
            "(a') Faust, batched delivery, decode only",
            f"{results['batched']['events_per_second']:,.0f}/s",
        ),
        ("(b) naive scorer", f"{results['naive']['events_per_second']:,.0f}/s"),
        ("(c) crm-scorer worker", f"{worker['events_per_second']:,.0f}/s"),
        (
            f"  re-scores of silent customers over {results['span_days']:g} days",
            f"{worker['rescores_per_second']:,.0f}/s ({worker['rescores']:,.0f})",
        ),
        *(
            [
                (
                    f"(c) at {results['baseline']['commit']} (--baseline), same events",
                    f"{results['baseline']['events_per_second']:,.0f}/s",
                ),
                ("c / baseline", f"{results['c_over_baseline']:.2f}"),
            ]
            if "baseline" in results
            else []
        ),
        (
            "(c) with no catalogue, same events",
            f"{results['no_catalogue']['events_per_second']:,.0f}/s",
        ),
        ("c / no catalogue (target >= 0.9)", f"{results['c_over_no_catalogue']:.2f}"),
        ("c/a (target >= 0.8)", f"{results['c_over_a']:.2f}"),
        ("c/b (target >= 3)", f"{results['c_over_b']:.2f}"),
        (
            f"event to Redis at {latency['rate']:,.0f}/s p50/p95/p99",
            "/".join(f"{latency[p] * 1000:.0f}" for p in ("p50", "p95", "p99")) + " ms",
        ),
        (
            "worker memory per new customer (target <= 2 KB)",
            f"{worker['bytes_per_customer']:,.0f} B"
            f" ({worker['bytes_per_customer'] * 1e5 / 2**20:,.0f} MiB per 100,000)",
        ),
        (
            "  the same, fixed costs spread over the first pass",
            f"{worker['bytes_per_customer_with_fixed_costs']:,.0f} B",
        ),
        ("growth on a second pass", f"{worker['growth_second_pass_bytes'] / 2**20:,.1f} MiB"),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main()
