"""What a customer is worth: BG/NBD for orders and dropout, Gamma-Gamma for spend per order.

Per customer the models need only what the profile keeps: orders, the first and latest order
times and net spend; the seven population parameters they share are fitted on a sample of
customers in :mod:`online_models.value.lifetime_fit`.

References: Fader, Hardie and Lee (2005), "Counting your customers the easy way: an
alternative to the Pareto/NBD model"; Fader, Hardie and Lee (2005), "RFM and CLV: using
iso-value curves for customer base analysis" (Gamma-Gamma).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import special

from online_models.customer.activity import DAY
from online_models.value.lifetime_fit import (
    LifetimeShare,
    fit_lifetime,
    merge_lifetime,
    sketch_key,
    sketch_keys,
)

__all__ = ["LifetimeModel", "LifetimeOutlooks", "LifetimeScore"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LifetimeScore:
    """A customer's outlook as of event time ``as_of``.

    ``p_alive``: the probability that the customer still buys (has not dropped out);
    ``expected_orders``: orders expected over the next ``horizon_days``; ``predicted_clv``:
    spend expected over the next ``clv_days`` (expected orders x expected spend per order);
    ``next_order_expected``: the event time by which an active customer's expected number of
    new orders reaches one (``as_of`` plus the mean days between orders, alpha + T over r + x,
    of BG/NBD's posterior purchase rate); None for a customer who never ordered.
    """

    p_alive: float
    expected_orders: float
    predicted_clv: float
    next_order_expected: float | None
    spend_per_order: float


class LifetimeOutlooks(NamedTuple):
    """:class:`LifetimeScore` of many customers, as arrays (one entry per customer).

    ``next_order_expected`` and ``no_order`` (BG/NBD's chance of no order within the churn
    horizon) are NaN where :meth:`LifetimeModel.predict` and
    :meth:`LifetimeModel.no_order_probability` answer None: customers who never ordered.
    ``spend_per_order`` is Gamma-Gamma's expected spend per order (0 for them).
    """

    p_alive: np.ndarray
    expected_orders: np.ndarray
    predicted_clv: np.ndarray
    next_order_expected: np.ndarray
    no_order: np.ndarray
    spend_per_order: np.ndarray


class LifetimeModel:
    """BG/NBD and Gamma-Gamma with population parameters learned from the stream.

    >>> model = LifetimeModel(sample_size=100)
    >>> day = 86_400.0
    >>> for n in range(60):
    ...     first = n * day
    ...     orders = 1 + n % 5
    ...     model.observe(f"c{n}", first, first + 20 * day * (orders - 1), orders,
    ...                   40.0 * orders, now=200 * day)
    >>> model.fit(200 * day)
    >>> score = model.predict(first=0.0, last=80 * day, orders=5, spend=200.0,
    ...                       now=100 * day, horizon_days=90, clv_days=365)
    >>> 0 < score.p_alive <= 1, score.expected_orders > 0, score.predicted_clv > 0
    (True, True, True)
    """

    def __init__(self, sample_size: int = 5_000, refit_days: float = 1.0) -> None:
        self.sample_size = sample_size
        self.refit_days = refit_days
        #: In a group: the group's model fits the parameters, never a worker alone.
        self.shared = False
        self._live = LifetimeShare.empty()
        self._unsent: dict[int, Sequence[float]] = {}  # summaries by sketch key
        # A new customer's outlook, with the parameters and horizon it is for.
        self._newcomer: tuple[tuple[tuple[float, ...], float], tuple[float, float]] | None = None

    @property
    def params(self) -> tuple[float, ...]:
        """The fitted parameters: r, alpha, a, b (BG/NBD), p, q, gamma (Gamma-Gamma)."""
        return self._live.params

    def observe(
        self,
        customer_id: str,
        first: float | None,
        last: float | None,
        orders: int,
        spend: float,
        *,
        now: float,
    ) -> None:
        """A customer's latest summary; kept if they belong to the sample."""
        if first is None or last is None or orders < 1:
            return
        key = sketch_key(customer_id)
        keys = self._live.keys
        if len(keys) >= self.sample_size and key > keys[-1]:
            return  # not in the sample: most customers leave at this cheap test
        self._unsent[key] = (first, last, float(orders), spend, now)

    def observe_many(
        self,
        customer_ids: Sequence[str],
        *,
        first: np.ndarray,
        last: np.ndarray,
        orders: np.ndarray,
        spend: np.ndarray,
        now: np.ndarray,
    ) -> None:
        """:meth:`observe` of many customers in turn (``first`` and ``last`` NaN for one who
        never ordered), hashing only those who ordered.

        >>> one, many = LifetimeModel(sample_size=1), LifetimeModel(sample_size=1)
        >>> for name in ("a", "b", "c"):
        ...     one.observe(name, 0.0, 5.0, 2, 30.0, now=9.0)
        >>> many.observe_many(["a", "b", "c", "d"], first=np.array([0.0, 0, 0, np.nan]),
        ...     last=np.array([5.0, 5, 5, np.nan]), orders=np.array([2, 2, 2, 0]),
        ...     spend=np.full(4, 30.0), now=np.full(4, 9.0))
        >>> one._unsent.keys() == many._unsent.keys()
        True
        """
        bought = np.flatnonzero(~(np.isnan(first) | np.isnan(last)) & (orders >= 1))
        if not len(bought):
            return
        keys = sketch_keys([customer_ids[i] for i in bought.tolist()])
        sampled = self._live.keys
        if len(sampled) >= self.sample_size:
            # Not in the sample: most customers leave at this cheap test.
            kept = keys <= sampled[-1]
            bought, keys = bought[kept], keys[kept]
        summaries = np.column_stack(
            [first[bought], last[bought], orders[bought].astype(float), spend[bought], now[bought]]
        )
        self._unsent.update(zip(keys.tolist(), summaries.tolist(), strict=True))

    def delta(self) -> LifetimeShare:
        """The summaries seen since the last delta."""
        share = self._pending_share()
        self._live = merge_lifetime(self._live, share, sample_size=self.sample_size)
        self._unsent = {}
        return share

    def apply(self, group: LifetimeShare, pending: Sequence[LifetimeShare] = ()) -> None:
        """Predict with the group's fit and sample plus this model's summaries not merged."""
        live = group
        for share in (*pending, self._pending_share()):
            live = merge_lifetime(live, share, sample_size=self.sample_size)
        self._live = live

    def fit(self, now: float) -> None:
        """Fit the parameters on the sample (a model alone; in a group the group's does)."""
        self._live = fit_lifetime(
            merge_lifetime(self._live, self._pending_share(), sample_size=self.sample_size),
            now=now,
        )

    def fit_due(self, now: float) -> bool:
        """Whether a model alone should refit (every ``refit_days`` of event time)."""
        return not self.shared and now - self._live.fitted_at >= self.refit_days * DAY

    def fits_due(self, now: np.ndarray) -> np.ndarray:
        """:meth:`fit_due` at each of many event times, as the fit stands now."""
        if self.shared:
            return np.zeros(np.shape(now), dtype=bool)
        return np.asarray(now) - self._live.fitted_at >= self.refit_days * DAY

    def predict(
        self,
        *,
        first: float | None,
        last: float | None,
        orders: int,
        spend: float,
        now: float,
        horizon_days: float,
        clv_days: float,
    ) -> LifetimeScore:
        """The outlook of a customer with these totals, as of event time ``now``."""
        r, alpha, a, b, p, q, gamma = self._live.params
        per_order = gamma * p / (q - 1) if q > 1 else 0.0  # the population's mean
        if first is None or last is None or orders < 1:
            return LifetimeScore(1.0, 0.0, 0.0, None, per_order)
        x, t_x, age, dropped = _bgnbd_position(r, alpha, a, b, first, last, orders, now)
        p_alive = 1.0 / (1.0 + dropped)
        mean = max(spend / orders, 0.0)
        per_order = (
            (gamma + mean * orders) * p / (p * orders + q - 1) if p * orders + q > 1 else mean
        )
        rate = (r + x) / (alpha + age)  # posterior mean orders per day of an active customer
        return LifetimeScore(
            p_alive=p_alive,
            expected_orders=_expected_orders(r, alpha, a, b, x, t_x, age, horizon_days, dropped),
            predicted_clv=per_order
            * _expected_orders(r, alpha, a, b, x, t_x, age, clv_days, dropped),
            next_order_expected=now + DAY / rate if rate > 0 else None,
            spend_per_order=per_order,
        )

    def newcomer(self, horizon_days: float) -> tuple[float, float]:
        """What BG/NBD and Gamma-Gamma expect of a customer they know nothing of yet (just
        acquired, the population's prior): orders over the next ``horizon_days``, and spend
        per order (the population's mean).

        >>> orders, per_order = LifetimeModel().newcomer(90.0)
        >>> orders > 0, per_order > 0
        (True, True)
        """
        params = self._live.params
        known = getattr(self, "_newcomer", None)  # a model pickled before it has none
        if known is not None and known[0] == (params, horizon_days):
            return known[1]
        r, alpha, a, b, p, q, gamma = params
        per_order = gamma * p / (q - 1) if q > 1 else 0.0
        outlook = _expected_orders(r, alpha, a, b, 0.0, 0.0, 0.0, horizon_days, 0.0), per_order
        self._newcomer = ((params, horizon_days), outlook)  # the parameters change once a day
        return outlook

    def no_order_probability(
        self, *, first: float | None, last: float | None, orders: int, now: float, days: float
    ) -> float | None:
        """BG/NBD's probability of no order in the next ``days``: dropped out, or alive and
        silent that long (an alive customer drops out only after an order); None for a
        customer who never ordered.

        >>> LifetimeModel().no_order_probability(first=0.0, last=0.0, orders=1, now=0.0,
        ...                                      days=90) < 1
        True
        """
        if first is None or last is None or orders < 1:
            return None
        r, alpha, a, b = self._live.params[:4]
        x, _, age, dropped = _bgnbd_position(r, alpha, a, b, first, last, orders, now)
        p_alive = 1.0 / (1.0 + dropped)
        silent = ((alpha + age) / (alpha + age + days)) ** (r + x)
        return (1.0 - p_alive) + p_alive * silent

    def predict_many(
        self,
        *,
        first: np.ndarray,
        last: np.ndarray,
        orders: np.ndarray,
        spend: np.ndarray,
        now: np.ndarray,
        horizon_days: float,
        clv_days: float,
    ) -> LifetimeOutlooks:
        """:meth:`predict` and :meth:`no_order_probability` (over ``horizon_days``) of many
        customers at once; ``first`` and ``last`` are NaN for a customer who never ordered.

        >>> model = LifetimeModel()
        >>> many = model.predict_many(first=np.array([0.0, np.nan]), last=np.array([0.0, np.nan]),
        ...     orders=np.array([1, 0]), spend=np.array([9.0, 0.0]), now=np.array([5e6, 5e6]),
        ...     horizon_days=90, clv_days=365)
        >>> one = model.predict(first=0.0, last=0.0, orders=1, spend=9.0, now=5e6,
        ...                     horizon_days=90, clv_days=365)
        >>> float(many.predicted_clv[0]) == one.predicted_clv, float(many.predicted_clv[1])
        (True, 0.0)
        """
        r, alpha, a, b, p, q, gamma = self._live.params
        bought = ~(np.isnan(first) | np.isnan(last)) & (orders >= 1)
        orders = np.where(bought, orders, 1).astype(float)
        first, last = np.where(bought, first, 0.0), np.where(bought, last, 0.0)
        x = orders - 1.0
        t_x = np.maximum(last - first, 0.0) / DAY
        age = np.maximum(np.maximum(now - first, last - first), 0.0) / DAY
        with np.errstate(all="ignore"):
            dropped = np.where(
                x > 0, (a / (b + x - 1)) * ((alpha + age) / (alpha + t_x)) ** (r + x), 0.0
            )
            p_alive = 1.0 / (1.0 + dropped)
            silent = ((alpha + age) / (alpha + age + horizon_days)) ** (r + x)
            mean = np.maximum(spend / orders, 0.0)
            per_order = np.where(
                p * orders + q > 1, (gamma + mean * orders) * p / (p * orders + q - 1), mean
            )
            rate = (r + x) / (alpha + age)
            next_order = np.where(rate > 0, now + DAY / rate, np.nan)
            expected = _expected_orders_many(r, alpha, a, b, x, t_x, age, horizon_days, dropped)
            clv = per_order * _expected_orders_many(r, alpha, a, b, x, t_x, age, clv_days, dropped)
        return LifetimeOutlooks(
            p_alive=np.where(bought, p_alive, 1.0),
            expected_orders=np.where(bought, expected, 0.0),
            predicted_clv=np.where(bought, clv, 0.0),
            next_order_expected=np.where(bought, next_order, np.nan),
            no_order=np.where(bought, (1.0 - p_alive) + p_alive * silent, np.nan),
            spend_per_order=np.where(bought, per_order, 0.0),
        )

    def _pending_share(self) -> LifetimeShare:
        if not self._unsent:
            return LifetimeShare.empty()
        keys = np.fromiter(self._unsent.keys(), dtype=np.int64, count=len(self._unsent))
        summaries = np.array(list(self._unsent.values()), dtype=float)
        order = np.argsort(keys)
        return LifetimeShare(keys[order], summaries[order])


def _bgnbd_position(
    r: float, alpha: float, a: float, b: float, first: float, last: float, orders: int, now: float
) -> tuple[float, float, float, float]:
    """A customer's BG/NBD summary as of ``now`` (repeat orders x, time of the last t_x and
    age T, in days) and the odds that they have dropped out, P(dropped) / P(alive)."""
    x = orders - 1.0
    t_x = max(last - first, 0.0) / DAY
    age = max(now - first, last - first, 0.0) / DAY
    dropped = (a / (b + x - 1)) * ((alpha + age) / (alpha + t_x)) ** (r + x) if x > 0 else 0.0
    return x, t_x, age, dropped


#: Within ``_NEAR_ONE`` of 1, BG/NBD's ``a`` is evaluated ``_STEP`` to each side
#: (``_expected_orders``): the error of that mean is of the order of the step squared (about
#: 1e-7), far below the digits the formula itself loses next to 1 (a fit of a = 1 - 1.1e-6
#: lost 8 of them).
_NEAR_ONE = 1e-4
_STEP = 2 * _NEAR_ONE


def _expected_orders(
    r: float, alpha: float, a: float, b: float, x: float, t_x: float, age: float, days: float,
    dropped: float,
) -> float:  # fmt: skip
    """BG/NBD's expected orders over the next ``days`` (Fader, Hardie and Lee 2005, eq. 10)."""
    if abs(a - 1.0) < _NEAR_ONE:
        # The formula's removable singularity: 1/(a - 1) times a difference that vanishes
        # with it loses digits near a = 1, so take the mean of both sides a step away.
        return 0.5 * sum(
            _expected_orders(r, alpha, 1.0 + side, b, x, t_x, age, days, dropped)
            for side in (_STEP, -_STEP)
        )
    z = days / (alpha + age + days)
    tail = ((alpha + age) / (alpha + age + days)) ** (r + x)
    hyper = float(special.hyp2f1(r + x, b + x, a + b + x - 1, z))
    expected = (a + b + x - 1) / (a - 1) * (1.0 - tail * hyper) / (1.0 + dropped)
    return max(expected, 0.0) if math.isfinite(expected) else 0.0


def _expected_orders_many(
    r: float, alpha: float, a: float, b: float, x: np.ndarray, t_x: np.ndarray,
    age: np.ndarray, days: float, dropped: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """:func:`_expected_orders` over arrays (``hyp2f1`` is a ufunc)."""
    if abs(a - 1.0) < _NEAR_ONE:
        below = _expected_orders_many(r, alpha, 1.0 - _STEP, b, x, t_x, age, days, dropped)
        above = _expected_orders_many(r, alpha, 1.0 + _STEP, b, x, t_x, age, days, dropped)
        return 0.5 * (below + above)
    z = days / (alpha + age + days)
    tail = ((alpha + age) / (alpha + age + days)) ** (r + x)
    hyper = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
    expected = (a + b + x - 1) / (a - 1) * (1.0 - tail * hyper) / (1.0 + dropped)
    return np.where(np.isfinite(expected), np.maximum(expected, 0.0), 0.0)
