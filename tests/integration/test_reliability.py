"""Nothing lost, nothing counted twice: crashes, redelivery, a Redis outage, poison messages.

Each test streams events whose effect an oracle recomputes from the input, then compares
every customer's score hash in Redis (orders, net monetary, latest event) with it, exactly.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaProducer

from online_models import __version__
from schemas.dead_letters import DeadLetter
from streams.commands.demo import WorkerProcess, read_metrics
from streams.commands.local_services import LocalRedis, free_port
from tests.support import handled_events, read_topic, start_worker, wait_until, worker_env

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

T0 = 1_735_689_600  # 2025-01-01T00:00:00Z
HOUR = 3_600


@dataclass
class Expected:
    """What every customer's hash must say once the worker has seen the events."""

    orders: Counter[str] = field(default_factory=Counter)
    spent: dict[str, float] = field(default_factory=dict)
    refunded: dict[str, float] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)

    def add(self, event: dict[str, Any]) -> None:
        customer, kind = event["customer_id"], event["type"]
        self.last_seen[customer] = max(self.last_seen.get(customer, 0.0), event["timestamp"])
        if kind == "purchase":
            self.orders[customer] += 1  # every purchase here is a basket of its own
            self.spent[customer] = self.spent.get(customer, 0.0) + event["amount"]
        elif kind == "return":
            self.refunded[customer] = self.refunded.get(customer, 0.0) + event["amount"]

    def fields(self, customer: str) -> tuple[str, str, str]:
        monetary = max(self.spent.get(customer, 0.0) - self.refunded.get(customer, 0.0), 0.0)
        when = datetime.fromtimestamp(self.last_seen[customer], UTC).isoformat()
        return str(self.orders[customer]), f"{monetary:.2f}", when


def stream_of(customers: int, events: int, seed: int) -> list[dict[str, Any]]:
    """Purchases, views and returns in event-time order; each customer's times are distinct."""
    rng = random.Random(seed)
    out = []
    for n in range(events):
        customer = f"c{rng.randrange(customers):04d}"
        kind = rng.choices(["purchase", "view", "return"], weights=[6, 3, 1])[0]
        event: dict[str, Any] = {
            "event_id": f"e{n}",
            "customer_id": customer,
            "type": kind,
            "timestamp": T0 + n * 60 + rng.random(),
        }
        if kind == "view":
            event["item_id"] = f"sku-{rng.randrange(200)}"
        else:
            event.update(
                item_id=f"sku-{rng.randrange(200)}",
                amount=round(rng.uniform(1, 200), 2),
                quantity=rng.randrange(1, 4),
            )
        out.append(event)
    return out


def oracle(events: list[dict[str, Any]]) -> Expected:
    expected = Expected()
    for event in events:
        expected.add(event)
    return expected


def send(producer: KafkaProducer, topic: str, events: list[dict[str, Any]]) -> None:
    for event in events:
        producer.send(topic, key=event["customer_id"].encode(), value=orjson.dumps(event))
    producer.flush()


def mismatches(client: redis.Redis, prefix: str, expected: Expected) -> list[str]:
    """Customers whose hash is missing or disagrees with the oracle (empty when all agree)."""
    customers = sorted(expected.last_seen)
    with client.pipeline(transaction=False) as pipe:
        for customer in customers:
            pipe.hmget(prefix + customer, "orders", "monetary", "event_time")
        replies = pipe.execute()
    wrong = []
    for customer, reply in zip(customers, replies, strict=True):
        got = tuple(None if v is None else v.decode() for v in reply)
        if got != expected.fields(customer):
            wrong.append(f"{customer}: {got} != {expected.fields(customer)}")
    return wrong


def settle(client: redis.Redis, prefix: str, expected: Expected, worker: WorkerProcess) -> None:
    """Wait until Redis agrees with the oracle; fail listing the first customers that do not."""
    try:
        wait_until(lambda: not mismatches(client, prefix, expected), 180, "the oracle", worker)
    except pytest.fail.Exception:
        wrong = mismatches(client, prefix, expected)
        pytest.fail(f"{len(wrong)} customers disagree with the oracle: {wrong[:5]}")


def metric(worker: WorkerProcess, name: str) -> float:
    return read_metrics(worker.port).get(name, 0.0)


def duplicates_seen(worker: WorkerProcess) -> float:
    """Events the worker recognised as applied before, whatever their type."""
    return sum(
        value
        for name, value in read_metrics(worker.port).items()
        if name.startswith("crm_scorer_events_total{") and "outcome=duplicate" in name
    )


