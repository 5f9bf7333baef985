"""``crm-scorer demo``: the whole scorer on a generated stream, with local services if needed."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis
from kafka import KafkaConsumer
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from schemas.errors import CrmScorerError
from schemas.scores import Score
from streams.commands.local_services import LocalBroker, LocalRedis, ManagedProcess, free_port
from streams.commands.producer import EventProducer
from streams.commands.simulator import SimulationConfig, catalogue_items, generate_messages
from streams.kafka_security import kafka_python_options
from streams.settings import ENV_PREFIX, Settings, child_environment, load_settings

__all__ = ["DemoOptions", "WorkerProcess", "read_metrics", "run_demo"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoOptions:
    """What the demo streams."""

    events: int = 20_000
    customers: int = 800
    seed: int = 7
    bad_ratio: float = 0.01
    workers: int = 1
    timeout: float = 600.0


def read_metrics(port: int) -> dict[str, float]:
    """The worker's /metrics as ``{"name{labels}": value}`` plus per-name totals."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


class WorkerProcess(ManagedProcess):
    """``crm-scorer worker`` in a child process; its port is the ``CRM_WEB_PORT`` of ``env``."""

    name = "worker"

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        super().__init__(int(env[f"{ENV_PREFIX}WEB_PORT"]), env=env, log_path=log_path)

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "streams.commands.cli", "worker"]

    def start(self, timeout: float = 60.0) -> None:
        """Start the worker and wait until it serves /metrics."""
        super().start(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the worker flushes pending scores), then SIGKILL after ``timeout``."""
        return super().stop(timeout)

    def metrics(self) -> dict[str, float]:
        """The worker's current metrics."""
        return read_metrics(self.port)

    def ready(self) -> bool:
        """Whether the worker answers ``GET /readyz`` with 200."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=3) as r:
                return bool(r.status == 200)
        except (OSError, ValueError):
            return False


@contextlib.contextmanager
def _services(
    settings: Settings, console: Console, workers: int = 1
) -> Iterator[tuple[Settings, Path]]:
    """The demo's settings: configured services, or local ones started for the demo."""
    configured = settings.model_fields_set
    updates: dict[str, object] = {}
    if "model_sync_seconds" not in configured:
        updates["model_sync_seconds"] = 2.0  # versions within a short demo
    with contextlib.ExitStack() as stack:
        if "broker" not in configured:
            broker = LocalBroker()
            broker.start()
            stack.callback(broker.stop)
            updates["broker"] = broker.url
            # A fresh single-node broker: short group timeouts make the worker join fast.
            for timeout in ("session_timeout", "rebalance_timeout"):
                if timeout not in configured:
                    updates[timeout] = 10.0
            if workers > 1 and "producer_batch_bytes" not in configured:
                # Tansu 0.6 reports a changelog's end offset as its last batch's base offset
                # + 1: a worker taking over partitions would stop recovering before their last
                # records (Faust's ConsistencyError). One record a batch keeps it right.
                updates["producer_batch_bytes"] = 1
            console.print(f"[dim]started Tansu broker on {broker.url}[/dim]")
        if "redis_url" not in configured:
            server = LocalRedis()
            server.start()
            stack.callback(server.stop)
            updates["redis_url"] = SecretStr(server.url)
            console.print(f"[dim]started {server.program} on {server.url}[/dim]")
        if "web_port" not in configured:
            updates["web_port"] = free_port()
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crm-demo-")))
        if "data_dir" not in configured:
            updates["data_dir"] = work_dir / "data"
        else:  # the worker runs in another directory: a relative path must mean the same
            updates["data_dir"] = settings.data_dir.resolve()
        yield settings.model_copy(update=updates), work_dir / "worker.log"


def _handled(workers: list[WorkerProcess]) -> int:
    return sum(int(w.metrics().get("crm_scorer_events_total", 0.0)) for w in workers)


