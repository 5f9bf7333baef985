"""The consumer lag a worker reports, measured against a real broker.

A partition the worker got but has not handled an event of counts from the group's committed
offset, or from the partition's first offset when the group never committed: a worker that
got its partitions and is stuck before its first event still shows how far behind it is.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata

from streams.lag import LagProbe
from streams.settings import Settings

pytestmark = pytest.mark.integration

TOPIC, GROUP = "lag-probe.events", "crm-test-lag-probe"


def _settings(broker: Any) -> Settings:
    return Settings(broker=broker.url, events_topic=TOPIC, app_id=GROUP)


@pytest.fixture(scope="module")
def topic(broker: Any) -> None:
    """Partition 0 holds 10 events, of which the group committed 4; the group never committed
    partition 1 (3 events); partition 2 is empty."""
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, batch_size=1)
    for partition, count in ((0, 10), (1, 3)):
        for _ in range(count):
            producer.send(TOPIC, key=b"c", value=b"{}", partition=partition)
            producer.flush()  # one batch per event: Tansu reports a batch's end by its base
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=GROUP,
                             enable_auto_commit=False)  # fmt: skip
    consumer.assign([TopicPartition(TOPIC, 0)])
    consumer.commit({TopicPartition(TOPIC, 0): OffsetAndMetadata(4, "", -1)})
    consumer.close()


def _measure(broker: Any, partitions: set[int], handled: dict[int, int]) -> dict[int, int]:
    async def measure() -> dict[int, int]:
        probe = LagProbe(_settings(broker))
        try:
            return await probe.measure(partitions, handled)
        finally:
            await probe.close()

    return asyncio.run(measure())


def test_partitions_not_handled_yet_count_from_the_committed_or_first_offset(
    broker: Any, topic: None
) -> None:
    assert _measure(broker, {0, 1, 2}, {}) == {0: 6, 1: 3, 2: 0}


def test_a_handled_partition_counts_from_the_latest_handled_event(broker: Any, topic: None) -> None:
    assert _measure(broker, {0, 1}, {0: 7, 1: 2}) == {0: 2, 1: 0}


def test_no_partitions_no_lag_and_no_connection(broker: Any, topic: None) -> None:
    assert _measure(broker, set(), {}) == {}