@pytest.mark.slow
def test_three_kill_9_crashes_lose_nothing_and_count_nothing_twice(
    broker: Any, redis_server: Any, tmp_path: Path
) -> None:
    env = worker_env(broker, redis_server.url, "crash", tmp_path)
    env.update(
        CRM_PRODUCER_BATCH_BYTES="1",  # Tansu 0.6 end offsets: see test_restart.py
        CRM_MODEL_SYNC_SECONDS="1",  # the group model syncs between the crashes too
    )
    events = stream_of(customers=1_000, events=20_000, seed=11)
    expected = oracle(events)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
    rng = random.Random(3)

    def produce() -> None:  # ~40 s of traffic, through the crashes
        for start in range(0, len(events), 500):
            send(producer, env["CRM_EVENTS_TOPIC"], events[start : start + 500])
            time.sleep(1.0)

    sender = threading.Thread(target=produce, daemon=True)
    sender.start()
    crashes = []
    worker = start_worker(env, tmp_path / "worker-0.log")
    try:
        for crash in range(3):
            wait_until(lambda w=worker: handled_events(w) > 0, 120, "events after a start", worker)
            time.sleep(rng.uniform(1.0, 5.0))
            crashes.append(handled_events(worker))
            worker.kill()
            worker = start_worker(env, tmp_path / f"worker-{crash + 1}.log")
        sender.join(timeout=120)
        settle(redis.Redis.from_url(redis_server.url), env["CRM_REDIS_PREFIX"], expected, worker)
        duplicates = duplicates_seen(worker)
        logger.info(
            "Killed after %s events; the last worker recognised %d redelivered events",
            crashes,
            duplicates,
        )
    finally:
        worker.stop()
        producer.close()
    assert len(crashes) == 3 and all(crashes)
    assert duplicates > 0  # the crashes did redeliver applied events, and they were recognised


@pytest.mark.slow
def test_a_worker_joining_and_leaving_mid_stream_loses_nothing_and_counts_nothing_twice(
    broker: Any, redis_server: Any, tmp_path: Path
) -> None:
    """Two rebalances under load: partitions move to a second worker and back while events
    stream in; batches fetched before a rebalance must not be applied by the old owner."""
    env = worker_env(broker, redis_server.url, "rebalance", tmp_path / "first")
    env["CRM_PRODUCER_BATCH_BYTES"] = "1"  # Tansu 0.6 end offsets: see test_restart.py
    second_env = {**env, "CRM_WEB_PORT": str(free_port()), "CRM_DATA_DIR": str(tmp_path / "2")}
    events = stream_of(customers=800, events=16_000, seed=21)
    expected = oracle(events)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)

    def produce() -> None:  # ~30 s of traffic, through both rebalances
        for start in range(0, len(events), 500):
            send(producer, env["CRM_EVENTS_TOPIC"], events[start : start + 500])
            time.sleep(1.0)

    sender = threading.Thread(target=produce, daemon=True)
    first = start_worker(env, tmp_path / "first.log")
    try:
        sender.start()
        wait_until(lambda: handled_events(first) > 0, 120, "the first worker's events", first)
        second = start_worker(second_env, tmp_path / "second.log")
        try:
            wait_until(lambda: handled_events(second) > 0, 120, "a share for the second", second)
        finally:
            assert second.stop() == 0  # leaves the group: its partitions go back
        sender.join(timeout=120)
        settle(redis.Redis.from_url(redis_server.url), env["CRM_REDIS_PREFIX"], expected, first)
    finally:
        first.stop()
        producer.close()


def test_sigterm_under_load_hands_the_last_delta_to_the_group_and_loses_nothing(
    broker: Any, redis_server: Any, tmp_path: Path
) -> None:
    env = worker_env(broker, redis_server.url, "sigterm", tmp_path)
    env["CRM_PRODUCER_BATCH_BYTES"] = "1"  # Tansu 0.6 end offsets: see test_restart.py
    events = stream_of(customers=400, events=6_000, seed=15)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    first = start_worker(env, tmp_path / "first.log")
    try:
        send(producer, env["CRM_EVENTS_TOPIC"], events)
        wait_until(lambda: handled_events(first) >= 1_000, 120, "a busy worker", first)
    finally:
        status = first.stop(timeout=30)  # mid-stream
    log = first.log_path.read_text()
    assert status is not None, f"the worker ignored SIGTERM:\n{first.log_tail(40)}"
    assert log.index("Signal received: 15") < log.index("Handed the models' last delta")
    assert "scores Redis did not take" not in log

    second = start_worker(env, tmp_path / "second.log")
    try:
        # It merges the first worker's last deltas into a new version of the group model.
        wait_until(
            lambda: "Scoring with version" in second.log_path.read_text(), 60, "a group version"
        )
        settle(
            redis.Redis.from_url(redis_server.url), env["CRM_REDIS_PREFIX"], oracle(events), second
        )
    finally:
        second.stop()
        producer.close()


