"""A restarted worker keeps customers' state and still labels the silent ones."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaProducer

from schemas.scores import Score
from streams.commands.demo import read_metrics
from tests.support import (
    handled_events,
    start_worker,
    wait_for_scores_in_redis,
    wait_until,
    worker_env,
)

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

DAY = 86_400
T0 = 1_735_689_600  # 2025-01-01T00:00:00Z


def _send(
    producer: KafkaProducer, topic: str, customer: str, n: int, when: float, kind: str = "purchase"
) -> None:
    event: dict[str, Any] = {
        "event_id": f"{customer}-{n}",
        "customer_id": customer,
        "type": kind,
        "timestamp": when,
    }
    if kind == "purchase":
        event.update(item_id=f"sku-{n}", amount=10.0, quantity=1)
    producer.send(topic, key=customer.encode(), value=orjson.dumps(event))


def test_state_survives_a_restart_and_silent_customers_are_still_labelled(
    broker: Any, redis_server: Any, tmp_path: Path
) -> None:
    env = worker_env(broker, redis_server.url, "restart", tmp_path)
    env["CRM_TOPIC_PARTITIONS"] = "1"  # every customer shares the one watermark
    # Tansu 0.6 reports a partition's end offset as the last batch's base offset + 1, so
    # table recovery would stop before the last records of a multi-record changelog batch.
    # One record per batch keeps its end offsets right; real Kafka needs no such setting.
    env["CRM_PRODUCER_BATCH_BYTES"] = "1"
    topic = env["CRM_EVENTS_TOPIC"]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    client = redis.Redis.from_url(redis_server.url)

    first = start_worker(env, tmp_path / "first.log")
    try:
        _send(producer, topic, "quiet", 1, T0)
        _send(producer, topic, "busy", 1, T0)
        _send(producer, topic, "busy", 2, T0 + 2 * DAY)
        # Cancelled: nothing pending and never re-scored, which the rebuild must step over.
        _send(producer, topic, "leaver", 1, T0)
        _send(producer, topic, "leaver", 2, T0 + DAY, kind="subscription_cancel")
        producer.flush()
        wait_until(lambda: handled_events(first) >= 5, 120, "5 events", first)
    finally:
        first.stop()  # SIGTERM: scores flushed, offsets committed

    second = start_worker(env, tmp_path / "second.log")
    try:
        _send(producer, topic, "busy", 3, T0 + 100 * DAY)  # the watermark passes quiet's horizon
        producer.flush()

        def quiet_labelled() -> bool:
            metrics = read_metrics(second.port)
            return metrics.get("crm_scorer_churn_labels_total{label=churned}", 0.0) >= 1

        wait_until(quiet_labelled, 120, "quiet's churn label after the restart", second)
        wait_for_scores_in_redis(second)
    finally:
        second.stop()
    producer.close()

    busy = Score.from_redis(client.hgetall(env["CRM_REDIS_PREFIX"] + "busy"))
    assert busy.orders == 3  # two baskets from before the restart, one after
    assert busy.monetary == pytest.approx(30.0)
    quiet = Score.from_redis(client.hgetall(env["CRM_REDIS_PREFIX"] + "quiet"))
    assert quiet.event_time.timestamp() == T0  # its last event, though re-scored later
    assert quiet.as_of is not None
    assert quiet.as_of.timestamp() == T0 + 100 * DAY  # as of the event time that labelled it
    # quiet and busy were both silent within the horizon when the first worker stopped.
    log = second.log_path.read_text()
    assert "Scheduled 2 customers' re-scores" in log
    assert "Rebuilding re-score deadlines stopped" not in log
