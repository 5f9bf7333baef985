"""Value labels made by the stream: pending value examples, their labels, and the forecast served.

A customer who has ordered leaves a value example when scored (an event or a re-score), at
most one every ``value_sample_days``: the regression's features then, the forecast served, the
same before the calibration's scale (what the calibration learns from, 0 before the regression
serves) and the net spend so far. Once the horizon (``churn_horizon_days``) has passed in event
time, the net spend the customer made since becomes its label, exactly as churn labels are
made: at the customer's first event after the horizon (before the event is recorded, so it is
left out), or at a re-score at or after it. Examples live in the customer's state, so they move
with the customer's partition and an erasure takes them.

Labels due are gathered as they come and learned as one mini-batch before the next forecast
(:meth:`ValueLearning._learn_value_labels`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from online_models.customer.activity import DAY
from online_models.scoring.batch_features import ProfileColumns
from online_models.scoring.score_types import RESCORE_HORIZONS, ScorerConfig
from online_models.scoring.state import CustomerState
from online_models.scoring.value_reasons import (
    CANCELLED_VALUE_REASONS,
    NO_ORDER_VALUE_REASONS,
    ValueReason,
    ValueReasonBook,
    bgnbd_terms,
    bgnbd_terms_many,
    value_reasons,
)
from online_models.value.lifetime import LifetimeModel, LifetimeOutlooks, LifetimeScore
from online_models.value.quality import ValueQuality
from online_models.value.ranks import ValueModel
from online_models.value.spend import SPEND_FEATURES, SpendModel, spend_features

__all__ = ["ValueLearning"]

logger = logging.getLogger(__name__)

# A value example's columns past the features: the forecast served and the same unscaled.
_FORECAST = 2 + len(SPEND_FEATURES)
_UNSCALED = _FORECAST + 1


class ValueLearning:
    """The value labels' bookkeeping of :class:`~online_models.scoring.scorer.CustomerScorer`
    (a part of it), and the value forecast it serves."""

    config: ScorerConfig
    _lifetime: LifetimeModel
    _spend: SpendModel
    _value_quality: ValueQuality
    _value: ValueModel
    # Labels due, not learned yet: [served at, net spend then, *features, forecast, unscaled
    # forecast, label].
    _value_due: list[list[float]]

    def _init_value(self) -> None:
        cfg = self.config
        self._spend = SpendModel(
            half_life_days=cfg.value_halflife_days,
            ridge=cfg.value_ridge,
            warmup_labels=cfg.value_warmup_labels,
        )
        self._value_quality = ValueQuality(horizon_days=cfg.churn_horizon_days)
        self._value_due = []

    @property
    def spend_model(self) -> SpendModel:
        """The value regression (read-only use: labels learned, forecasts)."""
        return self._spend

    @property
    def value_quality(self) -> ValueQuality:
        """Rank correlation of served value forecasts with the spend that followed."""
        return self._value_quality

    def value_forecasts(self, states: Sequence[CustomerState], now: float) -> np.ndarray:
        """Each customer's value forecast over the churn horizon as of event time ``now``
        (the regression's once ready, BG/NBD + Gamma-Gamma's before; 0 for one who never
        ordered), changing nothing: what a backtest judges against the spend that followed.
        """
        columns = ProfileColumns.of([state.profile for state in states])
        horizon = self.config.churn_horizon_days
        outlook = self._lifetime.predict_many(
            first=columns.first_order_at, last=columns.last_order_at, orders=columns.orders,
            spend=columns.net_monetary, now=np.maximum(now, columns.last_seen),
            horizon_days=horizon, clv_days=horizon,
        )  # fmt: skip
        bought = columns.orders >= 1
        _, _, forecast = self._value_outlooks(columns.net_monetary, outlook, bought)
        return np.where(bought, forecast, 0.0)

    def _resolve_value(self, state: CustomerState, now: float, *, event: bool) -> bool:
        """Label the customer's value examples whose horizon passed by ``now``: strictly
        before an ``event`` at ``now`` (which is not recorded yet and falls outside), at or
        before a re-score. True if any was labelled."""
        pending = state.value_pending
        horizon = self.config.churn_horizon_days * DAY
        if not pending or (
            now - pending[0][0] <= horizon if event else now - pending[0][0] < horizon
        ):
            return False
        profile = state.profile
        spent = profile.monetary - profile.refunded
        waiting = []
        for example in pending:
            age = now - example[0]
            if age > horizon or (age == horizon and not event):
                self._value_due.append([*example, max(spent - example[1], 0.0)])
            else:
                waiting.append(example)
        state.value_pending = waiting
        return True

    def _absorb_value(self, state: CustomerState, time: float) -> None:
        """After an event at ``time`` is recorded: the examples taken at or after it count it
        as spend before them, not in their label (a basket's further lines, which share its
        time, or a late event)."""
        pending = state.value_pending
        if not pending or pending[-1][0] < time:
            return
        profile = state.profile
        spent, log_spend = (
            profile.monetary - profile.refunded,
            float(np.log1p(profile.net_monetary)),
        )
        for example in pending:
            if example[0] >= time:
                example[1], example[2] = spent, log_spend

    def _learn_value_labels(self, now: float) -> None:
        """Learn the labels gathered since the last call, as one mini-batch."""
        if not self._value_due:
            return
        rows, self._value_due = self._value_due, []  # cleared first: a bad row fails no later one
        width = max(set(map(len, rows)), key=[len(row) for row in rows].count)  # the usual
        due = np.array([row for row in rows if len(row) == width], dtype=float)
        due = due[np.isfinite(due).all(axis=1)]
        if len(due) < len(rows):
            logger.warning("Dropped %d value labels that were not finite", len(rows) - len(due))
        if not len(due):
            return
        self._spend.learn_many(due[:, 2:_FORECAST], due[:, -1], due[:, 0], due[:, _UNSCALED])
        self._value_quality.update_many(due[:, _FORECAST], due[:, -1], due[:, 0], now)

    def _takes_value(self, state: CustomerState, now: float) -> bool:
        """Whether the customer leaves a value example when scored at ``now``."""
        pending = state.value_pending
        return (
            not state.cancelled
            and state.profile.orders > 0
            and (not pending or now - pending[-1][0] >= self.config.value_sample_days * DAY)
            and now - state.profile.last_seen <= self._last_value_silence()
        )

    def _last_value_silence(self) -> float:
        """The longest silence at which a score still leaves a value example: its horizon
        must close while the customer is still re-scored (``RESCORE_HORIZONS`` of silence),
        or it would wait, unlabelled, until they come back, and lapsed customers' labels of
        no spend would go missing."""
        return (RESCORE_HORIZONS - 1.0) * self.config.churn_horizon_days * DAY

    def _take_value(
        self, state: CustomerState, now: float, features: Sequence[float], forecast: float
    ) -> None:
        """A value example of the ``forecast`` served with ``features``, and for the
        calibration the regression's forecast before its scale (:meth:`SpendModel.unscaled_one`,
        0 before it serves): the one and the batch path keep the same, from the model served."""
        profile = state.profile
        spent = profile.monetary - profile.refunded
        unscaled = self._spend.unscaled_one(dict(zip(SPEND_FEATURES, features, strict=True)))
        state.value_pending.append([now, spent, *features, forecast, unscaled])

    def _value_outlook(
        self, state: CustomerState, outlook: LifetimeScore, now: float, *, take: bool
    ) -> tuple[LifetimeScore, tuple[ValueReason, ...]]:
        """The outlook served, with the regression's ``predicted_clv`` once it is ready, and
        the reasons behind it; with ``take``, the value example the score leaves."""
        self._learn_value_labels(now)
        profile = state.profile
        if profile.orders < 1:
            return outlook, CANCELLED_VALUE_REASONS if state.cancelled else NO_ORDER_VALUE_REASONS
        bgnbd = max(outlook.expected_orders * outlook.spend_per_order, 0.0)
        features = (math.log1p(max(profile.net_monetary, 0.0)), math.log1p(bgnbd))
        horizon = self.config.churn_horizon_days
        newcomer = self._lifetime.newcomer(horizon)
        if self._spend.ready:
            x = dict(zip(SPEND_FEATURES, features, strict=True))
            forecast, terms = self._spend.predict_one(x), self._spend.terms_one(x)
            if not state.cancelled:
                outlook = replace(outlook, predicted_clv=forecast * self._clv_per_horizon())
        else:
            forecast = bgnbd
            terms = bgnbd_terms(outlook.expected_orders, outlook.spend_per_order, newcomer)
        if take and self._takes_value(state, now):
            self._take_value(state, now, features, forecast)
        if state.cancelled:
            return outlook, CANCELLED_VALUE_REASONS
        reasons = value_reasons(
            terms, regression=self._spend.ready, spend_to_date=profile.net_monetary,
            spend_rank=self._value.spend_rank(profile.net_monetary),
            expected_orders=outlook.expected_orders, spend_per_order=outlook.spend_per_order,
            bgnbd_value=bgnbd, newcomer=newcomer, horizon_days=horizon,
        )  # fmt: skip
        return outlook, reasons

    def _value_reasons_many(
        self, columns: ProfileColumns, outlook: LifetimeOutlooks, features: np.ndarray,
        cancelled: np.ndarray,
    ) -> list[Sequence[ValueReason]]:  # fmt: skip
        """:meth:`_value_outlook`'s reasons over arrays (``outlook`` and ``features`` as
        :meth:`_value_outlooks` gives them), phrased when read."""
        horizon = self.config.churn_horizon_days
        newcomer = self._lifetime.newcomer(horizon)
        orders, per_order = outlook.expected_orders, outlook.spend_per_order
        if self._spend.ready:
            terms = self._spend.terms_many(features)
        else:
            terms = bgnbd_terms_many(orders, per_order, newcomer)
        spent = columns.net_monetary
        book = ValueReasonBook(
            terms, regression=self._spend.ready, spend_to_date=spent,
            spend_rank=self._value.spend_ranks(spent), expected_orders=orders,
            spend_per_order=per_order, bgnbd_value=np.maximum(orders * per_order, 0.0),
            newcomer=newcomer, horizon_days=horizon,
        )  # fmt: skip
        return book.reasons(columns.orders >= 1, cancelled)

    def _value_outlooks(
        self, net_spend: np.ndarray, outlook: LifetimeOutlooks, bought: np.ndarray
    ) -> tuple[LifetimeOutlooks, np.ndarray, np.ndarray]:
        """:meth:`_value_outlook` over arrays (``bought``: who ever ordered): the outlooks
        served, the regression's features and the forecasts over the horizon."""
        features = spend_features(net_spend, outlook.expected_orders * outlook.spend_per_order)
        forecast = self._forecast(features, features[:, 1])
        if self._spend.ready:
            clv = np.where(bought, forecast * self._clv_per_horizon(), outlook.predicted_clv)
            outlook = outlook._replace(predicted_clv=clv)
        return outlook, features, forecast

    def _forecast(self, features: np.ndarray, log_bgnbd: np.ndarray) -> np.ndarray:
        """The value forecast over the horizon: the regression's once ready, BG/NBD's before."""
        if self._spend.ready:
            return self._spend.predict_many(features)
        return np.expm1(log_bgnbd)

    def _clv_per_horizon(self) -> float:
        """``predicted_clv`` covers ``clv_horizon_days``, the regression the churn horizon: at
        the forecast's rate."""
        return self.config.clv_horizon_days / self.config.churn_horizon_days
