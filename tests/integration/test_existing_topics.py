"""A worker joining a cluster whose events topic an operator already created."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from tests.support import handled_events, start_worker, wait_until, worker_env

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration


def test_worker_follows_the_partition_count_of_an_existing_topic(
    broker: Any, redis_server: Any, tmp_path: Path
) -> None:
    env = worker_env(broker, redis_server.url, "existing", tmp_path)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(env["CRM_EVENTS_TOPIC"], 3, 1)])
    admin.close()
    assert env["CRM_TOPIC_PARTITIONS"] != "3"
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    customers = [f"op-{n}" for n in range(12)]
    for n, customer in enumerate(customers):
        event = {
            "event_id": f"e{n}",
            "customer_id": customer,
            "type": "view",
            "item_id": "sku-1",
            "timestamp": 1_735_689_600 + n,
        }
        producer.send(env["CRM_EVENTS_TOPIC"], key=customer.encode(), value=orjson.dumps(event))
    producer.flush()
    producer.close()
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        wait_until(lambda: handled_events(worker) >= len(customers), 120, "12 events", worker)
    finally:
        worker.stop()
    client = redis.Redis.from_url(redis_server.url)
    assert all(client.exists(env["CRM_REDIS_PREFIX"] + c) for c in customers)
    assert "not CRM_TOPIC_PARTITIONS=4" in worker.log_path.read_text()
