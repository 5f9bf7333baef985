"""What is sequential in scoring an event: the per-event learning every score begins with."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from online_models.churn.labels import PendingExample
from online_models.churn.model import ChurnModel
from online_models.churn.quality import ChurnQuality
from online_models.customer.activity import DAY, Activity
from online_models.recommend.quality import RecommendationQuality
from online_models.recommend.recommender import Recommender
from online_models.scoring.score_types import Learned, ScorerConfig
from online_models.scoring.state import CustomerState
from online_models.scoring.value_learning import ValueLearning
from online_models.sentiment import SentimentModel
from online_models.value.ranks import ValueModel

__all__ = ["LATENT", "EventLearning"]

logger = logging.getLogger(__name__)

# Implicit-feedback strength of each action for the recommender.
_INTERACTION_WEIGHTS = {"purchase": 1.0, "cart_add": 0.5, "view": 0.2}
_TEXT_KINDS = frozenset({"feedback", "support_ticket"})
#: A customer's latent factors in their state: float32, little-endian.
LATENT = np.dtype("<f4")
_LATENT = LATENT


class EventLearning(ValueLearning):
    """The per-event learning of :class:`~online_models.scoring.scorer.CustomerScorer` (a part of
    it): the recommendations' hit rate, the pending examples' labels, the profile, the value
    model's totals and the recommender's step."""

    config: ScorerConfig
    _churn: ChurnModel
    _quality: ChurnQuality
    _value: ValueModel
    _sentiment: SentimentModel
    _recommender: Recommender
    _hit_rate: RecommendationQuality
    _horizon: float
    _events_learned: int
    _pending: int

    def recommend(self, customer_id: str, state: CustomerState) -> list[str]:
        raise NotImplementedError  # the scorer's

    def _judge(
        self, states: Sequence[CustomerState], items: Sequence[str], times: Sequence[float]
    ) -> None:
        raise NotImplementedError  # the scorer's

    def learn_event(
        self,
        customer_id: str,
        state: CustomerState,
        activity: Activity,
        shard: int = 0,
        *,
        evaluate: bool = True,
        examples: list[tuple[dict[str, float], bool]] | None = None,
    ) -> Learned:
        """What is sequential in scoring an event, changing ``state`` and the models: the
        recommendations' hit rate (unless not ``evaluate``: a batch ranks its baskets'
        lists together), the pending examples' labels (with ``examples``, the labelled
        examples are added to it for the churn model to learn later, instead of now), the
        profile, the value model's totals and the recommender's step. What the event told
        (see :class:`Learned`).
        """
        state.shard = shard
        # Any event may change what the customer can be recommended (a purchase is excluded,
        # a view moves the neighbours), whatever its time: the kept list is ranked anew.
        state.ranked, state.ranked_at = [], None
        profile = state.profile
        if evaluate:
            self._evaluate_recommendations(customer_id, state, activity)
        labels = self._resolve_pending(state, activity, examples)
        self._resolve_value(state, activity.time, event=True)

        first_event = profile.events == 0
        new_day = first_event or activity.time // DAY > profile.last_seen // DAY
        old_monetary, old_orders = profile.net_monetary, profile.orders
        item = activity.item_id
        # A purchase of an item new to the customer: EASE counts an owner and its pairs.
        owned = (
            list(profile.purchased_items)
            if activity.kind == "purchase" and item is not None
            and item not in profile.purchased_items
            else None
        )  # fmt: skip
        tone = None
        if activity.kind in _TEXT_KINDS:
            tone = self._sentiment.predict_one(activity.text, activity.rating)
        profile.record(activity, tone)
        self._absorb_value(state, activity.time)
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
            latent = self._latent(customer_id, state)
            self._recommender.learn_one(
                customer_id,
                activity.item_id,
                time=activity.time,
                weight=_INTERACTION_WEIGHTS[activity.kind],
                basket=basket if activity.kind == "purchase" else (),
                latent=latent,
            )
            state.latent = latent.astype(_LATENT).tobytes()
            if owned is not None:
                self._recommender.learn_owned(activity.item_id, owned, time=activity.time)
        self._events_learned += 1
        return Learned(labels, tone, newly_cancelled, new_day)

    def _evaluate_recommendations(
        self, customer_id: str, state: CustomerState, activity: Activity
    ) -> None:
        """Was the first line of a new basket in the customer's list just before it?

        The list is ranked now, by the models as they are before learning the basket: what
        the customer's Redis hash held, give or take one flush of model updates.
        """
        if activity.kind != "purchase" or activity.item_id is None or state.profile.events == 0:
            return  # a customer's first event: no list was served to them yet
        last_order = state.profile.last_order_at
        if last_order is not None and activity.time <= last_order:
            return  # a further line of a basket already seen, or a late one
        if self._hit_rate.due():
            self._judge([state], [activity.item_id], [activity.time])

    def _latent(self, customer_id: str, state: CustomerState) -> np.ndarray:
        """The customer's latent factors, to update (a new customer's start seeded by id)."""
        if state.latent is None:
            return self._recommender.user_latent(customer_id)
        return np.frombuffer(state.latent, _LATENT).astype(float)

    def _learn_label(
        self,
        pending: PendingExample,
        churned: bool,
        labels: list[bool],
        now: float,
        examples: list[tuple[dict[str, float], bool]] | None = None,
    ) -> None:
        self._quality.update(pending.risk, churned, served_at=pending.time, now=now)
        if examples is None:
            self._churn.learn_one(pending.features, churned)
        else:
            examples.append((pending.features, churned))
        self._pending = max(self._pending - 1, 0)
        labels.append(churned)

    def _resolve_pending(
        self,
        state: CustomerState,
        activity: Activity,
        examples: list[tuple[dict[str, float], bool]] | None = None,
    ) -> list[bool]:
        """Label the pending examples taken before this event with what it tells."""
        labels: list[bool] = []
        if not state.pending:
            return labels
        cfg = self.config
        cancelled = activity.kind == "subscription_cancel"
        later = []
        for example in state.pending:
            age = activity.time - example.time
            if age >= self._horizon or cancelled:
                # A cancellation is churn whenever it is dated: no re-score would label an
                # example a cancelled customer left behind.
                self._learn_label(example, True, labels, activity.time, examples)
            elif age < 0:
                later.append(example)  # a late event from before the example changes nothing
            elif age >= cfg.churn_sample_interval_days * DAY:
                self._learn_label(example, False, labels, activity.time, examples)
            else:
                # Too soon for a label: a new example is taken after this event instead.
                self._pending = max(self._pending - 1, 0)
        state.pending = later
        return labels
