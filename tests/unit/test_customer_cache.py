"""The customer table's live states: decoded once, written back once per batch, bounded."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from faust.serializers.registry import Registry
from faust.streams import _current_event

from online_models.scoring.state import CustomerState
from streams.customer_table import CachedStates

TOPIC = "app-customers-changelog"


class _Store(dict[str, bytes]):
    """The memory store's part the cache uses: a mapping, and where it was persisted to."""

    def __init__(self) -> None:
        super().__init__()
        self.persisted: dict[int, int] = {}

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[tp.partition] = offset


class _Table:
    """What the cache reads of a Faust table with str keys and bytes values."""

    changelog_topic_name = TOPIC
    key_type = str
    key_serializer = "json"

    def __init__(self) -> None:
        self.data = _Store()
        self.app = SimpleNamespace(serializers=Registry())
        self.reads = 0

    def get(self, key: str) -> bytes | None:
        self.reads += 1
        return self.data.get(key)

    def keys(self) -> Any:
        return self.data.keys()

    def __contains__(self, key: object) -> bool:
        return key in self.data


class _Producer:
    """Collects what :meth:`CachedStates.write_back` queues."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None, int | None]] = []
        self.callbacks: list[Any] = []

    def add(self, topic: str, key: bytes | None, value: bytes | None, **options: Any) -> None:
        self.records.append((topic, key, value, options.get("partition")))
        self.callbacks.append(options.get("on_sent"))


class _Event:
    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(topic="events", partition=partition)


@contextmanager
def event_of(partition: int) -> Iterator[None]:
    """An event of ``partition`` is being handled, as in the worker's batch loop."""
    event = _Event(partition)
    token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _current_event.reset(token)


def test_many_changes_of_a_customer_make_one_changelog_record_in_faust_s_format() -> None:
    table, producer = _Table(), _Producer()
    states = CachedStates(table, capacity=10)
    with event_of(3):
        states["ann"] = CustomerState.new(0.0)
        for n in range(50):
            state = states["ann"]
            state.record_applied(3, n, None, window=32)
            states["ann"] = state
    assert states.write_back(producer) == 1  # type: ignore[arg-type]
    ((topic, key, value, partition),) = producer.records
    assert (topic, partition) == (TOPIC, 3)
    assert orjson.loads(key or b"") == "ann"  # the key as Faust's table writes a str key
    assert value == table.data["ann"]
    assert CustomerState.decode(value).has_applied(3, 49, None)
    producer.callbacks[0](3, 41, None)  # the broker took it at offset 41
    assert table.data.persisted == {3: 41}


def test_a_state_is_decoded_once_and_the_same_object_is_handed_out_again() -> None:
    table = _Table()
    table.data["bob"] = CustomerState.new(0.0).encode()
    states = CachedStates(table, capacity=10)
    with event_of(0):
        first = states["bob"]
        assert states["bob"] is first
    assert table.reads == 1


def test_a_deleted_customer_becomes_a_tombstone_and_is_gone() -> None:
    table, producer = _Table(), _Producer()
    table.data["cy"] = CustomerState.new(0.0).encode()
    states = CachedStates(table, capacity=10)
    with event_of(1):
        del states["cy"]
        assert "cy" not in states
    states.write_back(producer)  # type: ignore[arg-type]
    assert [(r[2], r[3]) for r in producer.records] == [(None, 1)]
    assert "cy" not in table.data


def test_written_states_beyond_the_capacity_are_evicted_least_recently_used_first() -> None:
    table, producer = _Table(), _Producer()
    states = CachedStates(table, capacity=2)
    with event_of(0):
        for customer in ("a", "b", "c"):
            states[customer] = CustomerState.new(0.0)
        assert states.unwritten == 3  # unwritten states are never evicted
        states.write_back(producer)  # type: ignore[arg-type]
        table.reads = 0
        assert states["b"] is not None and states["c"] is not None  # still live
        assert table.reads == 0
        assert states["a"] is not None  # evicted: read from the table
        assert table.reads == 1


def test_a_write_back_takes_at_most_limit_states_and_the_rest_next_time() -> None:
    table, producer = _Table(), _Producer()
    states = CachedStates(table, capacity=100)
    with event_of(0):
        for n in range(5):
            states[f"c{n}"] = CustomerState.new(0.0)
    assert states.write_back(producer, 3) == 3  # type: ignore[arg-type]
    assert states.write_back(producer, 3) == 2  # type: ignore[arg-type]
    assert states.write_back(producer, 3) == 0  # type: ignore[arg-type]
    assert len(producer.records) == 5


def test_revoked_partitions_are_dropped_and_read_again_from_the_table() -> None:
    table, producer = _Table(), _Producer()
    states = CachedStates(table, capacity=10)
    with event_of(0):
        states["kept"] = CustomerState.new(0.0)
    with event_of(1):
        states["moved"] = CustomerState.new(0.0)
    states.write_back(producer)  # type: ignore[arg-type]
    states.drop({1})
    table.reads = 0
    with event_of(0):
        assert states["kept"] is not None and states["moved"] is not None
    assert table.reads == 1


def test_a_change_outside_an_event_is_refused() -> None:
    states = CachedStates(_Table(), capacity=10)
    with pytest.raises(RuntimeError, match="outside of an event"):
        states["dan"] = CustomerState.new(0.0)
