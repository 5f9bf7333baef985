"""One customer event in, fresh scores and alerts out: the path shared by worker and backtest."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from online_models import __version__
from online_models.activity import DAY, Activity
from online_models.alert_policy import AlertIntent, AlertPolicy, AlertThresholds
from online_models.churn import ChurnModel, ChurnQuality, LabelSchedule, PendingExample
from online_models.recommend import Recommender
from online_models.segments import Segmenter
from online_models.sentiment import SentimentModel
from online_models.state import CustomerState
from online_models.value import ValueModel

__all__ = ["CustomerScore", "CustomerScorer", "ScoreOutcome", "ScorerConfig"]

logger = logging.getLogger(__name__)

# Implicit-feedback strength of each action for the recommender.
_INTERACTION_WEIGHTS = {"purchase": 1.0, "cart_add": 0.5, "view": 0.2}
_TEXT_KINDS = frozenset({"feedback", "support_ticket"})


@dataclass(frozen=True, slots=True)
class ScorerConfig:
    """Hyperparameters of every model and the alert thresholds."""

    churn_horizon_days: float = 90.0
    churn_sample_interval_days: float = 1.0
    churn_learning_rate: float = 0.05
    churn_l2: float = 1e-4
    quality_window: int = 1000
    segments: int = 6
    segment_halflife: float = 0.02
    segment_confirmations: int = 3
    top_k: int = 10
    allow_repurchase: bool = False
    recommender_factors: int = 16
    value_recency_halflife_days: float = 30.0
    alerts: AlertThresholds = field(default_factory=AlertThresholds)


@dataclass(frozen=True, slots=True)
class CustomerScore:
    """What the CRM reads about a customer after an event."""

    churn_risk: float
    segment: int
    segment_name: str
    value: float
    monetary: float
    orders: int
    recommendations: list[str]
    sentiment: float | None
    event_time: float
    model_version: str


@dataclass(frozen=True, slots=True)
class ScoreOutcome:
    """A scored event: the customer's new state and score, alerts, and labels learned."""

    state: CustomerState
    score: CustomerScore
    alerts: list[AlertIntent]
    labels: list[bool]


