"""Why a customer is worth what ``predicted_clv`` says: the value forecast's terms, in CRM words.

Once the value regression serves (:mod:`online_models.value.spend`), its log-scale forecast
is a sum of one term per feature, its weight times how far the customer's feature is from
the labelled customers' weighted mean: the terms are the factors, exact for the forecast
(relative to an average customer). Before, BG/NBD + Gamma-Gamma's forecast is expected orders
times spend per order: on the log scale, the log of each part over what the models expect of
a customer they know nothing of yet. Both factors are listed, strongest (largest in size, up
or down) first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from online_models.scoring.reasons import ChurnReason, LazyReasons

__all__ = [
    "CANCELLED_VALUE_REASONS",
    "NO_ORDER_VALUE_REASONS",
    "ValueReason",
    "ValueReasonBook",
    "bgnbd_terms",
    "bgnbd_terms_many",
    "value_reasons",
]

logger = logging.getLogger(__name__)

#: One factor behind ``predicted_clv``: the churn reasons' shape (factor, contribution, reason).
ValueReason = ChurnReason

#: A cancelled customer's forecast (0): a rule, not the model.
CANCELLED_VALUE_REASONS: tuple[ValueReason, ...] = (
    ValueReason("subscription_cancel", None, "cancelled the subscription: no spend expected"),
)
#: A customer who never ordered (forecast 0): nothing to forecast from.
NO_ORDER_VALUE_REASONS: tuple[ValueReason, ...] = (
    ValueReason("has_ordered", None, "has not ordered yet: no spend expected"),
)
#: The factors, in the order of the terms: the regression's, then BG/NBD + Gamma-Gamma's.
REGRESSION_FACTORS = ("log_spend_to_date", "log_bgnbd_value")
BGNBD_FACTORS = ("expected_orders", "spend_per_order")
# Parts below this are read as this (log 0 is no term): a forecast of next to nothing.
_FLOOR = 1e-6


def bgnbd_terms(
    expected_orders: float, spend_per_order: float, newcomer: tuple[float, float]
) -> list[float]:
    """BG/NBD + Gamma-Gamma's terms: the log of expected orders and of spend per order, each
    over what the models expect of a customer they know nothing of (``newcomer``).

    >>> [round(t, 3) for t in bgnbd_terms(2.0, 50.0, (1.0, 100.0))]
    [0.693, -0.693]
    """
    return [
        math.log(max(part, _FLOOR) / max(typical, _FLOOR))
        for part, typical in zip((expected_orders, spend_per_order), newcomer, strict=True)
    ]


def bgnbd_terms_many(
    expected_orders: np.ndarray, spend_per_order: np.ndarray, newcomer: tuple[float, float]
) -> np.ndarray:
    """:func:`bgnbd_terms` of many customers, one column per factor."""
    parts = np.maximum(np.column_stack([expected_orders, spend_per_order]), _FLOOR)
    return np.log(parts / np.maximum(newcomer, _FLOOR))


def value_reasons(
    terms: Sequence[float],
    *,
    regression: bool,
    spend_to_date: float,
    spend_rank: float,
    expected_orders: float,
    spend_per_order: float,
    bgnbd_value: float,
    newcomer: tuple[float, float],
    horizon_days: float,
) -> tuple[ValueReason, ...]:
    """The factors behind a forecast, strongest first: the regression's ``terms`` (spend to
    date, BG/NBD's forecast) when it serves, else BG/NBD + Gamma-Gamma's (expected orders,
    spend per order). ``spend_rank`` is the share of customers who spent less to date.

    >>> [r.reason for r in value_reasons([1.2, 0.4], regression=True, spend_to_date=4210.0,
    ...     spend_rank=0.957, expected_orders=3.1, spend_per_order=100.0, bgnbd_value=310.0,
    ...     newcomer=(1.3, 150.0), horizon_days=90.0)]  # doctest: +NORMALIZE_WHITESPACE
    ['spent 4,210 to date, more than 95% of customers',
     'orders and spends per order like a customer BG/NBD expects 310 from in 90 days']
    """
    factors = REGRESSION_FACTORS if regression else BGNBD_FACTORS
    if regression:
        texts = (
            f"spent {spend_to_date:,.0f} to date, more than {int(100 * spend_rank)}% of customers",
            f"orders and spends per order like a customer BG/NBD expects {bgnbd_value:,.0f} "
            f"from in {horizon_days:.0f} days",
        )
    else:
        orders, per_order = newcomer
        texts = (
            f"{expected_orders:.1f} orders expected in the next {horizon_days:.0f} days "
            f"({orders:.1f} from a new customer)",
            f"expected to spend {spend_per_order:,.0f} per order "
            f"({per_order:,.0f} from a new customer)",
        )
    first, second = terms
    if abs(second) > abs(first):  # two factors: the larger first (the first on a tie)
        return ValueReason(factors[1], second, texts[1]), ValueReason(factors[0], first, texts[0])
    return ValueReason(factors[0], first, texts[0]), ValueReason(factors[1], second, texts[1])


class ValueReasonBook:
    """The value reasons of a batch of scores, as arrays (each score's terms and what phrasing
    them needs), phrased one score at a time when read (:class:`LazyReasons`)."""

    __slots__ = ("_arrays", "_columns", "_newcomer", "_regression", "horizon_days")

    def __init__(
        self,
        terms: np.ndarray,
        *,
        regression: bool,
        spend_to_date: np.ndarray,
        spend_rank: np.ndarray,
        expected_orders: np.ndarray,
        spend_per_order: np.ndarray,
        bgnbd_value: np.ndarray,
        newcomer: tuple[float, float],
        horizon_days: float,
    ) -> None:
        self._regression, self._newcomer, self.horizon_days = regression, newcomer, horizon_days
        self._arrays = (terms, spend_to_date, spend_rank, expected_orders, spend_per_order,
                        bgnbd_value)  # fmt: skip
        # The columns as lists, made when the first reason is read (one call per column).
        self._columns: tuple[list[Any], ...] | None = None

    def phrase(self, i: int) -> tuple[ValueReason, ...]:
        """The ``i``-th score's reasons, what :func:`value_reasons` gives for it."""
        if self._columns is None:
            self._columns = tuple(array.tolist() for array in self._arrays)
        terms, spent, rank, orders, per_order, bgnbd = self._columns
        return value_reasons(
            terms[i], regression=self._regression, spend_to_date=spent[i],
            spend_rank=rank[i], expected_orders=orders[i], spend_per_order=per_order[i],
            bgnbd_value=bgnbd[i], newcomer=self._newcomer, horizon_days=self.horizon_days,
        )  # fmt: skip

    def reasons(self, bought: np.ndarray, cancelled: np.ndarray) -> list[Sequence[ValueReason]]:
        """Each score's reasons, phrased when read: the rules' for a customer who never
        ordered or cancelled."""
        reasons: list[Sequence[ValueReason]] = [
            LazyReasons(self, i) if has else NO_ORDER_VALUE_REASONS
            for i, has in enumerate(bought.tolist())
        ]
        for i in np.flatnonzero(cancelled).tolist():
            reasons[i] = CANCELLED_VALUE_REASONS
        return reasons
