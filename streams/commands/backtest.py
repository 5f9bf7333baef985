"""Backtest: the worker's scoring path run in-process over a history, scores as of a cutoff."""

from __future__ import annotations

import csv
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
from kafka.partitioner.default import murmur2

from online_models.customer.activity import Activity
from online_models.group.local import LocalGroup
from online_models.scoring.alert_policy import AlertIntent
from online_models.scoring.scorer import CustomerScore, CustomerScorer, ScorerConfig
from online_models.scoring.state import CustomerState
from schemas.events import AnyEvent
from schemas.items import CatalogueItem
from schemas.transaction_columns import EventColumns
from streams.commands.transactions import EventChunk
from streams.convert import activity_of

__all__ = [
    "SCORE_COLUMNS",
    "Backtest",
    "BacktestRow",
    "partition_of",
    "run_backtest",
    "write_scores",
]

logger = logging.getLogger(__name__)

#: Columns of the scores file, in order.
#: Events scored together (``ScoringEngine.process_many``), as a worker scores a fetch's: at
#: most this many, over at most ``BATCH_SECONDS`` of event time (a fetch spans seconds; a
#: batch spanning days would re-score silent customers days late).
BATCH_EVENTS = 1_000
BATCH_SECONDS = 3_600.0

SCORE_COLUMNS = (
    "customer_id",
    "churn_risk",
    "segment",
    "segment_name",
    "value",
    "monetary",
    "orders",
    "sentiment",
    "recommendations",
    "last_event",
    "as_of",
    "p_alive",
    "expected_orders",
    "predicted_clv",
    "next_order_expected",
    "churn_reasons",
    "segment_outlier",
    "outlier_score",
    "value_reasons",
)


@dataclass(frozen=True, slots=True)
class BacktestRow:
    """One customer's scores as of the cutoff."""

    customer_id: str
    score: CustomerScore
    recommendations: list[str]

    def to_csv(self) -> list[str]:
        """The row's cells, in ``SCORE_COLUMNS`` order."""
        score = self.score
        return [
            self.customer_id,
            f"{score.churn_risk:.6f}",
            str(score.segment),
            score.segment_name,
            f"{score.value:.6f}",
            f"{score.monetary:.2f}",
            str(score.orders),
            "" if score.sentiment is None else f"{score.sentiment:.6f}",
            orjson.dumps(self.recommendations).decode(),
            _iso(score.event_time),
            _iso(score.as_of),
            f"{score.p_alive:.6f}",
            f"{score.expected_orders:.4f}",
            f"{score.predicted_clv:.2f}",
            "" if score.next_order_expected is None else _iso(score.next_order_expected),
            orjson.dumps([reason.to_dict() for reason in score.churn_reasons]).decode(),
            "true" if score.segment_outlier else "false",
            "" if score.outlier_score is None else f"{score.outlier_score:.6f}",
            orjson.dumps([reason.to_dict() for reason in score.value_reasons]).decode(),
        ]


@dataclass(slots=True)
class Backtest:
    """What a backtest did: the scores as of the cutoff and what happened on the way.

    ``scorer`` is the first worker's (with one worker, the only one); ``states`` holds every
    customer's state, whichever worker scored them.
    """

    as_of: float
    rows: list[BacktestRow] = field(default_factory=list)
    events: int = 0
    ignored_after_cutoff: int = 0
    duplicates: int = 0
    rescores: int = 0
    alerts: Counter[str] = field(default_factory=Counter)
    #: Every alert raised: customer, type, event time, value at risk (churn alerts).
    alert_log: list[tuple[str, str, float, float | None]] = field(default_factory=list)
    labels: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    workers: int = 1
    model_version: int = 0
    scorer: CustomerScorer | None = None
    states: dict[str, CustomerState] = field(default_factory=dict)
    #: Every customer's score as of each snapshot time asked for (epoch seconds).
    snapshots: dict[float, dict[str, CustomerScore]] = field(default_factory=dict)


