"""The product catalogue on every worker: CRM_ITEMS_TOPIC read whole, then followed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import ConsumerStoppedError
from faust.types import Message

from online_models.recommend.content import ContentModel
from online_models.scoring.scorer import CustomerScorer
from schemas.errors import EventRejected
from schemas.items import decode_item
from streams.kafka_security import aiokafka_options
from streams.metrics import ScorerMetrics
from streams.settings import Settings

__all__ = ["CatalogueCheck", "CatalogueFeed", "CatalogueMissing"]

logger = logging.getLogger(__name__)

_POLL_MS = 500
# How long a worker waits between attempts to read a catalogue topic it cannot reach yet.
_RETRY_SECONDS = 1.0
# A topic missing this many times in a row is no catalogue (looked for again every minute).
_MISSING_ATTEMPTS = 5
_MISSING_RETRY_SECONDS = 60.0


class CatalogueMissing(LookupError):
    """The catalogue topic does not exist on the cluster."""


#: Sends one refused record to the dead-letter topic: message, reason, error, field, kind.
DeadLetterSender = Callable[[Message, str, str, str | None, str | None], Awaitable[None]]


class CatalogueFeed:
    """This worker's reader of the whole catalogue (every partition, no consumer group).

    At start-up it reads the topic from its beginning to its end into a fresh
    :class:`~online_models.recommend.content.ContentModel`, hands that to the scorer and sets
    :attr:`ready` (the worker scores no event before); then it applies each new record as it
    comes. A record that fails its checks changes nothing and is counted; the worker that
    owns its partition in the consumer group dead-letters it (:class:`CatalogueCheck`).
    """

    def __init__(self, settings: Settings, scorer: CustomerScorer, metrics: ScorerMetrics) -> None:
        self._settings = settings
        self._scorer = scorer
        self._metrics = metrics
        self._consumer: AIOKafkaConsumer | None = None
        #: Set once the catalogue as it was at start-up is loaded.
        self.ready = asyncio.Event()

    async def run(self) -> None:
        """Load the catalogue, then follow it, until the worker stops. A broker that does not
        answer is asked again, and the catalogue read again whole after any failure. A topic
        that does not exist (a cluster that forbids creating it) is an empty catalogue: the
        worker scores without one, and looks for the topic again every minute."""
        missing = 0
        while True:
            try:
                if self._consumer is None:
                    await self._load()
                await self._follow()
            except asyncio.CancelledError:
                raise
            except ConsumerStoppedError:
                return  # the worker stops
            except CatalogueMissing as exc:
                await self.stop()
                missing += 1
                if missing < _MISSING_ATTEMPTS:
                    await asyncio.sleep(_RETRY_SECONDS)
                    continue
                if not self.ready.is_set():
                    logger.warning("%s: scoring without a catalogue until it appears", exc)
                    self.ready.set()
                await asyncio.sleep(_MISSING_RETRY_SECONDS)
            except Exception as exc:
                logger.warning("Reading %s failed (%s); reading it again", self._topic, exc)
                await self.stop()
                await asyncio.sleep(_RETRY_SECONDS)

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    @property
    def _topic(self) -> str:
        return self._settings.items_topic

    async def _load(self) -> None:
        """Read every partition from the beginning to the end it has now, then swap the
        catalogue in whole: scores never see a catalogue half read."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.broker_hosts,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=30_000,
            **aiokafka_options(self._settings),
        )
        await consumer.start()
        self._consumer = consumer
        await consumer.topics()  # metadata of every topic, the catalogue's included
        partitions = consumer.partitions_for_topic(self._topic)
        if not partitions:
            msg = f"topic {self._topic} (CRM_ITEMS_TOPIC) does not exist"
            raise CatalogueMissing(msg)
        assigned = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        starts = await consumer.beginning_offsets(assigned)
        ends = await consumer.end_offsets(assigned)
        old = self._scorer.catalogue
        catalogue = ContentModel(old.dimensions, catalogue_only=old.catalogue_only)
        waiting = {tp for tp in assigned if ends[tp] > starts[tp]}
        while waiting:
            batches = await consumer.getmany(*waiting, timeout_ms=_POLL_MS)
            for records in batches.values():
                self._apply(catalogue, records)
            # The position, not the last record: compaction and transaction markers leave
            # offsets with no record to read.
            for tp in list(waiting):
                if await consumer.position(tp) >= ends[tp]:
                    waiting.discard(tp)
        self._scorer.use_catalogue(catalogue)
        self._loaded(catalogue)
        self.ready.set()
        self._metrics.catalogue_loaded.set(1)
        logger.info(
            "Read the catalogue: %d items, %d of them available",
            len(catalogue),
            len(catalogue.available_items),
        )

    async def _follow(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            batches = await consumer.getmany(timeout_ms=_POLL_MS)
            catalogue = self._scorer.catalogue
            for records in batches.values():
                self._apply(catalogue, records)
            if batches:
                self._loaded(catalogue)

    def _apply(self, catalogue: ContentModel, records: Sequence[Any]) -> None:
        counted = self._metrics.catalogue_records.labels
        for record in records:
            try:
                item = decode_item(record.key, record.value)
            except EventRejected as exc:
                counted(outcome="refused").inc()
                logger.warning(
                    "Refused the catalogue record at %s[%d]@%d: %s (%s)",
                    record.topic,
                    record.partition,
                    record.offset,
                    exc.message,
                    exc.reason,
                )
                continue
            if item is None:
                catalogue.remove(record.key.decode("utf-8", "replace"))
                counted(outcome="removed").inc()
            else:
                catalogue.upsert(item.item_id, item.model_dump(exclude_none=True))
                counted(outcome="applied").inc()

    def _loaded(self, catalogue: ContentModel) -> None:
        available = len(catalogue.available_items)
        self._metrics.catalogue_items.labels(available="true").set(available)
        self._metrics.catalogue_items.labels(available="false").set(len(catalogue) - available)


class CatalogueCheck:
    """Handler of the catalogue's partitions this worker owns in the consumer group: each
    record that fails its checks is dead-lettered once for the whole group (the feed of
    every worker only counts it)."""

    def __init__(self, dead_letter: DeadLetterSender, ack: Callable[[Message], None]) -> None:
        self._dead_letter = dead_letter
        self._ack = ack

    async def check(self, messages: list[Message]) -> None:
        for message in messages:
            try:
                decode_item(message.key, message.value)
            except EventRejected as exc:
                await self._dead_letter(message, exc.reason, exc.message, exc.field, None)
            self._ack(message)
