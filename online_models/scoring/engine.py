"""The scoring loop the worker and the backtest share: states, watermarks, silent re-scores."""

from __future__ import annotations

import logging
import math
import sys
from collections import Counter
from collections.abc import Collection, MutableMapping, Sequence
from functools import partial
from itertools import repeat
from operator import attrgetter

import numpy as np

from online_models.customer.activity import DAY, Activity
from online_models.scoring.batch_events import EventLearner, EventScores
from online_models.scoring.batch_scoring import MIN_BATCH
from online_models.scoring.batch_votes import NO_SEGMENT
from online_models.scoring.deadlines import Deadlines
from online_models.scoring.score_types import ScoreOutcome
from online_models.scoring.scored import BatchScores, Event, Scored
from online_models.scoring.scorer import CustomerScorer
from online_models.scoring.state import CustomerState, event_fingerprint

__all__ = ["BatchScores", "Event", "Scored", "ScoringEngine"]

logger = logging.getLogger(__name__)

_CHANGED = attrgetter("changed")
_AS_OF = attrgetter("score.as_of")


def _segment(segment: int) -> int | None:
    """A served segment read from an array (:data:`NO_SEGMENT`: none)."""
    return None if segment == NO_SEGMENT else segment


#: Re-scores done for one event at most: after a rebalance or a quiet spell many customers
#: fall due at once, and the rest wait for the following events instead of blocking one.
MAX_RESCORES_PER_EVENT = 1_000


# A re-score's Scored, from (customer_id, outcome): no event, no alert's event.
_RESCORED = partial(tuple.__new__, Scored)
_NO_EVENT = (False, None, ())