def partition_of(customer_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2 of the key) gives a customer.

    >>> [partition_of(c, 8) for c in ("c-1", "c-2", "c-42")]
    [7, 2, 4]
    """
    return (murmur2(customer_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


def run_backtest(
    events: Iterable[AnyEvent | EventChunk],
    as_of: datetime,
    config: ScorerConfig | None = None,
    *,
    workers: int = 1,
    partitions: int = 1,
    sync_seconds: float = 15.0,
    sync_all_parts: bool = False,
    progress: Callable[[int], None] | None = None,
    items: Iterable[CatalogueItem] | None = None,
    snapshots: Sequence[datetime] = (),
) -> Backtest:
    """Score ``events`` (in event-time order) that happened before ``as_of``, as the workers do.

    ``events`` are events, or chunks of a file's events (a
    :class:`~streams.commands.transactions.TransactionStream`): only a chunk at a time is held.
    The scoring path is the worker's (:class:`~online_models.scoring.engine.ScoringEngine`), in
    batches as a worker scores a fetch (``process_many``: at most :data:`BATCH_EVENTS` over
    at most :data:`BATCH_SECONDS` of event time): every event updates the models and its
    customer's state, silent customers are re-scored as
    event time moves on, and churn labels arrive when the stream reveals them. Customers are
    split over ``partitions`` as Kafka's default partitioner would (each partition has its own
    event time, as in the worker), the partitions over ``workers`` in turn, and the workers
    sync through the group's model every ``sync_seconds`` of event time
    (:class:`~online_models.group.local.LocalGroup`; one worker syncs only the parts where the
    group's model does what it does not, unless ``sync_all_parts``). Events at or
    after ``as_of`` are counted and ignored; at the end event time is moved to ``as_of``
    (re-scoring whoever is due), the workers sync, and every customer is scored by their
    worker as of that moment with the models frozen. ``progress`` is called with the count of
    events before ``as_of`` read so far. ``items`` is the catalogue every worker reads first
    (as from ``CRM_ITEMS_TOPIC``).

    At each of the ``snapshots`` before ``as_of``, once every earlier event is scored, event
    time is moved there and the workers sync as at the cutoff, and every customer's score as
    of that moment lands in :attr:`Backtest.snapshots` (without recommendations): the scores
    a backtest cut there would give, from the same run. The run then goes on; its re-scores
    and syncs at a snapshot are the only difference from a run without it.
    """
    started = time.perf_counter()
    cutoff = as_of.timestamp()
    group = LocalGroup(
        config or ScorerConfig(),
        workers=workers,
        sync_seconds=sync_seconds,
        sync_all_parts=sync_all_parts,
    )
    for item in items or ():
        document = item.model_dump(exclude_none=True)
        for scorer in group.scorers:
            scorer.catalogue.upsert(item.item_id, document)
    result = Backtest(as_of=cutoff, workers=workers, scorer=group.scorers[0])
    moments = sorted(t for t in (moment.timestamp() for moment in snapshots) if t < cutoff)
    shards: dict[str, int] = {}
    workers_of = [shard % workers for shard in range(partitions)]
    batch: list[tuple[str, Activity, str | None, int]] = []
    before = 0
    for customer_id, event_id, activity in _activities(events):
        if activity.time >= cutoff:
            result.ignored_after_cutoff += 1
            continue
        before += 1
        if progress is not None:
            progress(before)
        if batch and activity.time - batch[0][1].time >= BATCH_SECONDS:
            _score_batch(group, result, batch, workers_of)
        if moments and activity.time >= moments[0]:
            _score_batch(group, result, batch, workers_of)
            while moments and activity.time >= moments[0]:
                _snapshot(group, result, partitions, moments.pop(0))
        shard = shards.get(customer_id)
        if shard is None:
            shard = shards[customer_id] = partition_of(customer_id, partitions)
        batch.append((customer_id, activity, event_id, shard))
        if len(batch) >= BATCH_EVENTS:
            _score_batch(group, result, batch, workers_of)
    _score_batch(group, result, batch, workers_of)
    for moment in moments:
        _snapshot(group, result, partitions, moment)
    result.model_version = _settle(group, result, partitions, cutoff)
    for scorer, states in zip(group.scorers, group.states, strict=True):
        result.states.update(states)
        for customer_id in sorted(states):
            state = states[customer_id]
            score = scorer.score_as_of(state, cutoff)
            ranked = scorer.recommend(customer_id, state)
            result.rows.append(BacktestRow(customer_id, score, ranked))
    result.rows.sort(key=lambda row: row.customer_id)
    result.seconds = time.perf_counter() - started
    return result


def _score_batch(
    group: LocalGroup,
    result: Backtest,
    batch: list[tuple[str, Activity, str | None, int]],
    workers_of: list[int],
) -> None:
    """Score the events of ``batch`` (emptied) together, as a worker scores a fetch."""
    duplicates = result.duplicates
    for scores in group.process_many(batch, workers_of):
        for each in scores.scored:
            if each.duplicate:
                result.duplicates += 1
            _count(result, each.customer_id, each.outcome.alerts, each.outcome.labels)
        for each in scores.rescored:
            _count(result, each.customer_id, each.outcome.alerts, each.outcome.labels)
        result.rescores += len(scores.rescored)
    result.events += len(batch) - (result.duplicates - duplicates)
    batch.clear()


def write_scores(rows: Iterable[BacktestRow], path: Path) -> int:
    """Write the scores file (CSV with a header row); returns the rows written."""
    written = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(SCORE_COLUMNS)
        for row in rows:
            out.writerow(row.to_csv())
            written += 1
    return written


def _settle(group: LocalGroup, result: Backtest, partitions: int, time: float) -> int:
    """Move every partition's event time to ``time``, re-scoring whoever falls due, and sync
    the workers; returns the group model's version."""
    workers = len(group.engines)
    for shard in range(partitions):
        while rescored := group.engines[shard % workers].advance(time, shard):
            for each in rescored:
                result.rescores += 1
                _count(result, each.customer_id, each.outcome.alerts, each.outcome.labels)
    return group.sync()


def _snapshot(group: LocalGroup, result: Backtest, partitions: int, time: float) -> None:
    _settle(group, result, partitions, time)
    result.snapshots[time] = {
        customer_id: scorer.score_as_of(state, time)
        for scorer, states in zip(group.scorers, group.states, strict=True)
        for customer_id, state in states.items()
    }


def _activities(events: Iterable[AnyEvent | EventChunk]) -> Iterator[tuple[str, str, Activity]]:
    """``(customer_id, event_id, activity)`` of every event, chunks unpacked."""
    for event in events:
        if isinstance(event, EventColumns):
            yield from _column_activities(event)
        elif isinstance(event, list):
            for loaded in event:
                yield loaded.event.customer_id, loaded.event.event_id, activity_of(loaded.event)
        else:
            yield event.customer_id, event.event_id, activity_of(event)


def _column_activities(chunk: EventColumns) -> Iterator[tuple[str, str, Activity]]:
    """The activities of purchase and return rows, straight from their columns: the same as
    :func:`~streams.convert.activity_of` of each validated event."""
    for customer_id, event_id, is_return, moment, item_id, amount, quantity in zip(
        chunk.customer_ids, chunk.event_ids, chunk.returns.tolist(), chunk.times.tolist(),
        chunk.item_ids, chunk.amounts.tolist(), chunk.quantities.tolist(), strict=True,
    ):  # fmt: skip
        kind = "return" if is_return else "purchase"
        activity = Activity(kind, moment, item_id=item_id, amount=amount, quantity=quantity)
        yield customer_id, event_id, activity


def _count(
    result: Backtest, customer_id: str, alerts: Iterable[AlertIntent], labels: Iterable[bool]
) -> None:
    for alert in alerts:
        result.alerts[alert.type] += 1
        at_risk = alert.details.get("value_at_risk")
        result.alert_log.append((customer_id, alert.type, alert.time, at_risk))
    result.labels.update("churned" if label else "stayed" for label in labels)


def _iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=UTC).isoformat()