def _stream(
    settings: Settings, workers: list[WorkerProcess], options: DemoOptions, console: Console
) -> tuple[int, float]:
    """Produce the simulated stream and follow the worker until it handled every message."""
    config = SimulationConfig(
        customers=options.customers, seed=options.seed, bad_event_ratio=options.bad_ratio
    )
    columns = (
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    started = time.monotonic()
    sent = 0
    with Progress(*columns, console=console, transient=False) as progress:
        produced_task = progress.add_task("produced", total=options.events)
        handled_task = progress.add_task("scored", total=options.events)
        with EventProducer(settings) as producer:
            for item in catalogue_items(config):  # the shop's catalogue first
                key, value = item["item_id"].encode(), orjson.dumps(item)
                producer.send_to(settings.items_topic, key, value)
            for key, value in generate_messages(config, limit=options.events):
                producer.send_raw(value, key)
                sent += 1
                if sent % 500 == 0:
                    progress.update(produced_task, completed=sent)
            producer.flush()
        progress.update(produced_task, completed=sent, total=sent)
        progress.update(handled_task, total=sent)
        deadline = time.monotonic() + options.timeout
        first_scored: float | None = None
        while True:
            handled = _handled(workers)
            progress.update(handled_task, completed=handled)
            if handled and first_scored is None:
                first_scored = time.monotonic()
            if handled >= sent:
                break
            _all_alive(workers)
            if time.monotonic() > deadline:
                msg = f"the worker handled {handled} of {sent} events in {options.timeout:.0f}s"
                raise CrmScorerError(msg)
            time.sleep(0.25)
    finished = time.monotonic()
    elapsed = finished - (first_scored if first_scored is not None else started)
    # Scores are flushed to Redis every few milliseconds; wait for the last batch, and for
    # the workers' last deltas to reach one version of the group model.
    deadline = time.monotonic() + 10 * settings.model_sync_seconds + 10
    while time.monotonic() < deadline:
        metrics = [w.metrics() for w in workers]
        flushed = all(m.get("crm_scorer_redis_pending_scores", 0.0) == 0 for m in metrics)
        versions = {m.get("crm_scorer_model_version", 0.0) for m in metrics}
        pending = sum(m.get("crm_scorer_model_pending_deltas", 0.0) for m in metrics)
        if flushed and len(versions) == 1 and not pending:
            break
        time.sleep(0.2)
    return sent, elapsed


def _alerts_by_type(settings: Settings) -> tuple[Counter[str], dict[str, str]]:
    consumer = KafkaConsumer(
        settings.alerts_topic,
        bootstrap_servers=settings.broker_hosts,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
        enable_auto_commit=False,
        **kafka_python_options(settings),
    )
    counts: Counter[str] = Counter()
    example: dict[str, str] = {}
    try:
        for message in consumer:
            alert = orjson.loads(message.value)
            counts[alert["type"]] += 1
            example.setdefault(alert["type"], alert["customer_id"])
    finally:
        consumer.close()
    return counts, example


def _summary(
    settings: Settings, workers: list[WorkerProcess], sent: int, elapsed: float, console: Console
) -> None:
    each = [w.metrics() for w in workers]
    metrics = {name: sum(m.get(name, 0.0) for m in each) for name in set().union(*each)}
    metrics["crm_scorer_churn_roc_auc"] = each[0].get("crm_scorer_churn_roc_auc", math.nan)
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    customers = sum(1 for _ in client.scan_iter(match=f"{settings.redis_prefix}*", count=1000))
    alerts, examples = _alerts_by_type(settings)
    table = Table(title="crm-scorer demo", show_header=False)
    table.add_row("events sent", f"{sent:,}")
    table.add_row("events/s (worker, first to last score)", f"{sent / max(elapsed, 1e-9):,.0f}")
    table.add_row("scored", f"{_sum(metrics, 'crm_scorer_events_total', 'outcome=scored'):,.0f}")
    table.add_row("dead-lettered", f"{metrics.get('crm_scorer_dead_letters_total', 0.0):,.0f}")
    table.add_row("customers scored in Redis", f"{customers:,}")
    catalogue = each[0].get("crm_scorer_catalogue_items{available=true}", 0.0)
    table.add_row("catalogue items (each worker reads all)", f"{catalogue:,.0f}")
    table.add_row(
        "churn labels learned", f"{metrics.get('crm_scorer_churn_labels_total', 0.0):,.0f}"
    )
    labelled = metrics.get("crm_scorer_churn_labels_total", 0.0)
    auc = metrics.get("crm_scorer_churn_roc_auc", math.nan)
    shown = (
        "n/a (no cohort has closed: needs a horizon of event time)"
        if math.isnan(auc)
        else f"{auc:.3f}"
    )
    table.add_row("churn ROC AUC (closed cohorts)", shown if labelled else "n/a (no labels yet)")
    for alert_type in ("churn_risk", "segment_change", "negative_feedback", "unusual_customer"):
        table.add_row(f"alerts: {alert_type}", f"{alerts.get(alert_type, 0):,}")
    for n, (worker, worker_metrics) in enumerate(zip(workers, each, strict=True), start=1):
        partitions = sum(1 for k in worker_metrics if k.startswith("crm_scorer_consumer_lag{"))
        role = ", merges the group model" if worker_metrics.get("crm_scorer_model_merger") else ""
        table.add_row(
            f"worker {n} (:{worker.port})",
            f"{worker_metrics.get('crm_scorer_events_total', 0.0):,.0f} events, {partitions} "
            f"partitions, model version {worker_metrics.get('crm_scorer_model_version', 0):.0f}"
            f"{role}",
        )
    console.print(table)
    example = examples.get("negative_feedback") or examples.get("churn_risk")
    if example is None:
        first = next(client.scan_iter(match=f"{settings.redis_prefix}*", count=100), None)
        example = first.decode().removeprefix(settings.redis_prefix) if first else None
    if example is not None:
        fields = client.hgetall(settings.redis_prefix + example)
        score = Score.from_redis(fields)
        console.print(f"crm-scorer lookup {example}")
        console.print_json(orjson.dumps(score.model_dump(mode="json")).decode())
    client.close()


def _sum(metrics: dict[str, float], name: str, label: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(name + "{") and label in k)


def run_demo(options: DemoOptions, console: Console | None = None) -> None:
    """Start what is missing, run the workers, stream ``options.events`` events, print a
    summary."""
    console = console or Console()
    with _services(load_settings(), console, options.workers) as (settings, log_path):
        workers: list[WorkerProcess] = []
        try:
            for n in range(options.workers):
                own = settings
                if n:  # one consumer group: its own port and data directory each
                    data_dir = settings.data_dir.with_name(f"{settings.data_dir.name}-{n + 1}")
                    own = settings.model_copy(
                        update={"web_port": free_port(), "data_dir": data_dir}
                    )
                path = log_path.with_name(f"worker-{n + 1}.log") if n else log_path
                worker = WorkerProcess(child_environment(own), path)
                console.print(f"[dim]starting worker {n + 1} (log: {worker.log_path})[/dim]")
                worker.start()
                workers.append(worker)
            _wait_for_the_group(workers, options.timeout)
            sent, elapsed = _stream(settings, workers, options, console)
            _summary(settings, workers, sent, elapsed, console)
        finally:
            for worker in workers:
                worker.stop()


def _all_alive(workers: list[WorkerProcess]) -> None:
    """Raise with the log of a worker that stopped, if one did."""
    for worker in workers:
        if not worker.alive():
            msg = f"a worker stopped; its log:\n{worker.log_tail()}"
            raise CrmScorerError(msg)


def _wait_for_the_group(workers: list[WorkerProcess], timeout: float) -> None:
    """Until every worker is ready: the partitions are spread before the stream starts."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        while not worker.ready():
            _all_alive(workers)
            if time.monotonic() > deadline:
                msg = f"the workers were not ready within {timeout:.0f}s"
                raise CrmScorerError(msg)
            time.sleep(0.2)
