"""Consumer lag of the worker's partitions, from the broker's end and committed offsets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka_security import aiokafka_options
from streams.settings import Settings

__all__ = ["LAG_SECONDS", "LagProbe", "consumer_lag"]

logger = logging.getLogger(__name__)

# How often the worker asks the broker for its partitions' end offsets (consumer lag).
LAG_SECONDS = 5.0


class LagProbe:
    """The broker's end offsets, and the group's committed ones, through clients of its own.

    Never through Faust's consumer: its thread serves requests one at a time, and a slow
    offset query there would hold up fetching. The end offsets are asked, not cached from
    the last fetch, so a stuck worker's lag keeps growing. A partition this worker has not
    handled an event of since it got it counts from the group's committed offset (from the
    partition's first offset when the group never committed one, where the worker starts
    too), so a newly assigned partition has a lag before its first event, and a worker stuck
    right after a rebalance shows it.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    async def measure(
        self, partitions: Collection[int], handled: Mapping[int, int]
    ) -> dict[int, int]:
        """Per partition: events after the latest handled one, or after the committed offset
        before this worker handled any."""
        if not partitions:
            return {}
        client, admin = await self._clients()
        topic = self._settings.events_topic
        tps = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        ends = await asyncio.wait_for(client.end_offsets(tps), LAG_SECONDS)
        starts: dict[int, int | None] = {
            tp.partition: handled[tp.partition] + 1 for tp in tps if tp.partition in handled
        }
        unknown = [tp for tp in tps if tp.partition not in handled]
        if unknown:
            committed = await asyncio.wait_for(
                admin.list_consumer_group_offsets(self._settings.app_id, partitions=unknown),
                LAG_SECONDS,
            )
            never = [tp for tp in unknown if tp not in committed or committed[tp].offset < 0]
            first = (
                await asyncio.wait_for(client.beginning_offsets(never), LAG_SECONDS)
                if never
                else {}
            )
            for tp in unknown:
                starts[tp.partition] = first[tp] if tp in first else committed[tp].offset
        return consumer_lag({tp.partition: end for tp, end in ends.items()}, starts)

    async def _clients(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        if self._client is None or self._admin is None:
            options = aiokafka_options(self._settings)
            hosts = self._settings.broker_hosts
            # No group: this client only lists offsets, and never touches the consumer group.
            client = AIOKafkaConsumer(
                bootstrap_servers=hosts, enable_auto_commit=False, request_timeout_ms=10_000,
                **options,
            )  # fmt: skip
            await client.start()
            admin = AIOKafkaAdminClient(bootstrap_servers=hosts, request_timeout_ms=10_000,
                                        **options)  # fmt: skip
            try:
                await admin.start()
            except BaseException:
                await client.stop()
                raise
            self._client, self._admin = client, admin
        return self._client, self._admin

    async def close(self) -> None:
        if self._client is not None:
            await self._client.stop()
            self._client = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None


def consumer_lag(ends: dict[int, int], starts: dict[int, int | None]) -> dict[int, int]:
    """Events between each partition's next offset to handle and its end offset.

    >>> consumer_lag({0: 120, 1: 50, 2: 9}, {0: 100, 1: 51, 2: None})
    {0: 20, 1: 0}
    """
    return {
        partition: max(end - start, 0)
        for partition, end in ends.items()
        if (start := starts.get(partition)) is not None
    }