def test_events_delivered_again_change_nothing(
    broker: Any, redis_server: Any, tmp_path: Path
) -> None:
    env = worker_env(broker, redis_server.url, "redelivery", tmp_path)
    env["CRM_MODEL_SYNC_SECONDS"] = "1"
    events = stream_of(customers=50, events=600, seed=12)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    client = redis.Redis.from_url(redis_server.url)
    prefix = env["CRM_REDIS_PREFIX"]
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        send(producer, env["CRM_EVENTS_TOPIC"], events)
        settle(client, prefix, oracle(events), worker)
        # The group model holds all it learned: the repeats must not make a newer version.
        wait_until(
            lambda: (
                metric(worker, "crm_scorer_model_version") > 0
                and metric(worker, "crm_scorer_model_pending_deltas") == 0
            ),
            30,
            "the group model to hold every event",
            worker,
        )
        version = metric(worker, "crm_scorer_model_version")
        before = settled_counts(worker)  # alerts count when Kafka acknowledged them

        send(producer, env["CRM_EVENTS_TOPIC"], events[-300:])  # the same ids again
        wait_until(lambda: handled_events(worker) >= 900, 120, "the repeated events", worker)
        wait_until(lambda: metric(worker, "crm_scorer_redis_pending_scores") == 0, 30, "flush")
        after = settled_counts(worker)
        duplicates = duplicates_seen(worker)
        # Features: every hash still agrees with the oracle of the events counted once.
        assert not mismatches(client, prefix, oracle(events))
        versions = {client.hget(prefix + c, "model_version") for c in oracle(events).last_seen}
        assert metric(worker, "crm_scorer_model_version") == version
    finally:
        worker.stop()
        producer.close()
    assert duplicates == 300
    # Models: nothing learned from the repeats; no alert or label twice.
    assert after == before
    assert before["crm_scorer_model_events_learned"] == 600
    assert versions == {f"{__version__}+v{int(version)}".encode()}


def test_a_producer_slower_than_the_scorer_holds_consuming_back_and_loses_nothing(
    broker: Any, redis_server: Any, tmp_path: Path
) -> None:
    """Every event writes the customer table, whose changelog records queue for the producer:
    when the producer falls behind (one record per request here), consuming waits for it
    instead of queueing a whole burst in memory."""
    limit = 20
    env = worker_env(broker, redis_server.url, "slow-producer", tmp_path)
    env.update(CRM_PRODUCER_BATCH_BYTES="1", CRM_PRODUCER_MAX_PENDING=str(limit))
    events = stream_of(customers=300, events=3_000, seed=13)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    seen: list[float] = []
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        send(producer, env["CRM_EVENTS_TOPIC"], events)
        while handled_events(worker) < len(events):
            seen.append(metric(worker, "crm_scorer_producer_pending"))
            time.sleep(0.05)
        settle(
            redis.Redis.from_url(redis_server.url), env["CRM_REDIS_PREFIX"], oracle(events), worker
        )
        wait_until(lambda: metric(worker, "crm_scorer_producer_pending") == 0, 60, "the producer")
    finally:
        worker.stop()
        producer.close()
    logger.info("Records waiting for the producer, sampled: max %d", max(seen))
    # One event writes a few records (its customer, re-scored customers, an alert).
    assert max(seen) <= limit + 10


def settled_counts(worker: WorkerProcess, quiet: float = 1.5) -> dict[str, float]:
    """:func:`model_counts` once they stayed the same for ``quiet`` seconds."""
    counts = model_counts(worker)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(quiet)
        latest = model_counts(worker)
        if latest == counts:
            return counts
        counts = latest
    pytest.fail(f"the worker's counts kept changing: {counts}")


def model_counts(worker: WorkerProcess) -> dict[str, float]:
    """What the models learned and what the worker published, from its metrics."""
    return {
        name: value
        for name, value in read_metrics(worker.port).items()
        if name.startswith(
            (
                "crm_scorer_model_events_learned",
                "crm_scorer_churn_labels_total",
                "crm_scorer_alerts_total",
            )
        )
    }


