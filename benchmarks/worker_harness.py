"""A worker under benchmark and the broker that feeds it: topics, producing, waiting on the
worker's metrics, its memory, its environment, and a timed first pass.

``throughput.py`` measures with these; ``catalogue_cost.py``, ``profile_worker.py`` and
``batch_io.py`` start and time workers the same way, so their numbers compare with its (c).
A worker's pass is timed from its partition assignment
(``crm_scorer_last_rebalance_timestamp_seconds``) until it handled every event and Redis has
every score.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from benchmarks.throughput_workload import make_catalogue
from streams.commands.demo import WorkerProcess, read_metrics
from streams.commands.local_services import LocalBroker, LocalRedis, free_port

#: This checkout: its packages come first on a worker's path unless a baseline's do.
CHECKOUT = Path(__file__).resolve().parents[1]

__all__ = [
    "bench_worker_env",
    "clean_environment",
    "commit_of",
    "create_catalogue_topics",
    "create_topic",
    "handled",
    "histogram_quantiles",
    "measure_first_pass",
    "produce",
    "rss_bytes",
    "send_and_settle",
    "settled",
    "wait_until",
    "worker_pid",
]

logger = logging.getLogger(__name__)


def produce(bootstrap: str, topic: str, messages: list, rate: float | None = None) -> float:
    """Send ``messages`` (at ``rate`` per second when given); returns the seconds it took."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024, acks=1
    )
    started = time.perf_counter()
    for n, (key, value) in enumerate(messages):
        if rate is not None:
            ahead = started + n / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
            value = _restamped(value)
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()
    return time.perf_counter() - started


def _restamped(value: bytes) -> bytes:
    event = orjson.loads(value)
    event["timestamp"] = time.time()
    return orjson.dumps(event)


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, log: Path, every: float = 0.25
) -> None:
    """Poll ``condition`` every ``every`` seconds: a /metrics scrape costs the worker CPU, so
    polls during a measurement are few (the timing error is at most ``every``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise SystemExit(f"timed out waiting for {what}\n{tail}")
        time.sleep(every)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def worker_pid(worker: WorkerProcess) -> int:
    process = worker._process  # the harness owns the child it started
    assert process is not None
    return process.pid


def handled(worker: WorkerProcess) -> float:
    return read_metrics(worker.port).get("crm_scorer_events_total", 0.0)


def settled(worker: WorkerProcess, total: int) -> bool:
    metrics = read_metrics(worker.port)
    return (
        metrics.get("crm_scorer_events_total", 0.0) >= total
        and metrics.get("crm_scorer_redis_pending_scores", 1.0) == 0
    )


def histogram_quantiles(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """p50/p95/p99 (seconds) of the observations between two scrapes, interpolated in buckets."""
    name = "crm_scorer_event_to_redis_seconds_bucket"
    bounds = []
    for key, value in after.items():
        if key.startswith(name + "{le="):
            le = key[len(name) + 4 : -1]
            bound = float("inf") if le == "+Inf" else float(le)
            bounds.append((bound, value - before.get(key, 0.0)))
    bounds.sort()
    total = bounds[-1][1] if bounds else 0.0
    quantiles = {}
    for q in (0.5, 0.95, 0.99):
        target, lower, below = q * total, 0.0, 0.0
        for bound, count in bounds:
            if count >= target:
                if bound == float("inf"):
                    quantiles[f"p{int(q * 100)}"] = lower
                else:
                    share = (target - below) / max(count - below, 1e-9)
                    quantiles[f"p{int(q * 100)}"] = lower + (bound - lower) * share
                break
            lower, below = bound, count
    quantiles["observations"] = total
    return quantiles


def clean_environment() -> dict[str, str]:
    """This process's environment without ``CRM_`` and ``BENCH_`` variables: a benchmark's
    workers get only the settings it gives them."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "BENCH_"))}


def create_catalogue_topics(bootstrap: str, partitions: int) -> None:
    """``bench.items``, holding the 5,000-item catalogue, and ``bench.no-items``, empty: the
    ``CRM_ITEMS_TOPIC`` of a worker with the catalogue and of one without."""
    create_topic(bootstrap, "bench.items", partitions)
    create_topic(bootstrap, "bench.no-items", partitions)
    produce(bootstrap, "bench.items", make_catalogue())


