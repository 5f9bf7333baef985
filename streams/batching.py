"""A Faust consumer that hands each fetched batch of a topic to one handler call.

Faust delivers every message on its own: per message its fetch loop starts two tasks and an
``asyncio.wait`` (``Service.wait_first``), the message crosses a queue, and the stream
sleeps once and calls its sensors. Profiled on the benchmark's 2-core machine that path
costs about 190 µs of CPU per message, most of a bare decode-only agent's time
(``benchmarks/throughput.py``). :class:`BatchingConsumer` keeps Faust's fetching, offsets,
commits, rebalances and tables, and replaces only that per-message delivery for the topics
given a :data:`BatchHandler`: the messages of one fetch go to the handler in one call.

The handler owns the messages it is given: it calls :meth:`Consumer.track_message` on each
one it takes and :meth:`Consumer.ack` once its effects are durable, exactly as a Faust
stream would; a message it neither tracks nor acks is fetched again after the next
rebalance or restart. Every other topic (table changelogs, other agents) goes through
Faust's own path unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import faust
from faust.streams import _current_event
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import ConsumerT, EventT, Message, TopicT

__all__ = ["BatchHandler", "BatchingApp", "BatchingConsumer", "enter_event", "leave_event"]

logger = logging.getLogger(__name__)

#: Called with the messages of one fetch, in partition order within each partition.
BatchHandler = Callable[[list[Message]], Awaitable[None]]


class BatchingConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, delivering the topics in :attr:`batch_handlers` in batches.

    ``fetch_max_wait_ms`` bounds how long one fetch waits for new messages (Faust's own
    consumer waits 1.5 s, which a broker that does not answer a waiting fetch as soon as
    data arrives turns into 1.5 s of latency).
    """

    batch_handlers: Mapping[str, BatchHandler] = {}
    fetch_max_wait_ms: int = 1500

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Per partition, the offsets handed to a handler and not yet acknowledged
        #: (:meth:`_new_offset` commits no further than the lowest).
        self._handed: defaultdict[Any, set[int]] = defaultdict(set)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - Faust's loop
        """Faust's fetch loop (``faust.transport.consumer.Consumer._drain_messages``,
        faust-streaming 0.11-0.15), with the messages of batch topics collected per fetch."""
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        handlers = self.batch_handlers
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                batches: dict[str, list[Message]] = {}
                # Faust sleeps here too: getmany may return at once, many times in a row.
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in getmany(timeout=1.0):
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is not None and offset < r_offset:
                            continue  # read before: Faust drops these too
                        if r_offset and offset - r_offset > 1 and acks_enabled_for(tp.topic):
                            await self._add_gap(tp, r_offset + 1, offset - 1)  # Faust: to offset
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        batch = batches.get(tp.topic) if tp.topic in handlers else None
                        if batch is None and tp.topic in handlers:
                            batch = batches[tp.topic] = []
                        if batch is not None:
                            batch.append(message)
                            if acks_enabled_for(tp.topic):
                                self._handed[tp].add(offset)
                        else:
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                    for topic, batch in batches.items():
                        if self.suspend_flow.is_set():
                            # A rebalance began: these are fetched again after it, from the
                            # committed offset, or the start where none (perform_seek).
                            self._note_dropped(batch)
                            continue
                        await handlers[topic](batch)
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    def _forget_handed(self, partitions: Iterable[Any]) -> None:
        """Partitions revoked: what their handlers still hold is read again by the next
        owner, and holds none of this worker's commits."""
        for tp in partitions:
            self._handed.pop(tp, None)

    def _release(self, message: Message) -> None:
        """``message`` is no longer held by a handler (acknowledged, or dropped)."""
        offsets = self._handed.get(message.tp)
        if offsets:
            offsets.discard(message.offset)

    def ack(self, message: Message) -> bool:
        self._release(message)
        return super().ack(message)

    def _new_offset(self, tp: Any) -> int | None:
        """The offset to commit for ``tp``: Faust's (the end of the first run of consecutive
        acknowledged offsets), or none while a record handed to a handler before that run is
        still unacknowledged. Faust checks only that the run starts within one offset of the
        committed one, and not at all before a first commit, so it commits past a held
        record: with 0-2 unacknowledged and 3-9 acknowledged it commits 10 (the merger's
        EASE deltas are held until a refit; events until their scores are in Redis)."""
        handed = self._handed.get(tp)
        if handed:
            committed = self._committed_offset.get(tp)
            if committed is not None:  # below it: acknowledged by nothing, ever
                handed.difference_update([o for o in handed if o < committed])
            acked = self._acked.get(tp)
            if handed and acked and min(acked) > min(handed):
                return None
        return super()._new_offset(tp)

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        self._forget_handed(revoked)
        await super().on_partitions_revoked(revoked)

    def _note_dropped(self, batch: list[Message]) -> None:
        """A batch dropped as a rebalance began: fetched again after it (from the committed
        offset, or the start where nothing was committed: :meth:`perform_seek`), and held by
        no handler meanwhile."""
        for message in batch:
            self._release(message)

    async def perform_seek(self) -> None:
        """Seek every assigned partition to its committed offset, and those of the topics
        handed to agents that have none to their first offset.

        Faust seeks to the committed offsets at the end of each rebalance, to read again what
        it fetched and dropped meanwhile: its ``getmany`` drops the records of a partition
        that is not active when they arrive (paused while the tables recover) or of an older
        generation, after the fetch moved past them. aiokafka's seek does nothing where
        nothing was committed, so there those records were never read: a worker that took
        the model-updates partition before any commit on it fetched all 213 deltas on it
        while the partition was paused, dropped them and never merged one (the replaced-
        worker test's timeout); events of a partition that moved before its first commit were
        lost the same way. Where nothing was committed, the start is what a new consumer of
        the group reads from (``auto_offset_reset`` earliest): what was read before is read
        again, as after any rebalance."""
        await super().perform_seek()
        if self.app.conf.consumer_auto_offset_reset != "earliest":
            return
        acking = self.app.topics.acks_enabled_for
        committed = self._committed_offset
        fresh = sorted(
            tp for tp in self.assignment() if acking(tp.topic) and committed.get(tp) is None
        )
        if fresh:
            logger.info("Reading %s from the start: nothing committed there", fresh)
            await self._thread.seek_to_beginning(*map(faust_aiokafka.ensure_aiokafka_TP, fresh))
            for tp in fresh:
                self._read_offset[tp] = None


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The consumer thread, with the fetch wait of :attr:`BatchingConsumer.fetch_max_wait_ms`."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.consumer, "fetch_max_wait_ms", 1500)
        # aiokafka reads it when the consumer starts; Faust hard-codes 1500 in the call.
        consumer._fetch_max_wait_ms = wait_ms
        return consumer


