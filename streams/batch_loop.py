"""A fetch's decoded events scored as batches: one ``process_many`` per partition and run."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from faust.types import Message

from online_models.customer.activity import Activity
from streams.batching import enter_event
from streams.dead_lettering import position as _position

if TYPE_CHECKING:
    from streams.app import ScorerService, _Decoded

__all__ = ["RUN_EVENTS", "run_end", "score_run"]

logger = logging.getLogger(__name__)

#: The most messages scored in one run: a run holds the event loop (no await inside), about
#: 100 us an event.
RUN_EVENTS = 500
#: The most event time one run spans: a live fetch spans seconds, but a backlog's (a replay,
#: a worker catching up) can span days, and a run moves the watermark once, so its silent
#: customers would be re-scored days late and a customer's many events would be scored once.
RUN_SECONDS = 3_600.0


def _scorable(message: Message, decoded: _Decoded, position: int) -> bool:
    """Whether the message is a valid event whose key is its customer (not an erasure)."""
    batch = decoded.batch
    row = batch.rows[position]
    if row < 0 or decoded.activities[row] is None:
        return False
    key = message.key
    return key is not None and key == batch.columns.customer_ids[row].encode("utf-8")


def _erasure(decoded: _Decoded, position: int) -> bool:
    row = decoded.batch.rows[position]
    return row >= 0 and decoded.activities[row] is None


def run_end(
    messages: Sequence[Message], decoded: _Decoded, start: int, generation: int | None
) -> int:
    """Where the run of messages from ``start`` ends: at the end of the decoded chunk, at an
    erasure request (what it erases must be scored before it and not after), at a message
    of another consumer generation, at an event more than :data:`RUN_SECONDS` of event time
    from the run's first, or after :data:`RUN_EVENTS` messages. ``start`` itself when it is
    an erasure (handled alone)."""
    stop = min(decoded.end, start + RUN_EVENTS)
    rows, times = decoded.batch.rows, decoded.batch.columns.times
    first: float | None = None
    for index in range(start, stop):
        position = index - decoded.start
        if _erasure(decoded, position) or messages[index].generation_id != generation:
            return index
        row = rows[position]
        if row >= 0:
            time = float(times[row])
            if first is None:
                first = time
            elif abs(time - first) > RUN_SECONDS:
                return index
    return stop


def score_run(
    service: ScorerService, messages: Sequence[Message], decoded: _Decoded, start: int, stop: int
) -> list[str]:
    """Score messages ``start``..``stop`` (no erasure among them); each message's outcome.

    Bad input is dead-lettered one message at a time, as :meth:`ScorerService._handle`
    does. The valid events are scored together per partition (``ScoringEngine.process_many``);
    when that raises, the partition's customers revert to the states last written to the
    changelog and its events are scored one at a time, so only a failing event is
    dead-lettered.
    """
    outcomes = ["failed"] * (stop - start)
    partitions: dict[int, list[int]] = {}
    for index in range(start, stop):
        message = messages[index]
        if _scorable(message, decoded, index - decoded.start):
            partitions.setdefault(message.partition, []).append(index)
        else:
            outcomes[index - start] = _handle_one(service, message, decoded, index)
    for partition, indices in partitions.items():
        scored = _score_partition(service, messages, decoded, partition, indices)
        for index, outcome in zip(indices, scored, strict=True):
            outcomes[index - start] = outcome
    return outcomes


def _handle_one(service: ScorerService, message: Message, decoded: _Decoded, index: int) -> str:
    event = enter_event(service.app, message)  # the customer table writes to its partition
    try:
        return service._handle(message, decoded, index - decoded.start)
    except Exception:  # a bug: acknowledged, not retried forever
        logger.exception("Handling %s failed", _position(message))
        return "failed"
    finally:
        del event


def _score_partition(
    service: ScorerService,
    messages: Sequence[Message],
    decoded: _Decoded,
    partition: int,
    indices: list[int],
) -> list[str]:
    """The events of one partition's messages ``indices`` scored together; their outcomes."""
    columns, rows = decoded.batch.columns, decoded.batch.rows
    events: list[tuple[str, Activity, int | None, str | None]] = []
    for index in indices:
        row = rows[index - decoded.start]
        activity = decoded.activities[row]
        assert activity is not None  # not an erasure request
        customer_id = service._customer_id(columns.customer_ids[row])
        events.append((customer_id, activity, messages[index].offset, columns.event_ids[row]))
    event = enter_event(service.app, messages[indices[0]])  # the partition's changelog
    try:
        scores = service.engine.process_many(events, shard=partition)
    except Exception:
        logger.exception(
            "Scoring %d events of partition %d together failed: one at a time",
            len(events),
            partition,
        )
        for customer_id in {customer_id for customer_id, *_ in events}:
            service.states.discard(customer_id)
        return [_handle_one(service, messages[index], decoded, index) for index in indices]
    finally:
        del event
    outcomes = ["scored"] * len(indices)
    for scored in scores.scored:
        assert scored.event is not None
        message = messages[indices[scored.event]]
        if scored.duplicate:
            outcomes[scored.event] = "duplicate"
            service._emit(scored, None, None)
            continue
        ids = [events[n][3] for n in scored.alert_events]
        service._emit(scored, message.timestamp, None, alert_event_ids=ids)
    for rescored in scores.rescored:
        service._emit(rescored, None, None)
    if scores.rescored:
        service.metrics.rescores.inc(len(scores.rescored))
    for index, outcome in zip(indices, outcomes, strict=True):
        row = rows[index - decoded.start]
        service.metrics.event(columns.types[row], outcome)
    return outcomes
