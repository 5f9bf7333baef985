"""A fetch's decoded events scored as batches: one ``process_many`` per partition and run."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from faust.types import Message

from online_models.customer.activity import Activity
from online_models.scoring.engine import Scored
from streams.batching import enter_event
from streams.dead_lettering import position as _position

if TYPE_CHECKING:
    from streams.app import ScorerService, _Decoded

__all__ = [
    "MIN_RUN",
    "RUN_EVENTS",
    "RUN_SECONDS",
    "handle_one",
    "run_end",
    "run_limit",
    "score_run",
]

logger = logging.getLogger(__name__)

#: The most messages scored in one run. A run holds the event loop (no await inside), so the
#: worker sizes each run to what its latest runs cost per message (:func:`run_limit`): 500 at
#: the batch path's ~40 us, fewer where events go one at a time (~1 ms: a run of fewer than
#: ``MIN_BATCH`` customers, the tree churn model, a retry).
RUN_EVENTS = 500
#: The fewest messages a run is cut to, however slow the last ones were.
MIN_RUN = 16
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


def run_limit(seconds_each: float, budget: float) -> int:
    """How many messages a run may hold to last about ``budget`` seconds at ``seconds_each``
    a message: between :data:`MIN_RUN` and :data:`RUN_EVENTS`.

    >>> run_limit(40e-6, 0.02), run_limit(1e-3, 0.02), run_limit(0.0, 0.02)
    (500, 20, 500)
    """
    if seconds_each <= 0.0:
        return RUN_EVENTS
    return max(MIN_RUN, min(RUN_EVENTS, round(budget / seconds_each)))


def run_end(
    messages: Sequence[Message],
    decoded: _Decoded,
    start: int,
    generation: int | None,
    limit: int = RUN_EVENTS,
) -> int:
    """Where the run of messages from ``start`` ends: at the end of the decoded chunk, at an
    erasure request (what it erases must be scored before it and not after), at a message
    of another consumer generation, at an event more than :data:`RUN_SECONDS` of event time
    from the run's first, or after ``limit`` messages. ``start`` itself when it is an
    erasure (handled alone)."""
    stop = min(decoded.end, start + limit)
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
            outcomes[index - start] = handle_one(service, message, decoded, index)
    for partition, indices in partitions.items():
        scored = _score_partition(service, messages, decoded, partition, indices)
        for index, outcome in zip(indices, scored, strict=True):
            outcomes[index - start] = outcome
    return outcomes


def handle_one(service: ScorerService, message: Message, decoded: _Decoded, index: int) -> str:
    """One message through :meth:`ScorerService._handle` (an erasure request, bad input, or
    an event scored alone), in its partition's changelog context; a bug there is logged and
    the message acknowledged as failed, not retried forever."""
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
        # Every event it learned stays learned and applied (and its state written back): one
        # at a time, those are duplicates whose stored scores are published again, and an
        # event that fails again is dead-lettered alone (``_handle``).
        logger.exception(
            "Scoring %d events of partition %d together failed: one at a time",
            len(events),
            partition,
        )
        return [handle_one(service, messages[index], decoded, index) for index in indices]
    finally:
        del event
    outcomes = ["scored"] * len(indices)
    # In the order they were made: the writer keeps a customer's last score.
    for scored in scores.in_order():
        if scored.event is None:  # a re-score
            _emit(service, scored, None, ())
            continue
        message = messages[indices[scored.event]]
        if scored.duplicate:
            outcomes[scored.event] = "duplicate"
            _emit(service, scored, None, ())
            continue
        ids = [events[n][3] for n in scored.alert_events]
        _emit(service, scored, message.timestamp, ids)
    if scores.rescored:
        service.metrics.rescores.inc(len(scores.rescored))
    if scores.retry:
        # A customer one of whose events failed while it was learned: back to their stored
        # state, their events one at a time, so only the failing one is dead-lettered.
        for customer_id in {events[n][0] for n in scores.retry}:
            service.states.discard(customer_id)
        for n in scores.retry:
            index = indices[n]
            outcomes[n] = handle_one(service, messages[index], decoded, index)
    for n, (index, outcome) in enumerate(zip(indices, outcomes, strict=True)):
        if n in scores.retry:
            continue  # counted by _handle
        row = rows[index - decoded.start]
        service.metrics.event(columns.types[row], outcome)
    return outcomes


def _emit(
    service: ScorerService, scored: Scored, produced_at: float | None, ids: Sequence[str | None]
) -> None:
    """Queue a score for Redis and its alerts for the topic; a failure is logged, and fails
    neither the run nor the event: its state is stored, and the customer's next score (their
    next event or re-score) is published."""
    try:
        if ids:
            service._emit(scored, produced_at, None, alert_event_ids=list(ids))
        else:
            service._emit(scored, produced_at, None)
    except Exception:
        logger.exception("Publishing the score of customer %s failed", scored.customer_id)
