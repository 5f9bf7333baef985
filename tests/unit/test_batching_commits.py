"""What the batching consumer commits: never past a record handed to a handler and not yet
acknowledged (faust-streaming 0.15 commits past unacknowledged records at a partition's
head: with 0-2 unacknowledged and 3-9 acknowledged it commits 10, so a worker dying then
would never read 0-2 again)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from faust.types import TP, Message

from streams.batching import BatchingApp, BatchingConsumer

TOPIC = "events"
PARTITION = TP(TOPIC, 0)


async def _handler(messages: list[Message]) -> None:  # pragma: no cover - never called
    pass


@pytest.fixture
def consumer() -> BatchingConsumer:
    app = BatchingApp("commits", broker="kafka://127.0.0.1:1", store="memory://")
    app.batch_agent(app.topic(TOPIC), _handler, name="events")
    app.topics.acking_topics.add(TOPIC)  # what subscribing at start-up does
    consumer = app.consumer
    assert isinstance(consumer, BatchingConsumer)
    return consumer


def _messages(offsets: range, tp: TP = PARTITION) -> list[Message]:
    return [
        Message(tp.topic, tp.partition, o, 0.0, 0, [], b"k", b"v", None, tp=tp) for o in offsets
    ]


def _handed(consumer: BatchingConsumer, messages: list[Message]) -> None:
    for message in messages:  # what the batch loop does with each message of a batch
        consumer._handed[message.tp].add(message.offset)


def test_nothing_is_committed_past_a_record_still_unacknowledged(consumer: Any) -> None:
    messages = _messages(range(10))
    _handed(consumer, messages)
    for message in messages[3:]:
        consumer.ack(message)
    assert consumer._filter_committable_offsets([PARTITION]) == {}
    for message in messages[:3]:
        consumer.ack(message)
    assert consumer._filter_committable_offsets([PARTITION]) == {PARTITION: 10}


def test_one_unacknowledged_record_after_the_committed_offset_holds_the_commit(
    consumer: Any,
) -> None:
    consumer._committed_offset[PARTITION] = 5
    messages = _messages(range(5, 10))
    _handed(consumer, messages)
    for message in messages[1:]:
        consumer.ack(message)
    assert consumer._filter_committable_offsets([PARTITION]) == {}
    consumer.ack(messages[0])
    assert consumer._filter_committable_offsets([PARTITION]) == {PARTITION: 10}


def test_a_record_held_in_the_middle_commits_up_to_it(consumer: Any) -> None:
    messages = _messages(range(10))
    _handed(consumer, messages)
    for message in messages[:4] + messages[5:]:
        consumer.ack(message)
    assert consumer._filter_committable_offsets([PARTITION]) == {PARTITION: 4}


def test_records_of_a_revoked_partition_or_a_dropped_batch_hold_nothing(consumer: Any) -> None:
    other = TP(TOPIC, 1)
    dropped, revoked = _messages(range(3)), _messages(range(3), other)
    _handed(consumer, dropped + revoked)
    consumer._note_dropped(dropped)  # a rebalance began: fetched again after it
    consumer._forget_handed({other})
    later = _messages(range(3, 6)) + _messages(range(3, 6), other)
    _handed(consumer, later)
    for message in later:
        consumer.ack(message)
    assert consumer._filter_committable_offsets([PARTITION, other]) == {
        PARTITION: 6,
        other: 6,
    }


class _Thread:
    """The consumer thread's side of seeking: the group's committed offsets."""

    def __init__(self, committed: dict[TP, int | None]) -> None:
        self.committed = committed
        self.to_start: list[TP] = []

    def assignment(self) -> set[TP]:
        return set(self.committed)

    async def seek_to_committed(self) -> dict[TP, int | None]:
        return dict(self.committed)

    async def seek_to_beginning(self, *partitions: Any) -> None:
        if not all(isinstance(p, TopicPartition) for p in partitions):  # as aiokafka checks
            raise TypeError("partitions must be TopicPartition instances")
        self.to_start += [TP(p.topic, p.partition) for p in partitions]


def test_a_partition_nothing_was_committed_on_is_read_again_from_its_start(
    consumer: Any,
) -> None:
    """At the end of a rebalance Faust seeks to the committed offsets to read again what it
    fetched and dropped meanwhile; where nothing was committed that seek does nothing, so
    the partition is read from its start, as a new consumer of the group would."""
    committed, fresh, changelog = TP(TOPIC, 1), TP(TOPIC, 2), TP("customers-changelog", 0)
    thread = _Thread({PARTITION: 0, committed: 40, fresh: None, changelog: None})
    consumer._thread = thread
    consumer._read_offset[fresh] = 212  # fetched and dropped while the partition was paused
    asyncio.run(consumer.perform_seek())
    assert sorted(thread.to_start) == [PARTITION, fresh]  # a topic an agent reads, no commit
    assert consumer._read_offset[fresh] is None
    assert consumer._read_offset[committed] == 40


def test_a_gap_in_the_offsets_does_not_carry_the_commit_past_a_held_record(
    consumer: Any,
) -> None:
    """Offsets 6-7 never arrive (compaction, transaction markers): the loop notes them as a
    gap when 8 comes, and only them; with 8 held, the commit stops at 8."""
    fetched = _messages(range(5, 6)) + _messages(range(8, 10))
    _handed(consumer, fetched)
    asyncio.run(consumer._add_gap(PARTITION, 6, 7))  # what the loop notes on reading 8 after 5
    consumer.ack(fetched[0])
    consumer.ack(fetched[2])
    assert consumer._filter_committable_offsets([PARTITION]) == {PARTITION: 8}
    consumer.ack(fetched[1])
    assert consumer._filter_committable_offsets([PARTITION]) == {PARTITION: 10}
