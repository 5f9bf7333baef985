"""Records sent to Kafka in batches: one aiokafka batch per partition, not a Faust publish each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from schemas.errors import CrmScorerError

__all__ = ["BatchProducer", "RecordsLost", "Sent"]

logger = logging.getLogger(__name__)

#: Told of each record once the broker took it (its offset) or refused it (offset -1, error).
Sent = Callable[[int, int, BaseException | None], None]


class RecordsLost(CrmScorerError):
    """Records that must be delivered were not: what they carry exists only in memory."""


class _Record(NamedTuple):
    topic: str
    partition: int | None
    key: bytes | None
    value: bytes | None
    on_sent: Sent | None
    must_deliver: bool


class BatchProducer:
    """Sends queued records with aiokafka's ``create_batch``/``send_batch``.

    Faust's producer path costs a ``FutureMessage``, sensors, a channel and aiokafka's
    per-record ``send`` for every record (16% of the worker's CPU when every changelog, alert
    and dead-letter record went that way). Here :meth:`add` only queues a record and
    :meth:`send` fills one batch per partition with the records queued so far, in order, and
    waits until the broker acknowledged every one: a caller that acknowledges its events
    after :meth:`send` returns never commits an offset ahead of its records.

    Records keep their order within a partition: each partition's batches are submitted one
    after another (aiokafka sends one batch per partition at a time, retries included), and
    one :meth:`send` submits all of its records before the next may begin. ``producer``
    returns aiokafka's producer (the one Faust started, so records share its connections and
    settings, the batch size included).
    """

    def __init__(self, producer: Callable[[], Any]) -> None:
        self._producer = producer
        self._queued: list[_Record] = []
        self._in_flight = 0
        self._submitting = asyncio.Lock()

    @property
    def pending(self) -> int:
        """Records queued or waiting for the broker."""
        return len(self._queued) + self._in_flight

    def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        on_sent: Sent | None = None,
        must_deliver: bool = False,
    ) -> None:
        """Queue a record for the next :meth:`send` (its partition from ``key`` by the
        producer's partitioner, as Faust's ``send`` would, unless given).

        A failed record is reported to ``on_sent``; if it ``must_deliver``, :meth:`send`
        raises :class:`RecordsLost` once every record is settled.
        """
        self._queued.append(_Record(topic, partition, key, value, on_sent, must_deliver))

    async def send(self) -> int:
        """Send every queued record and wait for the broker; returns how many were sent."""
        records, self._queued = self._queued, []
        if not records:
            return 0
        self._in_flight += len(records)
        lost: list[BaseException] = []
        try:
            async with self._submitting:
                producer = self._producer()
                by_partition = await _by_partition(producer, records)
                # Partitions concurrently: a partition's next batch waits for its last one.
                submitted = await asyncio.gather(
                    *(
                        _submit(producer, topic, partition, members)
                        for (topic, partition), members in by_partition.items()
                    ),
                    return_exceptions=True,
                )
            for ((_, partition), members), batches in zip(
                by_partition.items(), submitted, strict=True
            ):
                if isinstance(batches, BaseException):  # not even handed to the producer
                    failed = asyncio.get_running_loop().create_future()
                    failed.set_exception(batches)
                    batches = [(failed, partition, members)]
                for future, batch_partition, batch_members in batches:
                    await _settle(future, batch_partition, batch_members, lost)
        finally:
            self._in_flight -= len(records)
        if lost:
            msg = f"{len(lost)} records the broker did not take: {lost[0]!r}"
            raise RecordsLost(msg)
        return len(records)


async def _by_partition(
    producer: Any, records: list[_Record]
) -> dict[tuple[str, int], list[_Record]]:
    """The records per topic partition, in order; partitions chosen as ``send`` would."""
    grouped: dict[tuple[str, int], list[_Record]] = {}
    ready: set[str] = set()
    for record in records:
        partition = record.partition
        if partition is None:
            if record.topic not in ready:
                # aiokafka's own send waits for the topic's metadata the same way.
                await producer.client._wait_on_metadata(record.topic)
                ready.add(record.topic)
            partition = producer._partition(
                record.topic, None, None, None, record.key, record.value
            )
        grouped.setdefault((record.topic, partition), []).append(record)
    return grouped


async def _submit(
    producer: Any, topic: str, partition: int, records: list[_Record]
) -> list[tuple[Any, int, list[_Record]]]:
    """Hand one partition's records to the producer in order; each batch's delivery future."""
    submitted = []
    for batch, members in _batches(producer, records):
        future = await producer.send_batch(batch, topic, partition=partition)
        submitted.append((future, partition, members))
    return submitted


def _batches(producer: Any, records: list[_Record]) -> list[tuple[Any, list[_Record]]]:
    """``records`` in as few batches as the producer's batch size allows."""
    batches: list[tuple[Any, list[_Record]]] = []
    batch, members = producer.create_batch(), list[_Record]()
    for record in records:
        if batch.append(key=record.key, value=record.value, timestamp=None) is None:
            batches.append((batch, members))
            batch, members = producer.create_batch(), []
            batch.append(key=record.key, value=record.value, timestamp=None)
        members.append(record)
    batches.append((batch, members))
    return batches


async def _settle(
    future: Any, partition: int, members: list[_Record], lost: list[BaseException]
) -> int:
    """Wait for one batch and tell its records' callbacks; returns how many records."""
    error: BaseException | None = None
    base = -1
    try:
        base = (await future).offset
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # KafkaError after aiokafka's retries, or a timeout
        error = exc
        logger.error("Kafka did not take %d records: %r", len(members), exc)
    for index, record in enumerate(members):
        if error is not None and record.must_deliver:
            lost.append(error)
        if record.on_sent is not None:
            record.on_sent(partition, -1 if error else base + index, error)
    return len(members)
