"""Measures of a ranking against what happened: ROC, calibration, gains, Spearman, hits."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "Calibration",
    "average_ranks",
    "calibration",
    "cumulative_gains",
    "hit_rate_and_recall",
    "roc_auc",
    "roc_curve",
    "spearman",
    "top_share",
]

logger = logging.getLogger(__name__)


def average_ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank (as ``scipy.stats.rankdata``; numpy alone,
    so the scoring processes that import these measures load no scipy).

    >>> average_ranks([3.0, 1.0, 3.0, 2.0]).tolist()
    [3.5, 1.0, 3.5, 2.0]
    """
    x = np.asarray(values, dtype=float)
    if np.isnan(x).any():  # as scipy's rankdata: no ranks where one value has none
        return np.full(len(x), np.nan)
    order = np.argsort(x, kind="mergesort")
    inverse = np.empty(len(x), dtype=np.intp)
    inverse[order] = np.arange(len(x))
    ordered = x[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    dense = np.cumsum(starts)[inverse]
    bounds = np.r_[np.flatnonzero(starts), len(x)]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def roc_auc(labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve: the chance a positive outranks a negative, ties counting half
    (Mann-Whitney U); nan without both classes.

    >>> roc_auc([True, False, True, False], [0.9, 0.1, 0.4, 0.4])
    0.875
    """
    y = np.asarray(labels, dtype=bool)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = average_ranks(scores)
    u = ranks[y].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def roc_curve(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1).

    >>> fpr, tpr = roc_curve([True, False, True, False], [0.9, 0.1, 0.4, 0.4])
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0])
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    # The last index of each run of equal scores: one point per threshold.
    ends = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.array([], int)
    true_positives = np.cumsum(y)[ends]
    false_positives = (ends + 1) - true_positives
    tpr = np.r_[0.0, true_positives / max(int(y.sum()), 1)]
    fpr = np.r_[0.0, false_positives / max(int((~y).sum()), 1)]
    return fpr, tpr


class Calibration(NamedTuple):
    """Per bin of predicted risk: its mean prediction, the observed share, customers."""

    predicted: np.ndarray
    observed: np.ndarray
    customers: np.ndarray


def calibration(
    labels: Sequence[bool] | np.ndarray, risk: Sequence[float] | np.ndarray, bins: int = 10
) -> Calibration:
    """Predicted risk against the share that came true, in ``bins`` equal-width bins of [0, 1]
    (empty bins left out).

    >>> c = calibration([True, False, True, True], [0.95, 0.05, 0.9, 0.15], bins=2)
    >>> c.predicted.tolist(), c.observed.tolist(), c.customers.tolist()
    ([0.1, 0.925], [0.5, 1.0], [2, 2])
    """
    y = np.asarray(labels, dtype=float)
    p = np.clip(np.asarray(risk, dtype=float), 0.0, 1.0)
    which = np.minimum((p * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins)
    full = counts > 0
    predicted = np.bincount(which, weights=p, minlength=bins)[full] / counts[full]
    observed = np.bincount(which, weights=y, minlength=bins)[full] / counts[full]
    return Calibration(predicted, observed, counts[full])


def cumulative_gains(
    ranking: Sequence[float] | np.ndarray, outcome: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Share of customers taken from the top of ``ranking`` (x) against the share of the total
    ``outcome`` they hold (y), from (0, 0) to (1, 1); ties keep the given order.

    >>> x, y = cumulative_gains([3.0, 1.0, 2.0, 0.0], [6.0, 0.0, 2.0, 2.0])
    >>> x.tolist(), y.tolist()
    ([0.0, 0.25, 0.5, 0.75, 1.0], [0.0, 0.6, 0.8, 0.8, 1.0])
    """
    r = np.asarray(ranking, dtype=float)
    o = np.asarray(outcome, dtype=float)[np.argsort(-r, kind="stable")]
    total = o.sum()
    x = np.arange(len(o) + 1) / max(len(o), 1)
    y = np.r_[0.0, np.cumsum(o) / total] if total > 0 else np.zeros(len(o) + 1)
    return x, y


def top_share(
    ranking: Sequence[float] | np.ndarray,
    outcome: Sequence[float] | np.ndarray,
    share: float = 0.1,
) -> float:
    """Share of the total ``outcome`` held by the top ``share`` of customers by ``ranking``
    (at least one customer; the top decile's capture by default).

    >>> top_share([3.0, 1.0, 2.0, 0.0], [6.0, 0.0, 2.0, 2.0], share=0.5)
    0.8
    """
    r = np.asarray(ranking, dtype=float)
    o = np.asarray(outcome, dtype=float)
    top = np.argsort(-r, kind="stable")[: max(int(len(r) * share + 1e-9), 1)]
    return float(o[top].sum() / o.sum()) if o.sum() > 0 else float("nan")


def spearman(ranking: Sequence[float] | np.ndarray, outcome: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation (nan when either side is constant).

    >>> spearman([1.0, 2.0, 3.0], [10.0, 30.0, 20.0])
    0.5
    """
    r = np.asarray(ranking, dtype=float)
    o = np.asarray(outcome, dtype=float)
    if len(r) < 2 or np.ptp(r) == 0 or np.ptp(o) == 0:
        return float("nan")
    return float(np.corrcoef(average_ranks(r), average_ranks(o))[0, 1])


def hit_rate_and_recall(
    lists: Mapping[str, Sequence[str]], truth: Mapping[str, set[str]], k: int = 10
) -> tuple[float, float]:
    """Hit rate@k (share of customers with at least one of their top ``k`` in ``truth``) and
    recall@k (mean share of a customer's ``truth`` in their top ``k``), over the customers
    with a non-empty ``truth``; a customer without a list hits nothing.

    >>> hit_rate_and_recall({"a": ["x", "y"], "b": ["z"]}, {"a": {"y", "w"}, "b": {"q"}})
    (0.5, 0.25)
    """
    judged = [customer for customer, items in truth.items() if items]
    if not judged:
        return float("nan"), float("nan")
    hits, recalls = [], []
    for customer in judged:
        found = len(set(lists.get(customer, ())[:k]) & truth[customer])
        hits.append(found > 0)
        recalls.append(found / len(truth[customer]))
    return float(np.mean(hits)), float(np.mean(recalls))
