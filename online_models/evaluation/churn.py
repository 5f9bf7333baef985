"""Who churned after a cutoff, and the batch churn baselines' risks for them."""

from __future__ import annotations

import logging

import numpy as np

from online_models.evaluation.baselines import LogisticBaseline, bgnbd_gamma_gamma
from online_models.evaluation.history import DAY, PurchaseHistory

__all__ = ["bgnbd_churn_risk", "churned", "logistic_rfm_churn_risk"]

logger = logging.getLogger(__name__)


def churned(history: PurchaseHistory, customers: list[str], t: float, days: float) -> np.ndarray:
    """For each customer, True when they bought nothing in (t, t + days]."""
    end = t + days * DAY
    return np.array([not history.bought_between(c, t, end) for c in customers], dtype=bool)


def logistic_rfm_churn_risk(
    history: PurchaseHistory, customers: list[str], t: float, days: float
) -> tuple[np.ndarray, int]:
    """The classic batch churn model: a logistic regression on RFM features at ``t - days``
    with labels from (t - days, t], applied to the customers' RFM at ``t``; returns the risks
    and the customers it was trained on (no risk, all nan, when there are too few or one
    class only)."""
    train_at = t - days * DAY
    train = history.buyers_before(train_at)
    labels = churned(history, train, train_at, days)
    if len(train) < 2 or labels.all() or not labels.any():
        return np.full(len(customers), np.nan), len(train)
    model = LogisticBaseline().fit(history.rfm_matrix(train, train_at), labels)
    return model.predict_proba(history.rfm_matrix(customers, t))[:, 1], len(train)


def bgnbd_churn_risk(
    history: PurchaseHistory, customers: list[str], t: float, days: float
) -> np.ndarray:
    """BG/NBD fitted at ``t``: the chance of no order in the next ``days``, read as
    ``exp(-expected orders)`` (ranks as the expected orders do, lowest first)."""
    summaries = np.array([history.summary(c, t) for c in customers]).reshape(-1, 5)
    x, t_x, age, mean, _ = summaries.T
    orders, _ = bgnbd_gamma_gamma(x, t_x, age, mean, days)
    return np.exp(-np.nan_to_num(orders, nan=0.0))
