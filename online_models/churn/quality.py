"""How good the served churn risks were: rolling and cohort ROC AUC, log loss, churn rate."""

from __future__ import annotations

import logging
import math
from array import array
from typing import Any

import numpy as np
from river import metrics, stats, utils

from online_models.customer.activity import DAY
from online_models.evaluation.measures import roc_auc

__all__ = ["ChurnQuality"]

logger = logging.getLogger(__name__)


class ChurnQuality:
    """Quality of the churn scores actually served, on their delayed labels.

    >>> quality = ChurnQuality(window=100)
    >>> for risk, churned in [(0.9, True), (0.2, False), (0.8, True), (0.3, False)]:
    ...     quality.update(risk, churned)
    >>> quality.roc_auc, quality.labels, quality.churn_rate, quality.drifts
    (1.0, 4, 0.5, 0)

    A rolling ROC AUC compares risks served at different ages: a "churned" label is a horizon
    old when it arrives, a "stayed" one often days, so the window mixes scores of different
    times and misleads (it read 0.38 where the cross-sectional AUC was 0.73). The
    :attr:`cohort_roc_auc` judges risks served on the same event-time days against each other,
    once every one of them has its label: the ``cohort_days`` latest days whose horizon has
    closed, as a backtest judges all customers scored at one moment.

    An ADWIN detector watches the absolute error of the served risks: a change in it (the
    customers or the model shifted) is counted in :attr:`drifts`.
    """

    # Class defaults: a quality window from before cohorts counts none.
    horizon_days = 90.0
    cohort_days = 7

    def __init__(
        self,
        window: int = 1000,
        drift_delta: float = 0.002,
        horizon_days: float = 90.0,
        cohort_days: int = 7,
    ) -> None:
        self.window = window
        self.drift_delta = drift_delta
        self.horizon_days = horizon_days
        self.cohort_days = cohort_days
        # Event-time day -> the risks served that day and their labels, once labelled.
        self._cohorts: dict[int, tuple[array[float], array[int]]] = {}
        self._now = -math.inf
        # Imported here: river.drift brings its data sets (and scikit-learn, when installed)
        # with it, a second of start-up that a command which scores nothing need not pay.
        from river.drift import ADWIN

        self._drift = ADWIN(delta=drift_delta)
        self._drifts = 0
        self._roc_auc = metrics.RollingROCAUC(window_size=window)
        self._log_loss: Any = utils.Rolling(metrics.LogLoss, window_size=window)
        self._positives: Any = utils.Rolling(stats.Mean, window_size=window)
        self._labels = 0

    def update(
        self, risk: float, churned: bool, served_at: float | None = None, now: float | None = None
    ) -> None:
        """Count one served score against its label; ``served_at`` is when it was served and
        ``now`` the event time of the label (for the cohorts)."""
        if served_at is not None:
            day = int(served_at // DAY)
            cohort = self._cohorts.get(day)
            if cohort is None:
                cohort = self._cohorts[day] = (array("d"), array("b"))
            cohort[0].append(risk)
            cohort[1].append(1 if churned else 0)
            if now is not None and now > self._now:
                self._now = now
                self._forget_old_cohorts()
        self._roc_auc.update(churned, risk)
        self._log_loss.update(churned, min(max(risk, 1e-6), 1 - 1e-6))
        self._positives.update(1.0 if churned else 0.0)
        self._labels += 1
        self._drift.update(abs((1.0 if churned else 0.0) - risk))
        if self._drift.drift_detected:
            self._drifts += 1

    @property
    def cohort_roc_auc(self) -> float:
        """ROC AUC of the risks served on the ``cohort_days`` latest event-time days whose
        churn horizon has closed (every risk of those days has its label); NaN before."""
        closed = self._closed_day()
        risks: list[float] = []
        labels: list[int] = []
        for day in range(closed - self.cohort_days + 1, closed + 1):
            cohort = self._cohorts.get(day)
            if cohort is not None:
                risks.extend(cohort[0])
                labels.extend(cohort[1])
        return roc_auc(np.array(labels, dtype=bool), np.array(risks))

    def _closed_day(self) -> int:
        """The latest event-time day whose served risks all have their label by now."""
        if not math.isfinite(self._now):
            return -(2**62)
        return int((self._now - self.horizon_days * DAY) // DAY) - 1

    def _forget_old_cohorts(self) -> None:
        oldest = self._closed_day() - self.cohort_days
        for day in [d for d in self._cohorts if d <= oldest]:
            del self._cohorts[day]

    @property
    def drifts(self) -> int:
        """Changes the drift detector found in the churn error so far."""
        return self._drifts

    @property
    def labels(self) -> int:
        """Labels seen in total."""
        return self._labels

    @property
    def roc_auc(self) -> float:
        """Rolling ROC AUC (NaN unless the window holds both classes)."""
        # River answers 0.0 for a one-class window, which reads as "perfectly wrong". With both
        # classes in the window its churn rate is at least 1/window away from 0 and from 1.
        margin = 0.5 / self.window
        if not margin < self.churn_rate < 1.0 - margin:
            return math.nan
        return float(self._roc_auc.get())

    @property
    def log_loss(self) -> float:
        """Rolling log loss."""
        return float(self._log_loss.get()) if self._labels else math.nan

    @property
    def churn_rate(self) -> float:
        """Share of churned labels in the window."""
        return float(self._positives.get()) if self._labels else math.nan
