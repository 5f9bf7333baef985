"""Batch baselines a streaming score is judged against: logistic regression on RFM, BG/NBD with
Gamma-Gamma, popularity and item-item recommendations. numpy and scipy only, so the report
needs no scikit-learn.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from scipy import optimize, sparse, special

__all__ = [
    "LogisticBaseline",
    "bgnbd_gamma_gamma",
    "item_item_lists",
    "popularity_lists",
]

logger = logging.getLogger(__name__)


class LogisticBaseline:
    """L2-regularised logistic regression on standardised features (scikit-learn's
    ``make_pipeline(StandardScaler(), LogisticRegression())``: the same objective, penalty
    ``1 / (2C)`` on the weights and none on the intercept), fitted by L-BFGS.

    >>> x = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> model = LogisticBaseline().fit(x, np.array([False, False, True, True]))
    >>> (model.predict_proba(x)[:, 1] > 0.5).tolist()
    [False, False, True, True]
    """

    def __init__(self, C: float = 1.0) -> None:
        self.C = C
        self._mean = np.zeros(0)
        self._scale = np.ones(0)
        self._weights = np.zeros(1)

    def fit(self, x: np.ndarray, y: np.ndarray) -> LogisticBaseline:
        x = np.asarray(x, dtype=float)
        target = np.asarray(y, dtype=float)
        self._mean = x.mean(axis=0)
        scale = x.std(axis=0)
        self._scale = np.where(scale > 0, scale, 1.0)
        z = np.c_[(x - self._mean) / self._scale, np.ones(len(x))]
        sign = 2.0 * target - 1.0

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            margin = sign * (z @ w)
            value = self.C * np.logaddexp(0.0, -margin).sum() + 0.5 * w[:-1] @ w[:-1]
            grad = -self.C * z.T @ (sign * special.expit(-margin))
            grad[:-1] += w[:-1]
            return float(value), grad

        fitted = optimize.minimize(
            loss, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B", options={"gtol": 1e-8}
        )
        self._weights = fitted.x
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Columns: the chance of False, of True."""
        z = (np.asarray(x, dtype=float) - self._mean) / self._scale
        p = special.expit(z @ self._weights[:-1] + self._weights[-1])
        return np.c_[1.0 - p, p]


