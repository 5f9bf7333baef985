"""Re-scores of many silent customers at once: the models' numbers as arrays, one batch a call.

:meth:`CustomerScorer.refresh_many` does what :meth:`CustomerScorer.refresh` does for each
customer of a batch, all at one event time, with the numeric work over arrays: the churn
features as a matrix, the logistic risk and its per-feature terms from one scaling and one
product, BG/NBD's outlook and chance of no order over arrays (``hyp2f1`` is a ufunc), the value
ranks from one cumulative sum, every customer's distance to every segment centre at once and
its outlier score from one cumulative sum of the distance histogram.
What is one customer's stays a loop: their pending examples and labels, the lifetime sample,
the segment votes, the reasons' phrases and the alert policy.

Within a batch the models learn as a mini-batch:

- the churn labels that fell due are learned first, in the batch's order
  (:meth:`ChurnModel.learn_many`: the same steps as one ``learn_one`` each), and every customer
  of the batch is then scored with the model that learned them all; one by one, a customer is
  scored with the labels of the customers before them and their own;
- the segment centres learn the batch's points after assigning them all
  (:meth:`Segmenter.learn_place_many`), and each point's outlier score is ranked against the
  distances learned before the batch; one by one, each point is assigned and ranked with the
  centres and distances the points before it moved;
- the lifetime sample takes every customer's totals in order and refits when due at the first,
  exactly as one by one.

A batch of fewer than :data:`MIN_BATCH` customers is re-scored one by one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import numpy as np

from online_models.activity import DAY
from online_models.alert_policy import AlertState
from online_models.batch_features import (
    ProfileColumns,
    churn_feature_matrix,
    segment_feature_matrix,
)
from online_models.lifetime import LifetimeScore
from online_models.outliers import Placement
from online_models.profile import CHURN_FEATURES
from online_models.reasons import CANCELLED_REASONS, TOP_REASONS, churn_reasons
from online_models.state import CustomerState

if TYPE_CHECKING:
    from online_models.scorer import CustomerScorer, ScoreOutcome

__all__ = ["MIN_BATCH", "rescore_many"]

logger = logging.getLogger(__name__)

#: Reasons a re-score can give: the churn features' terms, then BG/NBD's shift of the log-odds.
_FACTORS = (*CHURN_FEATURES, "expected_orders")

OnError = Callable[[str, Exception], None]
P = ParamSpec("P")
T = TypeVar("T")
#: Smaller batches are re-scored one by one (:meth:`CustomerScorer.refresh`): measured on
#: this project's machine, a batch of 8 costs about what 8 single re-scores do.
MIN_BATCH = 16


def rescore_many(
    scorer: CustomerScorer,
    customers: Sequence[tuple[str, CustomerState]],
    now: float,
    on_error: OnError | None = None,
) -> list[ScoreOutcome]:
    """The body of :meth:`CustomerScorer.refresh_many`."""
    if len(customers) < MIN_BATCH or scorer.churn_model.kind != "logistic":
        # Arrays cost about a hundred numpy calls a batch, whatever its size: below
        # MIN_BATCH customers that is more than they save. The tree gives no terms to batch.
        return _one_by_one(scorer, customers, now, on_error)
    batch = _Batch(scorer, now)
    for customer_id, state in customers:
        _guarded(on_error, customer_id, batch.label, customer_id, state)
    if not batch.states:
        return []
    try:
        batch.predict()
    except Exception:
        if on_error is None:
            raise
        # Whatever broke the arrays must not cost every customer of the batch their score.
        logger.exception("Re-scoring %d customers together failed", len(batch.states))
        return batch.one_by_one(on_error)
    outcomes = []
    for i, customer_id in enumerate(batch.customer_ids):
        outcome = _guarded(on_error, customer_id, batch.finish, i)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


def _guarded(
    on_error: OnError | None, customer_id: str, step: Callable[P, T], *args: P.args, **kw: P.kwargs
) -> T | None:
    """``step(*args)``; with ``on_error``, an exception goes to it instead (result None)."""
    if on_error is None:
        return step(*args, **kw)
    try:
        return step(*args, **kw)
    except Exception as error:
        on_error(customer_id, error)
        return None


def _one_by_one(
    scorer: CustomerScorer,
    customers: Sequence[tuple[str, CustomerState]],
    now: float,
    on_error: OnError | None,
) -> list[ScoreOutcome]:
    outcomes = []
    for customer_id, state in customers:
        outcome = _guarded(on_error, customer_id, scorer.refresh, customer_id, state, now)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


class _Batch:
    """One batch of re-scores: per-customer bookkeeping around the models' array work."""

    def __init__(self, scorer: CustomerScorer, now: float) -> None:
        self.scorer = scorer
        self.now = now
        self.horizon = scorer.config.churn_horizon_days * DAY
        self.customer_ids: list[str] = []
        self.states: list[CustomerState] = []
        self.labels: list[list[bool]] = []
        self.newest: list[float] = []  # the latest example or event: when to take another
        self.examples: list[dict[str, float]] = []  # due for learning, in order
        self.churned: list[bool] = []
        self.model_version = scorer.model_version

    def label(self, customer_id: str, state: CustomerState) -> None:
        """Label the customer's examples whose horizon passed; their totals to the lifetime
        sample (what :meth:`CustomerScorer.refresh` does before scoring)."""
        scorer = self.scorer
        profile = state.profile
        now = max(self.now, profile.last_seen)
        labels: list[bool] = []
        waiting = []
        for example in state.pending:
            if now - example.time >= self.horizon:
                scorer.quality.update(example.risk, True, served_at=example.time, now=now)
                scorer.pending_labels = max(scorer.pending_labels - 1, 0)
                self.examples.append(example.features)
                self.churned.append(True)
                labels.append(True)
            else:
                waiting.append(example)
        state.pending = waiting
        scorer._observe_lifetime(customer_id, state, now)
        newest = waiting[-1].time if waiting else profile.last_seen
        self.customer_ids.append(customer_id)
        self.states.append(state)
        self.labels.append(labels)
        self.newest.append(newest)

    def one_by_one(self, on_error: OnError) -> list[ScoreOutcome]:
        """The batch's customers re-scored with :meth:`CustomerScorer.refresh` (the labels
        taken so far kept in their outcomes)."""
        outcomes = []
        for customer_id, state, labels in zip(
            self.customer_ids, self.states, self.labels, strict=True
        ):
            outcome = _guarded(
                on_error, customer_id, self.scorer.refresh, customer_id, state, self.now
            )
            if outcome is not None:
                outcome.labels[:0] = labels
                outcomes.append(outcome)
        return outcomes

    def predict(self) -> None:
        """Learn the batch's labels, then every model's numbers for every customer."""
        scorer = self.scorer
        cfg = scorer.config
        scorer.churn_model.learn_many(self.examples, self.churned)
        columns = ProfileColumns.of([state.profile for state in self.states])
        last_seen = np.array([state.profile.last_seen for state in self.states])
        at = np.maximum(self.now, last_seen)
        cancelled = np.array([state.cancelled for state in self.states])
        self.features = churn_feature_matrix(columns, at)
        logistic, terms = scorer.churn_model.risk_and_contributions_many(self.features)
        outlook = scorer.lifetime_model.predict_many(
            first=columns.first_order_at, last=columns.last_order_at, orders=columns.orders,
            spend=columns.net_monetary, now=at, horizon_days=cfg.churn_horizon_days,
            clv_days=cfg.clv_horizon_days,
        )  # fmt: skip
        weight = cfg.churn_logistic_weight
        bought = ~np.isnan(outlook.no_order)
        blended = np.where(bought, weight * logistic + (1.0 - weight) * outlook.no_order, logistic)
        risk = np.where(cancelled, 1.0, blended)
        # BG/NBD's half, in the terms' units: how far it moved the log-odds (a reason if up).
        shift = _logit(risk) - _logit(logistic)
        terms = np.column_stack([terms, np.where(shift > 0, shift, 0.0)])
        take = (
            ~cancelled
            & (at - last_seen < self.horizon)
            & (at - np.array(self.newest) >= cfg.churn_silent_sample_days * DAY)
        )
        placements = scorer.segmenter.learn_place_many(segment_feature_matrix(columns, at), at)
        value = scorer.value_model.value_many(
            columns.net_monetary, columns.orders, columns.days_since_order(at)
        )
        top = np.argsort(-terms, axis=1, kind="stable")[:, :TOP_REASONS]
        # Python numbers from here: a score is made of them, one customer at a time.
        self.at, self.risk, self.take = at.tolist(), risk.tolist(), take.tolist()
        self.cancelled = cancelled.tolist()
        self.placements = [
            Placement(*placement)
            for placement in zip(
                placements.segments.tolist(),
                placements.outlier_scores.tolist(),
                placements.outliers.tolist(),
                strict=True,
            )
        ]
        self.value = np.minimum(np.maximum(value, 0.0), 1.0).tolist()
        self.outlook = [column.tolist() for column in outlook]
        self.reasons = [
            [(_FACTORS[j], row[j]) for j in order if row[j] > 0]
            for row, order in zip(terms.tolist(), top.tolist(), strict=True)
        ]

    def finish(self, i: int) -> ScoreOutcome:
        """The ``i``-th customer's example, segment vote, score and alerts."""
        from online_models.scorer import CustomerScore, ScoreOutcome

        scorer, state = self.scorer, self.states[i]
        profile = state.profile
        now, risk = self.at[i], self.risk[i]
        changed = bool(self.labels[i])
        if self.take[i]:
            features = dict(zip(CHURN_FEATURES, self.features[i].tolist(), strict=True))
            scorer._take_example(state, now, features, risk)
            changed = True
        before = state.placement_record()
        state.alerts = AlertState(state.alerts.churn_armed, dict(state.alerts.last_alert_at))
        placement = self.placements[i]
        moved = scorer._place(state, placement)
        p_alive, expected, clv, next_order, no_order = (column[i] for column in self.outlook)
        segment = scorer._served(state, placement)
        outlook = None
        reasons = CANCELLED_REASONS
        if not self.cancelled[i]:
            next_at = None if math.isnan(next_order) else next_order
            outlook = LifetimeScore(p_alive, expected, clv, next_at, 0.0)
            cfg = scorer.config
            reasons = tuple(
                churn_reasons(
                    dict(self.reasons[i]), profile, now, expected, cfg.churn_horizon_days,
                    None if math.isnan(no_order) else no_order,
                )
            )  # fmt: skip
        score = CustomerScore.of_profile(
            profile, churn_risk=risk, segment=segment,
            segment_name=scorer.segmenter.describe(segment), value=self.value[i], as_of=now,
            model_version=self.model_version, outlook=outlook, churn_reasons=reasons,
            placement=placement,
        )  # fmt: skip
        alerts = scorer._alerts(state, score, moved, now, None, "silence")
        after = state.placement_record()
        return ScoreOutcome(state, score, alerts, self.labels[i], changed or after != before)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1.0 - 1e-9)
    return np.log(p / (1.0 - p))
