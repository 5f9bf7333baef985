"""Events scored as a batch: each event learned in delivery order, each customer scored once.

:class:`EventLearner` does for a batch of events what :meth:`CustomerScorer.score` does for
each, split in two:

- **learn**, per event in delivery order (each customer's events in their order):
  :meth:`CustomerScorer.learn_event` (the recommendations' hit rate, the pending examples'
  labels, the profile, the value model's totals, the recommender's step, the sentiment of a
  text) and the alerts that belong to the event itself, at its time: a cancellation, and
  negative feedback from a top-value customer;
- **predict**, once per customer, as of their latest event, over arrays with the machinery
  re-scores use (:class:`~online_models.scoring.batch_scoring._Batch`): the lifetime
  sample's totals, churn risk and its reasons, a new pending example when none waits, the
  segment placement (a point learned for a customer whose events began a new event-time
  day), the score, and the churn, segment and unusual-customer alerts.

Where this differs from scoring the same events one at a time (see the README's
*Throughput*): a customer with several events in one batch is scored, takes a pending example
and casts a segment vote once, as of the latest; their earlier events' examples, which one by
one would be labelled "stayed" by the later events when a day or more apart, are not taken;
the segment centres learn the batch's points as a mini-batch; the lifetime sample takes each
customer's totals once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from online_models.customer.activity import Activity
from online_models.scoring.alert_policy import AlertIntent
from online_models.scoring.batch_scoring import _Batch
from online_models.scoring.score_types import ScoreOutcome
from online_models.scoring.state import CustomerState
from online_models.segments.outliers import Placements

if TYPE_CHECKING:
    from online_models.scoring.scorer import CustomerScorer
__all__ = ["EventLearner", "EventScores"]

logger = logging.getLogger(__name__)


class _Touched:
    """One customer's events of a batch as learned so far."""

    __slots__ = ("alert_events", "alerts", "kind", "labels", "latest", "new_day", "state")

    def __init__(self, state: CustomerState) -> None:
        self.state = state
        self.labels: list[bool] = []
        self.new_day = False
        self.kind = ""
        self.latest = -1
        self.alerts: list[AlertIntent] = []
        self.alert_events: list[int] = []


class EventScores(NamedTuple):
    """The customers a batch of events touched, in order of their first event, each with
    their score as of their latest event (``events``: its index in the batch) and, for each
    alert of the outcome, the index of the event that raised it."""

    customer_ids: list[str]
    outcomes: list[ScoreOutcome]
    events: list[int]
    alert_events: list[tuple[int, ...]]