def bgnbd_gamma_gamma(
    x: np.ndarray, t_x: np.ndarray, age: np.ndarray, mean: np.ndarray, horizon_days: float
) -> tuple[np.ndarray, np.ndarray]:
    """Expected orders and spend over the next ``horizon_days`` from BG/NBD + Gamma-Gamma
    fitted by maximum likelihood on these customers (what the ``lifetimes`` package does).

    ``x`` repeat orders, ``t_x`` days from the first to the last order, ``age`` days from the
    first order to now, ``mean`` spend per order.
    """

    def bgnbd_nll(log_params: np.ndarray) -> float:
        r, alpha, a, b = np.exp(log_params)
        common = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
        alive = common + special.betaln(a, b + x) - special.betaln(a, b)
        alive -= (r + x) * np.log(alpha + age)
        gone = common + special.betaln(a + 1, b + np.maximum(x - 1, 0)) - special.betaln(a, b)
        gone -= (r + x) * np.log(alpha + t_x)
        ll = np.where(x > 0, np.logaddexp(alive, np.where(x > 0, gone, -np.inf)), alive)
        return float(-ll.mean())

    n = x + 1

    def gg_nll(log_params: np.ndarray) -> float:
        p, q, g = np.exp(log_params)
        ll = (special.gammaln(p * n + q) - special.gammaln(p * n) - special.gammaln(q)
              + q * np.log(g) + p * n * np.log(n) + (p * n - 1) * np.log(mean)
              - (p * n + q) * np.log(g + mean * n))  # fmt: skip
        return float(-ll.mean())

    options = {"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-9}
    with np.errstate(all="ignore"):
        bg = optimize.minimize(bgnbd_nll, np.log([0.5, 10, 1, 1]), method="Nelder-Mead",
                               options=options)  # fmt: skip
        gg = optimize.minimize(gg_nll, np.log([2, 3, 100]), method="Nelder-Mead", options=options)
    r, alpha, a, b = np.exp(bg.x)
    p, q, g = np.exp(gg.x)
    days = horizon_days
    hyper = special.hyp2f1(r + x, b + x, a + b + x - 1, days / (alpha + age + days))
    tail = ((alpha + age) / (alpha + age + days)) ** (r + x)
    dropped = (x > 0) * (a / (b + x - 1)) * ((alpha + age) / (alpha + t_x)) ** (r + x)
    orders = (a + b + x - 1) / (a - 1) * (1 - tail * hyper) / (1 + dropped)
    per_order = (g + mean * n) * p / (p * n + q - 1)
    return orders, orders * per_order


def _owned_matrix(
    owned: Mapping[str, set[str]],
) -> tuple[list[str], list[str], dict[str, int], sparse.csr_matrix]:
    customers = list(owned)
    items = sorted({item for bought in owned.values() for item in bought})
    column = {item: i for i, item in enumerate(items)}
    rows = [r for r, c in enumerate(customers) for _ in owned[c]]
    cols = [column[item] for c in customers for item in owned[c]]
    matrix = sparse.csr_matrix(
        (np.ones(len(rows)), (rows, cols)), shape=(len(customers), len(items))
    )
    return customers, items, column, matrix


def _top(
    scores: np.ndarray, exclude: set[str], items: list[str], column: dict[str, int], k: int
) -> list[str]:
    scores = scores.astype(float).copy()
    for item in exclude:
        scores[column[item]] = -np.inf
    best = np.argsort(-scores, kind="stable")[:k]
    return [items[i] for i in best if np.isfinite(scores[i])]


def popularity_lists(owned: Mapping[str, set[str]], k: int = 10) -> dict[str, list[str]]:
    """Each customer's ``k`` items bought by the most customers, less what they own.

    >>> popularity_lists({"a": {"x"}, "b": {"x", "y"}, "c": {"z"}}, k=1)
    {'a': ['y'], 'b': ['z'], 'c': ['x']}
    """
    customers, items, column, bought = _owned_matrix(owned)
    counts = np.asarray(bought.sum(axis=0), dtype=float).ravel()
    return {c: _top(counts, owned[c], items, column, k) for c in customers}


def item_item_lists(
    owned: Mapping[str, set[str]], k: int = 10, batch: int = 256
) -> dict[str, list[str]]:
    """Batch item-item collaborative filtering: each customer's ``k`` items most similar
    (cosine over customer-item co-occurrence) to what they own, popularity breaking ties.

    A customer's scores are ``b D B' B D`` (``B`` customers by items, ``D`` one over the
    square root of each item's buyers, ``b`` the customer's row), taken ``batch`` customers at
    a time: the item-by-item similarity is never held (on Online Retail 190 MB less, the same
    hit rate and recall). Its diagonal would only score what a customer owns, which is left
    out anyway.

    >>> item_item_lists({"a": {"x", "y"}, "b": {"x"}, "c": {"z"}}, k=1)["b"]
    ['y']
    """
    customers, items, column, bought = _owned_matrix(owned)
    counts = np.asarray(bought.sum(axis=0), dtype=float).ravel()
    normalised = (bought @ sparse.diags(1 / np.sqrt(np.maximum(counts, 1.0)))).tocsr()
    by_item = bought.T.tocsr()
    lists = {}
    for start in range(0, len(customers), batch):
        overlap = normalised[start : start + batch] @ by_item
        scores = (overlap @ normalised).toarray() + 1e-9 * counts
        for customer, row in zip(customers[start : start + batch], scores, strict=True):
            lists[customer] = _top(row, owned[customer], items, column, k)
    return lists
