"""What the worker writes to Kafka per batch: one changelog record per customer, and every
alert and dead letter on its topic before the offsets of its events are committed."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from schemas.scores import Score
from tests.support import (
    handled_events,
    read_topic,
    start_worker,
    wait_for_scores_in_redis,
    wait_until,
    worker_env,
)

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

DAY = 86_400
T0 = 1_735_689_600  # 2025-01-01T00:00:00Z
BUSY_EVENTS = 200


def _purchase(customer: str, n: int, when: float) -> bytes:
    event = {
        "event_id": f"{customer}-{n}",
        "customer_id": customer,
        "type": "purchase",
        "timestamp": when,
        "item_id": f"sku-{n % 5}",
        "amount": 10.0,
        "quantity": 1,
    }
    return orjson.dumps(event)


def test_a_batch_writes_one_changelog_record_per_customer_and_a_restart_recovers_it(
    broker: Any, redis_server: Any, tmp_path: Path
) -> None:
    """200 purchases of one customer, waiting before the worker starts, arrive in one fetch
    (two at most): the customer's state goes to the changelog once per batch, not once per
    event, and a worker started afterwards rebuilds it from those records alone."""
    env = worker_env(broker, redis_server.url, "batch-io", tmp_path)
    env["CRM_TOPIC_PARTITIONS"] = "1"
    env["CRM_PRODUCER_BATCH_BYTES"] = "1"  # Tansu 0.6 and table recovery: see test_restart
    topic = env["CRM_EVENTS_TOPIC"]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, batch_size=256 * 1024)
    for n in range(BUSY_EVENTS):
        producer.send(topic, key=b"busy", value=_purchase("busy", n, T0 + n * 3600))
    producer.flush()

    first = start_worker(env, tmp_path / "first.log")
    try:
        wait_until(lambda: handled_events(first) >= BUSY_EVENTS, 120, "the events", first)
    finally:
        first.stop()
    changelog = read_topic(broker.bootstrap, f"{env['CRM_APP_ID']}-customers-changelog")
    records = Counter(orjson.loads(record.key) for record in changelog)
    logger.info("Changelog records per customer: %s", records)
    assert 1 <= records["busy"] <= 2

    second = start_worker(env, tmp_path / "second.log")
    try:
        producer.send(topic, key=b"busy", value=_purchase("busy", 999, T0 + 30 * DAY))
        producer.flush()
        wait_until(lambda: handled_events(second) >= 1, 120, "the event after the restart", second)
        wait_for_scores_in_redis(second)
    finally:
        second.stop()
        producer.close()
    score = Score.from_redis(
        redis.Redis.from_url(redis_server.url).hgetall(env["CRM_REDIS_PREFIX"] + "busy")
    )
    assert score.orders == BUSY_EVENTS + 1  # every purchase before the restart, one after
    assert score.monetary == pytest.approx(10.0 * (BUSY_EVENTS + 1))


def test_alerts_and_dead_letters_are_in_kafka_before_their_offsets_are_committed(
    broker: Any, redis_server: Any, tmp_path: Path
) -> None:
    """The moment the group's committed offset passes a cancellation and a message that is
    not JSON, the worker is killed (kill -9): the cancellation's alert and the dead letter
    are on their topics all the same."""
    env = worker_env(broker, redis_server.url, "commit-order", tmp_path)
    env["CRM_TOPIC_PARTITIONS"] = "1"
    topic = env["CRM_EVENTS_TOPIC"]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    worker = start_worker(env, tmp_path / "worker.log")
    # Reads the group's committed offsets; never joins the group.
    group = KafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=env["CRM_APP_ID"], enable_auto_commit=False
    )
    try:
        for n in range(3):
            producer.send(topic, key=b"leaver", value=_purchase("leaver", n, T0 + n * 10 * DAY))
        cancel = {
            "event_id": "leaver-cancel",
            "customer_id": "leaver",
            "type": "subscription_cancel",
            "timestamp": T0 + 31 * DAY,
        }
        producer.send(topic, key=b"leaver", value=orjson.dumps(cancel))
        last = producer.send(topic, key=b"bad", value=b"this is not json").get(timeout=30)
        producer.flush()
        partition = TopicPartition(topic, 0)

        def committed_past_the_bad_message() -> bool:
            committed = group.committed(partition)
            return committed is not None and committed > last.offset

        wait_until(committed_past_the_bad_message, 120, "the committed offset", worker)
        worker.kill()
    finally:
        worker.stop()
        group.close()
        producer.close()
    alerts = [orjson.loads(r.value) for r in read_topic(broker.bootstrap, env["CRM_ALERTS_TOPIC"])]
    letters = [orjson.loads(r.value) for r in read_topic(broker.bootstrap, env["CRM_DLQ_TOPIC"])]
    cancelled = [a for a in alerts if a["customer_id"] == "leaver" and a["type"] == "churn_risk"]
    assert [a["event_id"] for a in cancelled] == ["leaver-cancel"]
    assert [letter["reason"] for letter in letters] == ["not_json"]
