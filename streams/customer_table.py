"""The Faust customer table seen as live customer states, written back once per batch."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Collection, Iterator, MutableMapping
from contextlib import contextmanager
from functools import partial
from itertools import islice
from types import SimpleNamespace
from typing import Any

from faust.streams import _current_event, current_event
from faust.types import TP

from online_models.scoring.state import CustomerState
from streams.producing import BatchProducer

__all__ = ["CachedStates"]

logger = logging.getLogger(__name__)

_ABSENT: Any = object()


class CachedStates(MutableMapping[str, CustomerState]):
    """The Faust customer table seen as customer states, each decoded once and kept live.

    A customer's state is decoded on first read and then handed out as the same object:
    the engine changes it in place, and a write only marks it unwritten, remembering the
    partition of the event that wrote it (where Faust's table would have sent it). Once a
    batch of events is handled, :meth:`write_back` encodes each unwritten state once, stores
    it in the table and queues one changelog record per customer on a :class:`BatchProducer`
    in the form Faust's table recovery reads (its key serializer's key, the raw value, a
    tombstone for a deleted customer). Up to ``capacity`` written states stay live for the
    next batch (the least recently used go first); :meth:`drop` forgets those of revoked
    partitions.
    """

    def __init__(self, table: Any, *, capacity: int) -> None:
        self._table = table
        self.capacity = capacity
        #: Live states, least recently used first; None: deleted, tombstone not yet written.
        self._live: dict[str, CustomerState | None] = {}
        #: The partition each live customer's record belongs to.
        self._partitions: dict[str, int] = {}
        #: Customers changed since the last write-back.
        self._unwritten: set[str] = set()

    @property
    def unwritten(self) -> int:
        """Customers changed since the last write-back."""
        return len(self._unwritten)

    def __getitem__(self, customer_id: str) -> CustomerState:
        live = self._live
        state = live.get(customer_id, _ABSENT)
        if state is None:
            raise KeyError(customer_id)
        if state is not _ABSENT:
            del live[customer_id]
            live[customer_id] = state  # now the most recently used
            return state
        raw = self._table.get(customer_id)
        if raw is None:
            raise KeyError(customer_id)
        state = CustomerState.decode(raw)
        event = current_event()
        if event is not None:  # a state read outside an event is not kept: whose partition?
            live[customer_id] = state
            self._partitions[customer_id] = event.message.partition
        return state

    def __setitem__(self, customer_id: str, state: CustomerState) -> None:
        self._live.pop(customer_id, None)
        self._live[customer_id] = state
        self._partitions[customer_id] = _event_partition()
        self._unwritten.add(customer_id)

    def __delitem__(self, customer_id: str) -> None:
        if self.get(customer_id) is None:
            raise KeyError(customer_id)
        self._live[customer_id] = None
        self._partitions[customer_id] = _event_partition()
        self._unwritten.add(customer_id)

    def __iter__(self) -> Iterator[str]:
        live = self._live
        for customer_id in list(self._table.keys()):
            if live.get(customer_id, True) is not None:
                yield customer_id
        for customer_id, state in list(live.items()):
            if state is not None and customer_id not in self._table:
                yield customer_id

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def write_back(self, producer: BatchProducer, limit: int | None = None) -> int:
        """Store the unwritten states (at most ``limit`` of them) in the table and queue
        their changelog records on ``producer``; returns how many. The records are durable
        once ``producer`` sent them.

        Synchronous: a state changed after this call is written by the next one.
        """
        table, store = self._table, self._table.data
        topic = table.changelog_topic_name
        if limit is None or limit >= len(self._unwritten):
            unwritten, self._unwritten = self._unwritten, set()
        else:
            unwritten = set(islice(self._unwritten, limit))
            self._unwritten -= unwritten
        by_partition: dict[int, list[str]] = {}
        for customer_id in unwritten:
            by_partition.setdefault(self._partitions[customer_id], []).append(customer_id)
        # The key as Faust's table writes it (JSON for a str key), so recovery reads it back.
        dumps_key = partial(
            table.app.serializers.dumps_key, table.key_type, serializer=table.key_serializer
        )
        for partition, customer_ids in by_partition.items():
            with _in_partition(table, partition):  # a RocksDB store picks its database by it
                for customer_id in customer_ids:
                    state = self._live[customer_id]
                    raw = None if state is None else state.encode()
                    if raw is None:
                        store.pop(customer_id, None)
                        del self._live[customer_id]
                    else:
                        store[customer_id] = raw
                    producer.add(
                        topic,
                        dumps_key(customer_id),
                        raw,
                        partition=partition,
                        on_sent=self._changelog_sent,
                        must_deliver=True,
                    )
        self._evict()
        return len(unwritten)

    def drop(self, partitions: Collection[int]) -> None:
        """Forget the live states of ``partitions`` (revoked): their next owner has them.

        Call after :meth:`write_back`: an unwritten state of these partitions is lost.
        """
        gone = [c for c, partition in self._partitions.items() if partition in partitions]
        for customer_id in gone:
            self._forget(customer_id)

    def discard(self, customer_id: str) -> None:
        """Forget a customer's live state, unwritten changes included: the next read decodes
        the state last written back (a state an exception left half-changed)."""
        self._forget(customer_id)

    def _evict(self) -> None:
        excess = len(self._live) - self.capacity
        if excess <= 0:
            return
        oldest = []
        for customer_id in self._live:
            if customer_id not in self._unwritten:
                oldest.append(customer_id)
                if len(oldest) == excess:
                    break
        for customer_id in oldest:
            self._forget(customer_id)

    def _forget(self, customer_id: str) -> None:
        self._live.pop(customer_id, None)
        self._partitions.pop(customer_id, None)
        self._unwritten.discard(customer_id)

    def _changelog_sent(self, partition: int, offset: int, error: BaseException | None) -> None:
        # What Faust's own changelog callback does: RocksDB remembers how far it is written,
        # so a restart reads only the changelog after it.
        if error is None:
            tp = TP(self._table.changelog_topic_name, partition)
            self._table.data.set_persisted_offset(tp, offset)


class _StandIn:
    """What a store reads of the current event: its message's topic and partition."""

    def __init__(self, message: SimpleNamespace) -> None:
        self.message = message


def _event_partition() -> int:
    event = current_event()
    if event is None:
        msg = "Cannot change a customer's state outside of an event"
        raise RuntimeError(msg)
    return int(event.message.partition)


@contextmanager
def _in_partition(table: Any, partition: int) -> Iterator[None]:
    """Make a stand-in event of ``partition`` current, as the store expects while writing."""
    stand_in = _StandIn(SimpleNamespace(topic=table.changelog_topic_name, partition=partition))
    token = _current_event.set(weakref.ref(stand_in))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _current_event.reset(token)
