"""Consumer lag of the worker's partitions, from the broker's end offsets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka_security import aiokafka_options
from streams.settings import Settings

__all__ = ["LAG_SECONDS", "LagProbe", "consumer_lag"]

logger = logging.getLogger(__name__)

# How often the worker asks the broker for its partitions' end offsets (consumer lag).
LAG_SECONDS = 5.0


class LagProbe:
    """The broker's end offsets, through a client of its own.

    Never through Faust's consumer: its thread serves requests one at a time, and a slow
    offset query there would hold up fetching. The end offsets are asked, not cached from
    the last fetch, so a stuck worker's lag keeps growing.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: AIOKafkaConsumer | None = None

    async def measure(
        self,
        partitions: Collection[int],
        handled: Mapping[int, int],
        committed: Mapping[int, int | None],
    ) -> dict[int, int]:
        """Per partition: events after the latest handled one (or after the committed offset,
        before this worker handled any)."""
        if not partitions:
            return {}
        if self._client is None:
            # No group: this client only lists offsets, and never touches the consumer group.
            client = AIOKafkaConsumer(
                bootstrap_servers=self._settings.broker_hosts,
                enable_auto_commit=False,
                request_timeout_ms=10_000,
                **aiokafka_options(self._settings),
            )
            await client.start()
            self._client = client
        topic = self._settings.events_topic
        tps = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        ends = await asyncio.wait_for(self._client.end_offsets(tps), LAG_SECONDS)
        starts: dict[int, int | None] = {}
        for tp in tps:
            last = handled.get(tp.partition)
            starts[tp.partition] = last + 1 if last is not None else committed.get(tp.partition)
        return consumer_lag({tp.partition: end for tp, end in ends.items()}, starts)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.stop()
            self._client = None


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