class ScoringEngine:
    """Scores events in event-time order per shard and re-scores silent customers.

    ``states`` maps a customer id to their :class:`CustomerState`: a dict in the backtest,
    the Faust table (through a codec) in the worker. Each shard (a Kafka partition) has its
    own event-time watermark, the latest event time it has seen. Every customer has a
    deadline in a per-shard heap: when the shard's watermark passes it, the customer is
    re-scored (:meth:`CustomerScorer.refresh_many`, the shard's due customers together): at
    least once per ``rescore_interval_days`` of event time, with no scan over all customers.

    >>> from online_models.customer.activity import DAY
    >>> engine = ScoringEngine(CustomerScorer(), {})
    >>> first = engine.process("ann", Activity("purchase", 0.0, item_id="a", amount=5.0,
    ...                                         quantity=1))
    >>> [s.customer_id for s in first]
    ['ann']
    >>> later = engine.process("bob", Activity("view", 2.5 * DAY, item_id="a"))
    >>> [(s.customer_id, s.outcome.score.as_of / DAY) for s in later]
    [('bob', 2.5), ('ann', 2.5)]
    """

    def __init__(
        self,
        scorer: CustomerScorer,
        states: MutableMapping[str, CustomerState],
        *,
        event_id_window: int = 32,
    ) -> None:
        self.scorer = scorer
        self.states = states
        self.event_id_window = event_id_window
        self._deadlines: dict[int, Deadlines] = {}
        self._watermarks: dict[int, float] = {}
        #: Re-scores that raised (a bug or an unreadable stored state): see the log.
        self.rescore_errors = 0
        #: Events recognised as applied before and not applied again.
        self.duplicates = 0
        #: Customers of this engine's shards per served segment id (the confirmed one, or
        #: the density segmentation's ``unusual``).
        self.segment_sizes: Counter[int] = Counter()

    def watermark(self, shard: int = 0) -> float:
        """Latest event time seen on ``shard`` (-inf before its first event)."""
        return self._watermarks.get(shard, -math.inf)

    def scheduled(self, shard: int | None = None) -> int:
        """Customers waiting for a re-score (on ``shard``, or on every shard)."""
        if shard is not None:
            return len(self._deadlines.get(shard, ()))
        return sum(len(deadlines) for deadlines in self._deadlines.values())

    def process(
        self,
        customer_id: str,
        activity: Activity,
        shard: int = 0,
        *,
        offset: int | None = None,
        event_id: str | None = None,
    ) -> list[Scored]:
        """Score one event, then re-score the shard's customers the event's time made due.

        The event's own score comes first; every score returned must be published.

        An event applied before (``offset`` at or below the customer's latest applied offset
        of ``shard``, or ``event_id`` among their ``event_id_window`` latest ids) changes
        nothing: its one score is the stored state's, marked ``duplicate``.
        """
        # One string per customer, however many events name them: the table, the schedule
        # and the recommender each keep the id.
        customer_id = sys.intern(customer_id)
        state = self.states.get(customer_id)
        fingerprint = None if event_id is None else event_fingerprint(event_id)
        before = None if state is None else self.scorer.served_segment(state)
        if state is None:
            state = CustomerState.new(activity.time)
        elif state.has_applied(shard, offset, fingerprint):
            self.duplicates += 1
            score = self.scorer.score_as_of(state, state.last_scored_at())
            return [Scored(customer_id, ScoreOutcome(state, score, [], [], False), True)]
        state.record_applied(shard, offset, fingerprint, window=self.event_id_window)
        outcome = self.scorer.score(customer_id, state, activity, shard)
        self.states[customer_id] = outcome.state
        self._count_segment(before, self.scorer.served_segment(outcome.state))
        self._schedule(customer_id, outcome.state, outcome.score.as_of, shard)
        watermark = max(self.watermark(shard), activity.time)
        return [Scored(customer_id, outcome), *self.advance(watermark, shard)]

    def process_many(self, events: Sequence[Event], shard: int = 0) -> BatchScores:
        """Score a batch of one shard's events (in delivery order), then move the shard's
        watermark once, to the batch's latest event time, and re-score whoever fell due (at
        most ``MAX_RESCORES_PER_EVENT`` per event of the batch).

        Each touched customer's state is read once and written once; the events are learned
        one at a time, each customer scored once as of their latest event, with the others
        as arrays (:class:`~online_models.scoring.batch_events.EventLearner`). An event applied
        before is recognised as :meth:`process` recognises it.

        An event that raises while it is learned fails its customer alone: the others are
        scored, and the failing customer's events come back in ``retry`` (the caller reverts
        that customer to their stored state and scores them one at a time; the models learn
        their events before the failing one twice). What raises while the batch is scored
        together leaves every learned event learned and applied, the states written back:
        a retry one at a time finds them applied and republishes their stored scores.
        """
        if len({event[0] for event in events}) < MIN_BATCH or self.scorer.churn_model.kind != (
            "logistic"
        ):
            return self._process_one_by_one(events, shard)
        learner = EventLearner(self.scorer, shard)
        read: dict[str, CustomerState] = {}
        before: dict[str, int | None] = {}
        duplicates: list[tuple[str, int]] = []
        applied: list[tuple[str, CustomerState, Activity, int]] = []
        watermark = self.watermark(shard)
        for n, (customer_id, activity, offset, event_id) in enumerate(events):
            customer_id = sys.intern(customer_id)
            state = read.get(customer_id)
            if state is None:
                state = self.states.get(customer_id)
                if state is not None:
                    read[customer_id] = state
            fingerprint = None if event_id is None else event_fingerprint(event_id)
            if state is None:
                state = read[customer_id] = CustomerState.new(activity.time)
                before[customer_id] = None
            elif state.has_applied(shard, offset, fingerprint):
                self.duplicates += 1
                duplicates.append((customer_id, n))
                continue
            elif customer_id not in before:
                before[customer_id] = self.scorer.served_segment(state)
            state.record_applied(shard, offset, fingerprint, window=self.event_id_window)
            applied.append((customer_id, state, activity, n))
            watermark = max(watermark, activity.time)
        learner.evaluate_recommendations([applied_event[:3] for applied_event in applied])
        failed: set[str] = set()
        for customer_id, state, activity, n in applied:
            if customer_id in failed:
                continue
            try:
                learner.learn(customer_id, state, activity, n)
            except Exception:
                logger.exception("Learning event %d of customer %s failed", n, customer_id)
                failed.add(customer_id)
                learner.drop(customer_id)
        try:
            scores = learner.score()
        except Exception:
            # What was learned stays learned and recorded as applied: the states go back to
            # the table, so the caller's retry one at a time finds the events applied and
            # republishes the stored scores, and no model learns an event twice.
            for customer_id, state in read.items():
                if customer_id not in failed:
                    self.states[customer_id] = state
            raise
        scored = [
            self._duplicate(customer_id, read[customer_id], n) for customer_id, n in duplicates
        ]
        self._store_events(scores, before, shard)
        scored += map(Scored, scores.customer_ids, scores.outcomes, repeat(False), scores.events,
                      scores.alert_events)  # fmt: skip
        retry = tuple(n for customer_id, _, _, n in applied if customer_id in failed)
        return BatchScores(
            scored, self.advance(watermark, shard, MAX_RESCORES_PER_EVENT * len(events)), retry
        )

    def _duplicate(self, customer_id: str, state: CustomerState, event: int) -> Scored:
        """The stored score of a customer whose event was applied before."""
        score = self.scorer.score_as_of(state, state.last_scored_at())
        return Scored(customer_id, ScoreOutcome(state, score, [], [], False), True, event)

    def _store_events(self, scores: EventScores, before: dict[str, int | None], shard: int) -> None:
        """Write each touched customer's state once, schedule their next re-scores and count
        the segments they moved between."""
        states, scorer = self.states, self.scorer
        touched = [outcome.state for outcome in scores.outcomes]
        for customer_id, state in zip(scores.customer_ids, touched, strict=True):
            states[customer_id] = state
            self._count_segment(before[customer_id], scorer.served_segment(state))
        as_of = np.fromiter((o.score.as_of for o in scores.outcomes), float, len(touched))
        deadlines = scorer.next_refresh_many(touched, as_of)
        schedule = self._deadlines.setdefault(shard, Deadlines())
        later = np.isfinite(deadlines)
        schedule.schedule_many(
            [scores.customer_ids[i] for i in np.flatnonzero(later).tolist()],
            deadlines[later].tolist(),
        )
        for i in np.flatnonzero(~later).tolist():
            schedule.cancel(scores.customer_ids[i])

    def _process_one_by_one(self, events: Sequence[Event], shard: int) -> BatchScores:
        """:meth:`process_many` by :meth:`process` of each event (each moving the watermark);
        each event's re-scores follow it (``rescored_after``)."""
        scored: list[Scored] = []
        rescored: list[Scored] = []
        after: list[int] = []
        for n, (customer_id, activity, offset, event_id) in enumerate(events):
            own, *rest = self.process(
                customer_id, activity, shard, offset=offset, event_id=event_id
            )
            alerts = (n,) * len(own.outcome.alerts)
            scored.append(own._replace(event=n, alert_events=alerts))
            rescored += rest
            after += [n + 1] * len(rest)
        return BatchScores(scored, rescored, rescored_after=tuple(after))

    def advance(
        self, watermark: float, shard: int = 0, limit: int | None = MAX_RESCORES_PER_EVENT
    ) -> list[Scored]:
        """Move the shard's event time to ``watermark`` and re-score whoever is due by then.

        At most ``limit`` customers (earliest deadlines first); the others stay due for the
        next call. Never raises: a customer whose re-score fails is logged, counted in
        :attr:`rescore_errors` and left unscheduled until their next event.
        """
        self._watermarks[shard] = max(self.watermark(shard), watermark)
        deadlines = self._deadlines.get(shard)
        if deadlines is None:
            return []
        due = self._due(deadlines.pop_due(watermark, limit), watermark, shard)
        if not due:
            return []
        try:
            before = self.scorer.served_segments([state for _, state in due])
        except Exception:  # an unreadable stored state: the others are re-scored all the same
            due, before = self._served_one_by_one(due)
            if not due:
                return []
        failed: set[str] = set()

        def on_error(customer_id: str, error: Exception) -> None:
            failed.add(customer_id)
            self._rescore_failed(customer_id, error)

        outcomes = self.scorer.refresh_many(due, watermark, on_error=on_error)
        if failed:
            kept = [i for i, (customer_id, _) in enumerate(due) if customer_id not in failed]
            due, before = [due[i] for i in kept], before[kept]
        customer_ids = [customer_id for customer_id, _ in due]
        try:
            self._store(customer_ids, outcomes, before, shard)
        except Exception:
            logger.exception("Storing %d re-scores together failed", len(outcomes))
            return self._store_one_by_one(customer_ids, outcomes, before, shard)
        return [_RESCORED((c, o, *_NO_EVENT)) for c, o in zip(customer_ids, outcomes, strict=True)]

    def _served_one_by_one(
        self, due: list[tuple[str, CustomerState]]
    ) -> tuple[list[tuple[str, CustomerState]], np.ndarray]:
        """The customers of ``due`` whose served segment can be read, and those segments."""
        kept, segments = [], []
        for customer_id, state in due:
            try:
                segment = self.scorer.served_segment(state)
            except Exception:
                self._rescore_failed(customer_id)
                continue
            kept.append((customer_id, state))
            segments.append(NO_SEGMENT if segment is None else segment)
        return kept, np.array(segments, dtype=np.int64)

    def _due(
        self, customer_ids: list[str], watermark: float, shard: int
    ) -> list[tuple[str, CustomerState]]:
        """The customers of ``customer_ids`` (popped from the schedule) still to re-score:
        stored, on ``shard`` and with re-scores left as of the previous interval."""
        found = []
        for customer_id in customer_ids:
            try:
                state = self.states.get(customer_id)
            except Exception:
                self._rescore_failed(customer_id)
                continue
            # Forgotten, or it moved to another shard meanwhile.
            if state is not None and state.shard == shard:
                found.append((customer_id, state))
        if not found:
            return []
        # Re-scores left as of the previous interval; NaN: done with them before anyone
        # watched (e.g. a rebalance).
        previous = watermark - self.scorer.config.rescore_interval_days * DAY
        try:
            left = self.scorer.next_refresh_many([state for _, state in found], previous)
        except Exception:
            return [c for c in found if self._still_rescored(*c, previous)]
        return [c for c, due in zip(found, np.isfinite(left).tolist(), strict=True) if due]

    def _still_rescored(self, customer_id: str, state: CustomerState, now: float) -> bool:
        try:
            return self.scorer.next_refresh(state, now) is not None
        except Exception:
            self._rescore_failed(customer_id)
            return False

    def _store(
        self,
        customer_ids: list[str],
        outcomes: Sequence[ScoreOutcome],
        before: np.ndarray,
        shard: int,
    ) -> None:
        """Write the states the re-scores changed, schedule every customer's next re-score and
        count the segments they moved between."""
        changed = np.fromiter(map(_CHANGED, outcomes), bool, len(outcomes))
        rows = np.flatnonzero(changed).tolist()
        states = self.states
        for i in rows:
            states[customer_ids[i]] = outcomes[i].state
        re_scored = [outcome.state for outcome in outcomes]
        as_of = np.fromiter(map(_AS_OF, outcomes), float, len(outcomes))
        deadlines = self.scorer.next_refresh_many(re_scored, as_of)
        schedule = self._deadlines.setdefault(shard, Deadlines())
        later = np.isfinite(deadlines)
        schedule.schedule_many(
            [customer_ids[i] for i in np.flatnonzero(later).tolist()], deadlines[later].tolist()
        )
        for i in np.flatnonzero(~later).tolist():
            schedule.cancel(customer_ids[i])
        after = before.copy()
        after[rows] = self.scorer.served_segments([re_scored[i] for i in rows])
        self._count_segments(before, after)

    def _store_one_by_one(
        self,
        customer_ids: list[str],
        outcomes: Sequence[ScoreOutcome],
        before: np.ndarray,
        shard: int,
    ) -> list[Scored]:
        rescored = []
        for customer_id, outcome, segment in zip(
            customer_ids, outcomes, before.tolist(), strict=True
        ):
            try:
                if outcome.changed:
                    self.states[customer_id] = outcome.state
                    self._count_segment(
                        _segment(segment), self.scorer.served_segment(outcome.state)
                    )
                self._schedule(customer_id, outcome.state, outcome.score.as_of, shard)
            except Exception:
                self._rescore_failed(customer_id)
                continue
            rescored.append(Scored(customer_id, outcome))
        return rescored

    def _rescore_failed(self, customer_id: str, error: BaseException | None = None) -> None:
        self.rescore_errors += 1
        logger.error("Re-scoring customer %s failed", customer_id, exc_info=error or True)

    def reset(self) -> None:
        """Forget every deadline (the shards this engine looks after are about to change)."""
        self._deadlines.clear()
        self.segment_sizes.clear()
        self.scorer.pending_labels = 0

    def adopt(self, customer_id: str, state: CustomerState, shards: Collection[int]) -> bool:
        """Schedule a stored customer's next re-score if they live on one of ``shards``.

        After :meth:`reset`, for a worker whose partitions changed: the deadline is counted
        from the customer's latest event or example, so the shard's next events re-score
        whoever fell due while nobody owned it (at most ``MAX_RESCORES_PER_EVENT`` per event),
        skipping customers whose re-scores had already ended by then. True if scheduled.
        """
        if state.shard is None or state.shard not in shards:
            return False
        self._count_segment(None, self.scorer.served_segment(state))
        self.scorer.pending_labels += len(state.pending)
        return self._schedule(customer_id, state, state.last_scored_at(), state.shard)

    def forget(self, customer_id: str) -> dict[str, bool | int]:
        """Erase what this engine and its models keep of one customer (an erasure request):
        their state with its pending churn and value examples and their own latent factors,
        and their re-score deadline. Returns what there was to remove.

        What shared parameters learned from them (churn weights, segment centres, item
        factors, co-purchase counts, popularity) cannot be taken out, and stays.
        """
        customer_id = sys.intern(customer_id)
        state = self.states.get(customer_id)
        pending = values = 0
        if state is not None:
            pending, values = len(state.pending), len(state.value_pending)
            del self.states[customer_id]
            self._count_segment(self.scorer.served_segment(state), None)
            self.scorer.pending_labels = max(self.scorer.pending_labels - pending, 0)
        scheduled = False
        for deadlines in self._deadlines.values():
            scheduled = deadlines.cancel(customer_id) or scheduled
        return {
            "state": state is not None,
            "pending_labels": pending,
            "value_labels": values,
            "rescore_schedule": scheduled,
            "recommender_user_factors": state is not None and state.latent is not None,
        }

    def segment_counts(self) -> dict[str, int]:
        """Customers per segment, by the segments' current names (two ids may share one)."""
        counts: Counter[str] = Counter()
        for segment, customers in self.segment_sizes.items():
            if customers > 0:
                counts[self.scorer.segmenter.describe(segment)] += customers
        return dict(counts)

    def _count_segments(self, before: np.ndarray, after: np.ndarray) -> None:
        """:meth:`_count_segment` of the customers whose served segment moved."""
        moved = np.flatnonzero(before != after)
        for was, now in zip(before[moved].tolist(), after[moved].tolist(), strict=True):
            self._count_segment(_segment(was), _segment(now))

    def _count_segment(self, before: int | None, after: int | None) -> None:
        if before == after:
            return
        if before is not None:
            self.segment_sizes[before] -= 1
        if after is not None:
            self.segment_sizes[after] += 1

    def _schedule(self, customer_id: str, state: CustomerState, now: float, shard: int) -> bool:
        deadline = self.scorer.next_refresh(state, now)
        deadlines = self._deadlines.get(shard)
        if deadlines is None:
            deadlines = self._deadlines[shard] = Deadlines()
        if deadline is None:
            deadlines.cancel(customer_id)
            return False
        deadlines.schedule(customer_id, deadline)
        return True