class EventLearner:
    """Learns a batch's events one at a time (:meth:`learn`), then scores each customer they
    touched once, together (:meth:`score`).

    >>> from online_models.scoring.scorer import CustomerScorer
    >>> learner = EventLearner(CustomerScorer())
    >>> ann, bob = CustomerState.new(0.0), CustomerState.new(0.0)
    >>> learner.learn("ann", ann, Activity("purchase", 0.0, item_id="a", amount=5.0, quantity=1), 0)
    >>> learner.learn("bob", bob, Activity("view", 60.0, item_id="a"), 1)
    >>> learner.learn("ann", ann, Activity("view", 120.0, item_id="b"), 2)
    >>> scores = learner.score()
    >>> scores.customer_ids, scores.events, [o.score.orders for o in scores.outcomes]
    (['ann', 'bob'], [2, 1], [1, 0])
    """

    def __init__(self, scorer: CustomerScorer, shard: int = 0) -> None:
        self.scorer = scorer
        self.shard = shard
        self._touched: dict[str, _Touched] = {}
        self._examples: list[tuple[dict[str, float], bool]] = []

    def __len__(self) -> int:
        return len(self._touched)

    def learn(self, customer_id: str, state: CustomerState, activity: Activity, event: int) -> None:
        """Learn one event of the batch (``event``: its index) into ``state``."""
        touched = self._touched.get(customer_id)
        if touched is None:
            touched = self._touched[customer_id] = _Touched(state)
        scorer = self.scorer
        learned = scorer.learn_event(
            customer_id, state, activity, self.shard, evaluate=False, examples=self._examples
        )
        if learned.labels:
            touched.labels += learned.labels
        touched.new_day |= learned.new_day
        touched.kind, touched.latest = activity.kind, event
        if learned.newly_cancelled or learned.tone is not None:
            alerts = self._event_alerts(state, activity, learned.tone, learned.newly_cancelled)
            touched.alerts += alerts
            touched.alert_events += [event] * len(alerts)

    def drop(self, customer_id: str) -> None:
        """Leave a customer out of the batch's scores (one of their events failed)."""
        self._touched.pop(customer_id, None)

    def _event_alerts(
        self, state: CustomerState, activity: Activity, tone: float | None, cancelled: bool
    ) -> list[AlertIntent]:
        """The alerts an event raises by itself, at the customer's latest event time (as
        ``CustomerScorer._alerts`` dates them)."""
        policy, profile = self.scorer._policy, state.profile
        now = profile.last_seen
        alerts = policy.cancellation(state.alerts, time=now) if cancelled else []
        if tone is not None and tone <= policy.thresholds.negative_sentiment:
            value = self.scorer.value_model.value(
                profile.net_monetary, profile.orders, profile.days_since_order(now)
            )
            alerts += policy.negative_feedback(
                state.alerts, time=now, sentiment=tone, value=min(max(value, 0.0), 1.0),
                kind=activity.kind,
            )  # fmt: skip
        return alerts

    def evaluate_recommendations(
        self, events: Sequence[tuple[str, CustomerState, Activity]]
    ) -> None:
        """The recommendations' hit rate on the first line of each customer's first new basket
        of the batch, before any is learned (as ``CustomerScorer._evaluate_recommendations``
        does for one event), their lists ranked together from the states as the batch found
        them: the lists the customers' Redis hashes held.
        """
        hit_rate, scorer = self.scorer.recommendation_quality, self.scorer
        last_order: dict[str, float | None] = {}
        events_before: dict[str, int] = {}
        judged: set[str] = set()
        states, items, times = [], [], []
        for customer_id, state, activity in events:
            profile = state.profile
            seen = events_before.get(customer_id, profile.events)
            events_before[customer_id] = seen + 1
            last = last_order.get(customer_id, profile.last_order_at)
            if activity.kind != "purchase":
                continue
            if last is None or activity.time > last:
                last_order[customer_id] = activity.time
            if (
                activity.item_id is None
                or seen == 0
                or (last is not None and activity.time <= last)
            ):
                continue  # a customer's first event, a further line of a basket, a late one
            # A customer's first new basket of the batch only: their list as the batch found
            # it was never served after it (one at a time, the basket would have been learned
            # and its items left out of the next list), so a second basket bought again
            # would count as a hit it was not.
            if customer_id not in judged and hit_rate.due():
                judged.add(customer_id)
                states.append(state)
                items.append(activity.item_id)
                times.append(activity.time)
        if states:
            scorer._judge(states, items, times)

    def score(self) -> EventScores:
        """Every touched customer's score as of their latest event, computed together."""
        if self._examples:  # the same steps as learning each label when it came
            features, churned = zip(*self._examples, strict=True)
            self.scorer.churn_model.learn_many(list(features), list(churned))
            self._examples = []
        customer_ids = list(self._touched)
        touched = list(self._touched.values())
        if not touched:
            return EventScores([], [], [], [])
        customers = [(c, t.state) for c, t in zip(customer_ids, touched, strict=True)]
        outcomes = _EventBatch(self.scorer, customers, touched).score()
        alert_events = []
        for n, (outcome, each) in enumerate(zip(outcomes, touched, strict=True)):
            if each.alerts:  # the event's own alerts first, then the score's
                outcomes[n] = outcome._replace(alerts=[*each.alerts, *outcome.alerts])
            alert_events.append((*each.alert_events, *[each.latest] * len(outcome.alerts)))
        return EventScores(customer_ids, outcomes, [t.latest for t in touched], alert_events)


class _EventBatch(_Batch):
    """The customers of a batch of events scored together as of their latest event: a
    re-score's arrays, with an event's rules for examples, segment points and alerts."""

    def __init__(
        self,
        scorer: CustomerScorer,
        customers: Sequence[tuple[str, CustomerState]],
        touched: Sequence[_Touched],
    ) -> None:
        latest = np.fromiter((t.state.profile.last_seen for t in touched), float, len(touched))
        super().__init__(scorer, customers, latest)
        self.labels = [t.labels for t in touched]
        self.new_day = np.fromiter((t.new_day for t in touched), bool, len(touched))
        self.kinds = [t.kind for t in touched]

    def score(self) -> list[ScoreOutcome]:
        """Every model's numbers, the examples, votes, scores and alerts."""
        self._observe_lifetime()
        self._predict()
        return self._finish(None)

    def _takes(self) -> np.ndarray:
        # As after an event one at a time: a new example when none waits for a label.
        return ~self.cancelled & np.isinf(self.oldest)

    def _place(self, points: np.ndarray) -> Placements:
        """Placements as of each customer's latest event: a point learned (as a mini-batch)
        for those whose events began a new event-time day, the others placed only."""
        segmenter, learn = self.scorer.segmenter, self.new_day
        count = len(points)
        segments = np.zeros(count, np.int64)
        scores, outliers = np.zeros(count), np.zeros(count, bool)
        rows = np.flatnonzero(learn)
        if len(rows):
            learned = segmenter.learn_place_many(points[rows], self.at[rows])
            segments[rows], scores[rows], outliers[rows] = learned
        for i in np.flatnonzero(~learn).tolist():
            features = self.states[i].profile.segment_features(float(self.at[i]))
            placed = segmenter.place_one(features)
            segments[i], scores[i], outliers[i] = (
                placed.segment,
                placed.outlier_score,
                placed.outlier,
            )
        return Placements(segments, scores, outliers)

    def _counted(self) -> np.ndarray:
        return self.new_day

    def _changed(self) -> np.ndarray:
        return np.ones(len(self.states), dtype=bool)

    def _kind(self, i: int) -> str:
        return self.kinds[i]