def test_a_redis_outage_with_an_empty_restart_loses_no_score(broker: Any, tmp_path: Path) -> None:
    server = LocalRedis()
    server.start()
    env = worker_env(broker, server.url, "outage", tmp_path)
    env["CRM_REDIS_MAX_PENDING"] = "200"  # the outage outlasts it: consuming must pause
    events = stream_of(customers=300, events=3_000, seed=13)
    first, second = events[:2_000], events[2_000:]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    client = redis.Redis.from_url(server.url)
    prefix = env["CRM_REDIS_PREFIX"]
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        send(producer, env["CRM_EVENTS_TOPIC"], first)
        settle(client, prefix, oracle(first), worker)

        server.stop()
        send(producer, env["CRM_EVENTS_TOPIC"], second[:500])
        time.sleep(5.0)
        send(producer, env["CRM_EVENTS_TOPIC"], second[500:])
        wait_until(lambda: metric(worker, "crm_scorer_redis_paused") == 1, 10, "a pause", worker)
        time.sleep(3.0)
        server.start()  # same port, empty: it kept nothing on disk

        settle(client, prefix, oracle(events), worker)
        metrics = read_metrics(worker.port)
    finally:
        worker.stop()
        producer.close()
        server.stop()
    assert metrics["crm_scorer_redis_errors_total"] >= 1
    assert metrics["crm_scorer_redis_resyncs_total"] == 1
    assert metrics["crm_scorer_redis_paused"] == 0
    assert "Redis write of" in worker.log_path.read_text()


def poison(kind: str, n: int) -> tuple[bytes | None, bytes]:
    """One bad message of ``kind``: its key and value."""
    good = {
        "event_id": f"bad-{n}",
        "customer_id": "c0001",
        "type": "purchase",
        "timestamp": T0,
        "item_id": "sku-1",
        "amount": 10.0,
        "quantity": 1,
    }
    key = b"c0001"
    if kind == "oversized":
        return key, orjson.dumps(good | {"note": "x" * 1_100_000})
    if kind == "invalid_utf8":
        return key, b'{"event_id": "\xff\xfe"}'
    if kind == "not_json":
        return key, b'{"event_id": "e", "amount": NaN'
    if kind == "not_an_object":
        return key, b'[{"event_id": "e"}]'
    if kind == "missing_field":
        return key, orjson.dumps({k: v for k, v in good.items() if k != "amount"})
    if kind == "wrong_type":
        return key, orjson.dumps(good | {"quantity": "three"})
    if kind == "invalid_value":
        return key, orjson.dumps(good | {"quantity": -2})
    if kind == "bad_timestamp":
        return key, orjson.dumps(good | {"timestamp": "2300-01-01T00:00:00+00:00"})
    if kind == "key_mismatch":
        return b"someone-else", orjson.dumps(good)
    raise AssertionError(kind)


POISON_KINDS = {
    "oversized": 4,
    "invalid_utf8": 50,
    "not_json": 50,
    "not_an_object": 50,
    "missing_field": 50,
    "wrong_type": 50,
    "invalid_value": 50,
    "bad_timestamp": 50,
    "key_mismatch": 46,
}


def test_poison_messages_go_to_the_dead_letter_topic_and_every_good_event_counts(
    broker: Any, redis_server: Any, tmp_path: Path
) -> None:
    assert sum(POISON_KINDS.values()) == 400
    env = worker_env(broker, redis_server.url, "poison", tmp_path)
    events = stream_of(customers=500, events=10_000, seed=14)
    bad = [kind for kind, count in POISON_KINDS.items() for _ in range(count)]
    random.Random(4).shuffle(bad)
    slots = sorted(random.Random(5).sample(range(len(events)), len(bad)))
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=4_000_000)
    topic = env["CRM_EVENTS_TOPIC"]
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        poisoned = dict(zip(slots, bad, strict=True))
        for n, event in enumerate(events):
            if n in poisoned:
                key, value = poison(poisoned[n], n)
                producer.send(topic, key=key, value=value)
            producer.send(topic, key=event["customer_id"].encode(), value=orjson.dumps(event))
        producer.flush()
        settle(
            redis.Redis.from_url(redis_server.url), env["CRM_REDIS_PREFIX"], oracle(events), worker
        )
        wait_until(lambda: handled_events(worker) >= 10_400, 60, "every message", worker)
        metrics = read_metrics(worker.port)
        assert worker.alive()
    finally:
        worker.stop()
        producer.close()
    letters = [
        DeadLetter.model_validate_json(m.value)
        for m in read_topic(broker.bootstrap, env["CRM_DLQ_TOPIC"])
    ]
    assert Counter(letter.reason for letter in letters) == Counter(POISON_KINDS)
    for kind, count in POISON_KINDS.items():
        assert metrics[f"crm_scorer_dead_letters_total{{reason={kind}}}"] == count
    assert metrics["crm_scorer_events_total"] == 10_400
