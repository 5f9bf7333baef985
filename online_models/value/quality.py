"""How good the served value forecasts were: rank correlation with the spend that followed."""

from __future__ import annotations

import logging
import math
from array import array

import numpy as np

from online_models.customer.activity import DAY
from online_models.evaluation.measures import spearman

__all__ = ["ValueQuality"]

logger = logging.getLogger(__name__)


class ValueQuality:
    """Quality of the value forecasts served, on the spend that followed each.

    A forecast is labelled once its horizon has passed, so forecasts of one event-time day
    are judged together, like a backtest judges every customer scored at one moment:
    :attr:`cohort_rank_correlation` is the Spearman correlation of the forecasts served on the
    ``cohort_days`` latest days whose horizon has closed with the spend that followed them.

    >>> quality = ValueQuality(horizon_days=1.0, cohort_days=1)
    >>> quality.update_many(np.array([5.0, 1.0, 3.0]), np.array([50.0, 0.0, 9.0]),
    ...                     served_at=np.zeros(3), now=2 * DAY)
    >>> quality.cohort_rank_correlation, quality.labels
    (1.0, 3)
    """

    def __init__(self, horizon_days: float = 90.0, cohort_days: int = 7) -> None:
        self.horizon_days = horizon_days
        self.cohort_days = cohort_days
        # Event-time day -> the forecasts served that day and the spend that followed.
        self._cohorts: dict[int, tuple[array[float], array[float]]] = {}
        self._now = -math.inf
        self._labels = 0

    @property
    def labels(self) -> int:
        """Labelled forecasts counted in total."""
        return self._labels

    def update_many(
        self, served: np.ndarray, realised: np.ndarray, served_at: np.ndarray, now: float
    ) -> None:
        """Count forecasts ``served`` at event times ``served_at`` against the spend
        ``realised`` after them, labelled at event time ``now``."""
        for forecast, spend, day in zip(
            np.asarray(served, float).tolist(),
            np.asarray(realised, float).tolist(),
            (np.asarray(served_at, float) // DAY).astype(int).tolist(),
            strict=True,
        ):
            cohort = self._cohorts.get(day)
            if cohort is None:
                cohort = self._cohorts[day] = (array("d"), array("d"))
            cohort[0].append(forecast)
            cohort[1].append(spend)
        self._labels += len(served)
        if now > self._now:
            self._now = now
            oldest = self._closed_day() - self.cohort_days
            for day in [d for d in self._cohorts if d <= oldest]:
                del self._cohorts[day]

    @property
    def cohort_rank_correlation(self) -> float:
        """Spearman correlation of the forecasts of the ``cohort_days`` latest closed days
        with the spend that followed; NaN before any day closed."""
        closed = self._closed_day()
        served: list[float] = []
        realised: list[float] = []
        for day in range(closed - self.cohort_days + 1, closed + 1):
            cohort = self._cohorts.get(day)
            if cohort is not None:
                served.extend(cohort[0])
                realised.extend(cohort[1])
        return spearman(served, realised)

    def _closed_day(self) -> int:
        """The latest event-time day whose forecasts all have their label by now."""
        if not math.isfinite(self._now):
            return -(2**62)
        return int((self._now - self.horizon_days * DAY) // DAY) - 1