class CustomerScorer:
    """Updates every model with one customer's event and scores the customer.

    Churn labels come from the stream: the example taken at a score is labelled "stayed"
    when the customer acts again at least ``churn_sample_interval_days`` later but within the
    horizon, "churned" when the horizon passes in event time without activity (see
    :meth:`due_for_labels`) or at once on ``subscription_cancel``; only then is it learned.

    >>> scorer = CustomerScorer()
    >>> outcome = scorer.score("c1", None, Activity("purchase", 1.7e9, item_id="a", amount=9.5,
    ...                                             quantity=1))
    >>> outcome.score.orders, outcome.score.monetary, 0.0 <= outcome.score.churn_risk <= 1.0
    (1, 9.5, True)
    """

    def __init__(self, config: ScorerConfig | None = None) -> None:
        self.config = config or ScorerConfig()
        cfg = self.config
        self._churn = ChurnModel(learning_rate=cfg.churn_learning_rate, l2=cfg.churn_l2)
        self._quality = ChurnQuality(window=cfg.quality_window)
        self._segmenter = Segmenter(n_segments=cfg.segments, halflife=cfg.segment_halflife)
        self._value = ValueModel(recency_halflife_days=cfg.value_recency_halflife_days)
        self._sentiment = SentimentModel()
        self._recommender = Recommender(n_factors=cfg.recommender_factors)
        self._policy = AlertPolicy(cfg.alerts)
        self._schedules: dict[int, LabelSchedule] = {}
        self._horizon = cfg.churn_horizon_days * DAY
        self._events_learned = 0

    @property
    def churn_model(self) -> ChurnModel:
        """The churn model (read-only use: weights, labels learned)."""
        return self._churn

    @property
    def quality(self) -> ChurnQuality:
        """Rolling quality of served churn scores on their delayed labels."""
        return self._quality

    @property
    def segmenter(self) -> Segmenter:
        """The segmentation model."""
        return self._segmenter

    @property
    def recommender(self) -> Recommender:
        """The recommendation model."""
        return self._recommender

    @property
    def pending_labels(self) -> int:
        """Churn examples waiting for their label."""
        return sum(len(s) for s in self._schedules.values())

    @property
    def model_version_events(self) -> int:
        """Events the models have learned from."""
        return self._events_learned

    @property
    def model_version(self) -> str:
        """Scorer version plus how many events the models have learned."""
        return f"{__version__}+{self._events_learned}"

    def score(
        self, customer_id: str, state: CustomerState | None, activity: Activity, shard: int = 0
    ) -> ScoreOutcome:
        """Learn from ``activity`` and score the customer as of their latest event.

        ``shard`` groups customers whose state lives together (a Kafka partition): labels of
        a shard are only produced by :meth:`due_for_labels` for that shard.
        """
        cfg = self.config
        state = state if state is not None else CustomerState.new(activity.time)
        state.shard = shard
        profile = state.profile
        labels = self._resolve_pending(customer_id, state, activity, shard)

        first_event = profile.events == 0
        old_monetary, old_orders = profile.net_monetary, profile.orders
        tone = None
        if activity.kind in _TEXT_KINDS:
            tone = self._sentiment.predict_one(activity.text, activity.rating)
        profile.record(activity, tone)
        newly_cancelled = activity.kind == "subscription_cancel" and not state.cancelled
        if activity.kind == "subscription_cancel":
            state.cancelled = True
        elif activity.kind == "purchase":
            state.cancelled = False
        self._value.observe(
            None if first_event else old_monetary,
            None if first_event else old_orders,
            profile.net_monetary,
            profile.orders,
        )
        if activity.item_id is not None and activity.kind in _INTERACTION_WEIGHTS:
            basket = [i for i in profile.recent_items if i != activity.item_id]
            self._recommender.learn_one(
                customer_id,
                activity.item_id,
                time=activity.time,
                weight=_INTERACTION_WEIGHTS[activity.kind],
                basket=basket if activity.kind == "purchase" else (),
            )
        self._events_learned += 1

        now = profile.last_seen
        features = profile.churn_features(now)
        risk = 1.0 if state.cancelled else self._churn.risk(features)
        if state.pending is None and not state.cancelled:
            state.pending = PendingExample(now, features, risk)
            self._schedule_label(customer_id, now, shard)

        predicted = self._segmenter.learn_predict_one(profile.segment_features(now))
        left = state.confirm_segment(predicted, cfg.segment_confirmations)
        score = self._finish(customer_id, state, risk, now)
        alerts = self._alerts(
            state, score, left, now, features, tone, activity.kind, newly_cancelled
        )
        return ScoreOutcome(state, score, alerts, labels)

    def forget_schedules(self) -> None:
        """Drop every label deadline (the worker's partitions changed); see :meth:`reschedule`."""
        self._schedules.clear()

    def reschedule(
        self,
        customer_id: str,
        record: Mapping[str, Any],
        shards: Collection[int] | None = None,
    ) -> bool:
        """Schedule the label of a stored record's (``CustomerState.to_dict``) pending example.

        Only for records of ``shards`` when given; True if a label was scheduled.
        """
        example = CustomerState.pending_example_of(record)
        if example is None or (shards is not None and example[1] not in shards):
            return False
        time, shard = example
        self._schedule_label(customer_id, time, shard)
        return True

    def _schedule_label(self, customer_id: str, example_time: float, shard: int) -> None:
        self._schedule(shard).schedule(customer_id, example_time + self._horizon)

    def due_for_labels(self, watermark: float, shard: int = 0) -> list[str]:
        """Customers of ``shard`` whose pending example's horizon passed by ``watermark``."""
        return self._schedule(shard).pop_due(watermark)

    def label_silent(
        self, customer_id: str, state: CustomerState, watermark: float
    ) -> ScoreOutcome:
        """Label a silent customer's pending example "churned" and re-score them at ``watermark``.

        Call it for the customers :meth:`due_for_labels` returned; the new score shows the risk
        of a customer who has been silent for the whole horizon.
        """
        labels: list[bool] = []
        pending = state.pending
        if pending is not None and watermark - pending.time >= self._horizon:
            self._learn_label(pending, True, labels)
            state.pending = None
        profile = state.profile
        now = max(watermark, profile.last_seen)
        features = profile.churn_features(now)
        risk = 1.0 if state.cancelled else self._churn.risk(features)
        predicted = self._segmenter.predict_one(profile.segment_features(now))
        left = state.confirm_segment(predicted, self.config.segment_confirmations)
        score = self._finish(customer_id, state, risk, now)
        alerts = self._alerts(state, score, left, now, features, None, "silence")
        return ScoreOutcome(state, score, alerts, labels)

    def _schedule(self, shard: int) -> LabelSchedule:
        schedule = self._schedules.get(shard)
        if schedule is None:
            schedule = self._schedules[shard] = LabelSchedule()
        return schedule

    def _learn_label(self, pending: PendingExample, churned: bool, labels: list[bool]) -> None:
        self._quality.update(pending.risk, churned)
        self._churn.learn_one(pending.features, churned)
        labels.append(churned)

    def _resolve_pending(
        self, customer_id: str, state: CustomerState, activity: Activity, shard: int
    ) -> list[bool]:
        """Label the pending example with what this event tells about the customer."""
        labels: list[bool] = []
        pending = state.pending
        if pending is None:
            return labels
        cfg = self.config
        age = activity.time - pending.time
        if age >= self._horizon or activity.kind == "subscription_cancel":
            self._learn_label(pending, True, labels)
        elif age >= cfg.churn_sample_interval_days * DAY:
            self._learn_label(pending, False, labels)
        elif age < 0:
            return labels  # a late event from before the example: it changes nothing
        # Else too soon for a label: the example is retaken after this event, so its
        # horizon runs from the customer's latest activity.
        state.pending = None
        self._schedule(shard).cancel(customer_id)
        return labels

    def _finish(
        self, customer_id: str, state: CustomerState, risk: float, now: float
    ) -> CustomerScore:
        profile = state.profile
        segment = state.segment if state.segment is not None else 0
        exclude = () if self.config.allow_repurchase else profile.purchased_items
        recommendations = self._recommender.rank(
            customer_id, self.config.top_k, exclude=exclude, recent=profile.recent_items
        )
        value = self._value.value(
            profile.net_monetary, profile.orders, profile.days_since_order(now)
        )
        return CustomerScore(
            churn_risk=min(max(risk, 0.0), 1.0),
            segment=segment,
            segment_name=self._segmenter.describe(segment),
            value=min(max(value, 0.0), 1.0),
            monetary=profile.net_monetary,
            orders=profile.orders,
            recommendations=recommendations,
            sentiment=profile.sentiment,
            event_time=profile.last_seen,
            model_version=self.model_version,
        )

    def _alerts(
        self,
        state: CustomerState,
        score: CustomerScore,
        left_segment: int | None,
        now: float,
        features: dict[str, float],
        tone: float | None,
        kind: str,
        newly_cancelled: bool = False,
    ) -> list[AlertIntent]:
        policy = self._policy
        time = now
        if newly_cancelled:
            alerts = policy.cancellation(state.alerts, time=time)
        elif state.cancelled:
            alerts = []  # already alerted when the customer cancelled
        else:
            alerts = policy.churn(
                state.alerts,
                score.churn_risk,
                time=time,
                labels=self._churn.labels_learned,
                reasons=self._churn.explain_one(features),
            )
        # Ids of neighbouring clusters can trade customers without a change a CRM cares
        # about: only a move to a differently described segment is an alert.
        if (
            left_segment is not None
            and self._segmenter.describe(left_segment) != score.segment_name
        ):
            alerts += policy.segment_change(
                state.alerts,
                time=time,
                previous=left_segment,
                current=score.segment,
                names=(self._segmenter.describe(left_segment), score.segment_name),
                orders=score.orders,
                learned=self._segmenter.learned,
            )
        if tone is not None:
            alerts += policy.negative_feedback(
                state.alerts, time=time, sentiment=tone, value=score.value, kind=kind
            )
        return alerts