def bench_worker_env(
    env: dict[str, str],
    name: str,
    broker: LocalBroker,
    server: LocalRedis,
    topic: str,
    partitions: int,
    work: Path,
    *,
    items: str = "bench.items",
) -> dict[str, str]:
    """``env`` for a worker of its own: consumer group, group-model topics, outputs and data
    directory named ``name``, reading ``topic`` and the catalogue ``items``, with this
    checkout's packages first on its path (an editable install of another checkout in the
    same environment would otherwise be the code measured)."""
    return {
        **env,
        "PYTHONPATH": str(CHECKOUT),
        "CRM_BROKER": broker.url,
        "CRM_REDIS_URL": server.url,
        "CRM_APP_ID": f"bench-{name}",
        "CRM_EVENTS_TOPIC": topic,
        "CRM_ALERTS_TOPIC": f"bench.{name}.alerts",
        "CRM_DLQ_TOPIC": f"bench.{name}.dlq",
        "CRM_ITEMS_TOPIC": items,
        "CRM_TOPIC_PARTITIONS": str(partitions),
        "CRM_WEB_PORT": str(free_port()),
        "CRM_DATA_DIR": str(work / f"{name}-data"),
        "CRM_SESSION_TIMEOUT": "10",
        "CRM_REBALANCE_TIMEOUT": "10",
        "CRM_LOG_LEVEL": "warning",
    }


def measure_first_pass(
    args: Any, env: dict[str, str], work: Path, redis_url: str, checkout: Path | None = None
) -> dict[str, Any]:
    """(c)'s first pass only, timed as (c) is, with ``env`` (and the worker of ``checkout``, a
    checkout of an earlier commit, when given); Redis is emptied afterwards so (c) starts as
    this one did."""
    commit = "this commit"
    if checkout is not None:
        source = checkout.resolve()
        commit = commit_of(source)
        # The child runs from ``work``: PYTHONPATH puts the checkout's packages before the
        # installed ones (the same dependencies serve both).
        env = {**env, "PYTHONPATH": str(source)}
    log = work / f"{env['CRM_APP_ID']}.log"
    worker = WorkerProcess(env, log)
    worker.start()
    try:
        wait_until(lambda: handled(worker) > 0, args.timeout, "the worker's first event", log)
        first = read_metrics(worker.port)["crm_scorer_last_rebalance_timestamp_seconds"]
        wait_until(lambda: settled(worker, args.events), args.timeout, "the worker to finish", log)
        seconds = time.time() - first
        rescores = read_metrics(worker.port).get("crm_scorer_rescores_total", 0.0)
    finally:
        worker.stop()
    redis.Redis.from_url(redis_url).flushall()
    rate = args.events / seconds
    label = "no catalogue" if env["CRM_ITEMS_TOPIC"] == "bench.no-items" else "catalogue"
    print(f"(c) at {commit}, {label}: {rate:,.0f} events/s, {rescores:,.0f} re-scores", flush=True)
    return {
        "commit": commit,
        "seconds": seconds,
        "events_per_second": rate,
        "rescores": rescores,
        "rescores_per_second": rescores / seconds,
    }


def commit_of(checkout: Path) -> str:
    """The short hash of ``checkout``'s HEAD."""
    return subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def send_and_settle(
    worker: WorkerProcess,
    broker: LocalBroker,
    topic: str,
    events: list,
    args: Any,
    rate: float | None = None,
) -> dict[str, float]:
    """Send ``events`` to the running worker and wait until it scored them and Redis has
    every score; returns the worker's metrics from before the events."""
    before = read_metrics(worker.port)  # read first: the worker counts as soon as they arrive
    total = int(before["crm_scorer_events_total"]) + len(events)
    produce(broker.bootstrap, topic, events, rate=rate)
    wait_until(
        lambda: settled(worker, total), args.timeout, f"{len(events):,} events", worker.log_path
    )
    return before