class BatchingApp(faust.App):
    """A Faust app whose consumer is a :class:`BatchingConsumer`.

    ``fetch_max_wait_ms`` is the longest a fetch waits for new messages.
    """

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 1500, **kwargs: Any) -> None:
        self.batch_handlers: dict[str, BatchHandler] = {}
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def batch_agent(self, topic: TopicT, handler: BatchHandler, *, name: str) -> None:
        """Hand the messages of ``topic`` to ``handler``, the messages of one fetch at a time.

        An agent is still declared on the topic, since that is what subscribes the consumer
        to it and enables its acknowledgements; it never receives a message.
        """

        async def subscribe_only(stream: Any) -> None:
            async for _ in stream:  # pragma: no cover - the consumer hands them to handler
                pass

        self.agent(topic, name=name)(subscribe_only)
        for topic_name in topic.topics:
            self.batch_handlers[topic_name] = handler

    def _new_consumer(self) -> ConsumerT:
        consumer = BatchingConsumer(
            self.transport,
            callback=self.topics.on_message,
            on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned,
            beacon=self.beacon,
            loop=self.loop,
        )
        # The same dict: handlers registered after the consumer exists are seen too.
        consumer.batch_handlers = self.batch_handlers
        consumer.fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


def enter_event(app: faust.App, message: Message) -> EventT:
    """Make ``message`` the current event, as a Faust stream does before yielding it.

    Tables find the partition of their changelog (and RocksDB its database) from the current
    event. The caller keeps the returned event alive while it works on the message: the
    context holds it by weak reference only.
    """
    event = app.create_event(message.key, message.value, message.headers, message)
    _current_event.set(weakref.ref(event))
    return event


def leave_event() -> None:
    """No current event any more."""
    _current_event.set(None)
