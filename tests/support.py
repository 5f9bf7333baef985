"""Helpers of the integration and CLI tests: the CLI, worker processes, waiting, topics."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from streams.commands.demo import WorkerProcess, read_metrics
from streams.commands.local_services import LocalBroker, free_port

logger = logging.getLogger(__name__)


CLI = str(Path(sys.executable).parent / "crm-scorer")


def crm(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``crm-scorer ARGS`` and capture what it prints."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    return subprocess.run(
        [CLI, *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=None if stdin is None else stdin.decode(),
    )


def worker_env(broker: LocalBroker, redis_url: str, name: str, data_dir: Path) -> dict[str, str]:
    """A worker environment whose app id, topics and key prefix belong to ``name`` alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    env.update(
        CRM_BROKER=broker.url,
        CRM_REDIS_URL=redis_url,
        CRM_APP_ID=f"crm-test-{name}",
        CRM_EVENTS_TOPIC=f"{name}.events",
        CRM_ALERTS_TOPIC=f"{name}.alerts",
        CRM_DLQ_TOPIC=f"{name}.events.dlq",
        CRM_AUDIT_TOPIC=f"{name}.audit",
        CRM_MODEL_UPDATES_TOPIC=f"{name}.model-updates",
        CRM_MODELS_TOPIC=f"{name}.models",
        CRM_ITEMS_TOPIC=f"{name}.items",
        CRM_REDIS_PREFIX=f"{name}:score:",
        CRM_WEB_PORT=str(free_port()),
        CRM_DATA_DIR=str(data_dir),
        CRM_TOPIC_PARTITIONS="4",
        CRM_SESSION_TIMEOUT="10",
        CRM_REBALANCE_TIMEOUT="10",
        CRM_LOG_LEVEL="info",
    )
    return env


def start_worker(env: dict[str, str], log_path: Path) -> WorkerProcess:
    """``crm-scorer worker`` as a user runs it, serving /metrics."""
    worker = WorkerProcess(env, log_path)
    worker.start()
    return worker


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    worker: WorkerProcess | None = None,
    state: Callable[[], str] | None = None,
) -> None:
    """Poll ``condition``; after ``timeout`` fail naming ``what`` (and ``state()``), with the
    worker log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if worker is not None and not worker.alive():
            pytest.fail(f"worker died while waiting for {what}:\n{worker.log_tail(60)}")
        time.sleep(0.2)
    tail = f"\nworker log:\n{worker.log_tail(60)}" if worker is not None else ""
    seen = f" ({state()})" if state is not None else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{seen}{tail}")


def wait_for_scores_in_redis(worker: WorkerProcess, timeout: float = 30) -> None:
    """Wait until the worker has no score left to write to Redis."""
    wait_until(
        lambda: read_metrics(worker.port)["crm_scorer_redis_pending_scores"] == 0,
        timeout,
        "scores in Redis",
        worker,
    )


def handled_events(worker: WorkerProcess) -> int:
    """Events the worker scored, dead-lettered or skipped so far."""
    return int(read_metrics(worker.port).get("crm_scorer_events_total", 0.0))


def send_events(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    """Produce ``events`` as JSON, keyed by customer id, as a CRM producer does."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for event in events:
            producer.send(topic, key=event["customer_id"].encode(), value=orjson.dumps(event))
        producer.flush()
    finally:
        producer.close()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path) -> Path:
    """A test CA (``CN=crm-test-ca``) and a server certificate for 127.0.0.1 signed by it,
    in ``directory`` as ca.crt, server.crt and server.key; returns the CA's path."""
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", "1", "-subj", "/CN=crm-test-ca", cwd=directory)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=directory)  # fmt: skip
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "1",
             "-extfile", "san.ext", cwd=directory)  # fmt: skip
    return directory / "ca.crt"


def read_topic(bootstrap: str, topic: str, idle_ms: int = 3000) -> list:
    """Every message of ``topic`` from the beginning, until ``idle_ms`` pass without one."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=idle_ms,
    )
    try:
        return list(consumer)
    finally:
        consumer.close()
