"""Where the worker's time goes: py-spy over ``crm-scorer worker`` scoring a burst.

    python benchmarks/profile_worker.py [--events 60000] [--seconds 40] [--baseline DIR]

Starts a Tansu broker and a redis-server on free ports, pre-produces the throughput
benchmark's events (every type, ``--span-days`` of event time, so silent customers are
re-scored) and its 5,000-item catalogue, starts the worker, and once it scores its first event
samples its main thread with ``py-spy record --idle --threads`` for ``--seconds`` (the main
thread scores everything: one core bounds a worker; not ``--gil``, which misses the numpy work
that runs without the GIL). Each sample is charged to the first part of the work (the rules
are ``CATEGORIES``) any frame of its stack names, or to waiting when the event loop had
nothing to do; what none claims is the batch loop, the event loop and the consumer. With
``--baseline DIR`` (a
checkout of an earlier commit) that commit's worker is profiled first on the same events, so
the two profiles are of one run; ``--no-catalogue`` leaves the catalogue out (earlier commits
have none). Prints both tables and writes ``benchmarks/results/profile.json``.

py-spy is in the ``bench`` extra (``pip install -e '.[bench]'``); it needs ptrace rights on
the worker (root, or ``kernel.yama.ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.throughput_workload import make_catalogue, recent_events  # noqa: E402
from benchmarks.worker_harness import (  # noqa: E402
    bench_worker_env,
    clean_environment,
    commit_of,
    create_topic,
    handled,
    produce,
    wait_until,
    worker_pid,
)
from streams.commands.demo import WorkerProcess, read_metrics  # noqa: E402
from streams.commands.local_services import LocalBroker, LocalRedis  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "profile.json"

#: (part of the work, substrings of a frame "function (file:line)"): a sample is charged to the
#: first rule any frame of its stack matches, so a part includes everything it calls (ranking
#: includes the numpy it runs, the Redis writes exclude the ranking done while rendering).
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ranking recommendations", ("rank_many ", "recommend_many ")),
    (
        "building score and alert records",
        ("score_fields ", "alert_of ", "schemas/score_hash.py", "schemas/alerts.py"),
    ),
    (
        "group model sync",
        (
            "model_sync.py",
            "model_feed.py",
            "model_codec.py",
            "online_models/group/",
            "model_records.py",
        ),
    ),
    ("state decode and encode", ("online_models/scoring/state.py", "customer_table.py")),
    (
        "decoding and validating events",
        ("schemas/events.py", "schemas/event_batch.py", "activity_of (", "activities_of ("),
    ),
    (
        "Kafka output (changelog, alerts, dead letters)",
        ("producing.py", "dead_lettering.py", "aiokafka/producer", "faust/transport/producer"),
    ),
    ("Redis writes", ("redis_sink.py", "/redis/")),
    ("metrics", ("prometheus_client/", "streams/metrics.py")),
    ("models: churn", ("online_models/churn/",)),
    (
        "models: segments",
        (
            "online_models/segments/kmeans.py",
            "online_models/segments/centres.py",
            "online_models/segments/names.py",
        ),
    ),
    (
        "models: recommender learning",
        tuple(
            f"online_models/recommend/{name}.py"
            for name in ("recommender", "ranking", "items", "sync", "quality")
        ),
    ),
    ("models: lifetime value", ("online_models/value/",)),
    ("models: profile, reasons, sentiment, alert policy", ("online_models/",)),
)
OTHER = "batch loop, emits, event loop, consumer"
IDLE = "waiting (no work: the event loop's select)"
MAIN = "MainThread"


def categorise(stack: str) -> str:
    """The part of the work a collapsed stack (root first, ``;``-separated) is charged to."""
    if stack.rsplit(";", 1)[-1].startswith(("EpollSelector.select", "select (")):
        return IDLE
    for name, needles in CATEGORIES:
        if any(needle in stack for needle in needles):
            return name
    return OTHER


def profile(
    env: dict[str, str],
    work: Path,
    seconds: float,
    timeout: float,
    label: str,
    stacks: Path | None = None,
) -> dict[str, Any]:
    """Start a worker with ``env``, sample it for ``seconds`` once it scores, stop it."""
    log = work / f"{label}.log"
    worker = WorkerProcess(env, log)
    worker.start()
    try:
        wait_until(lambda: handled(worker) > 0, timeout, f"{label}'s first event", log)
        raw = work / f"{label}.txt"
        before = read_metrics(worker.port)
        started = time.monotonic()
        subprocess.run(
            [
                _py_spy(),
                "record",
                "--pid",
                str(worker_pid(worker)),
                "--duration",
                str(int(seconds)),
                "--rate",
                "100",
                "--idle",
                "--threads",
                "--format",
                "raw",
                "--output",
                str(raw),
            ],
            check=True,
            capture_output=True,
        )
        seconds = time.monotonic() - started
        after = read_metrics(worker.port)
    finally:
        worker.stop()
    shares: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        thread, _, stack = stack.partition(";")
        if stack and thread.endswith(MAIN):
            shares[categorise(stack)] += int(count)
            leaves[stack.rsplit(";", 1)[-1]] += int(count)
    total = sum(shares.values())
    if stacks is not None:
        stacks.mkdir(parents=True, exist_ok=True)
        shutil.copy(raw, stacks / f"{label}.txt")
    rates = {
        f"{what}_per_second": (after.get(metric, 0.0) - before.get(metric, 0.0)) / seconds
        for what, metric in (
            ("events", "crm_scorer_events_total"),
            ("rescores", "crm_scorer_rescores_total"),
        )
    }
    print(
        f"{label}: {total:,} samples; while sampled, {rates['events_per_second']:,.0f} events/s"
        f" and {rates['rescores_per_second']:,.0f} re-scores/s",
        flush=True,
    )
    return {
        "samples": total,
        **rates,
        "shares": {name: count / total for name, count in shares.most_common()},
        "innermost_frames": {frame: count / total for frame, count in leaves.most_common(30)},
    }


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        sys.exit("py-spy is not installed: pip install -e '.[bench]'")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--customers", type=int, default=6_000)
    parser.add_argument("--span-days", type=float, default=30.0)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--baseline", type=Path, help="a checkout of an earlier commit")
    parser.add_argument("--no-catalogue", action="store_true", help="profile with no catalogue")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--stacks", type=Path, help="keep py-spy's raw stacks in this directory")
    args = parser.parse_args()
    _py_spy()
    now = time.time()
    events = recent_events(args.events, args.customers, args.span_days, now, "p")
    items = "bench.no-items" if args.no_catalogue else "bench.items"
    results: dict[str, Any] = {"events": args.events, "customers": args.customers}
    with tempfile.TemporaryDirectory(prefix="crm-profile-") as tmp:
        work = Path(tmp)
        broker, server = LocalBroker(), LocalRedis()
        broker.start()
        server.start()
        try:
            create_topic(broker.bootstrap, "bench.events", args.partitions)
            create_topic(broker.bootstrap, items, args.partitions)
            if not args.no_catalogue:
                produce(broker.bootstrap, items, make_catalogue())
            produce(broker.bootstrap, "bench.events", events)
            env = clean_environment()
            runs = [("this commit", None)]
            if args.baseline is not None:
                runs.insert(0, ("baseline", args.baseline.resolve()))
            for label, checkout in runs:
                name = label.replace(" ", "-")
                worker_env = bench_worker_env(
                    env, name, broker, server, "bench.events", args.partitions, work, items=items
                )
                if checkout is not None:
                    worker_env["PYTHONPATH"] = str(checkout)
                    results["baseline_commit"] = commit_of(checkout)
                results[name] = profile(
                    worker_env, work, args.seconds, args.timeout, name, args.stacks
                )
        finally:
            server.stop()
            broker.stop()
    for label in ("baseline", "this-commit"):
        if label in results:
            commit = results["baseline_commit"] if label == "baseline" else "HEAD"
            run = results[label]
            print(
                f"\n{label} ({commit}): {run['events_per_second']:,.0f} events/s and "
                f"{run['rescores_per_second']:,.0f} re-scores/s while sampled"
            )
            for name, share in results[label]["shares"].items():
                print(f"  {share:6.1%}  {name}")
    results["command"] = " ".join(["python", "benchmarks/profile_worker.py", *sys.argv[1:]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
