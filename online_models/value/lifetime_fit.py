"""What a customer is worth: BG/NBD for orders and dropout, Gamma-Gamma for spend per order.

Per customer the models need only what the profile keeps: orders, the first and latest order
times and net spend. What they learn from everyone are seven population parameters: BG/NBD's
``r, alpha`` (how often customers order) and ``a, b`` (how likely they drop out after an
order), Gamma-Gamma's ``p, q, gamma`` (how much an order is worth). They are fitted by maximum
likelihood on a sample of customers that the stream keeps current: a bottom-k sketch keyed by
a hash of the customer id (a uniform sample of customers, each with their latest summary),
which merges exactly across workers, so the group's model holds one sample and one fit.

References: Fader, Hardie and Lee (2005), "Counting your customers the easy way: an
alternative to the Pareto/NBD model"; Fader, Hardie and Lee (2005), "RFM and CLV: using
iso-value curves for customer base analysis" (Gamma-Gamma).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

import numpy as np
from scipy import optimize, special
from threadpoolctl import ThreadpoolController

from online_models.customer.activity import DAY

__all__ = ["PRIOR", "LifetimeShare", "fit_lifetime", "merge_lifetime", "sketch_key", "sketch_keys"]

logger = logging.getLogger(__name__)


#: Starting parameters (r, alpha, a, b, p, q, gamma): a few orders a year, a small dropout
#: chance per order, spend per order around 50; replaced by the first fit.
PRIOR = (0.5, 30.0, 0.5, 5.0, 3.0, 3.0, 100.0)
# Summaries of the sample: first order, latest order, orders, net spend, as of (event time).
_COLUMNS = ("first", "last", "orders", "spend", "as_of")


# BLAKE2b keyed for the sample; copies of it hash each id (setting up its parameters on every
# call costs four times the hash of a short id).
_SKETCH_HASH = hashlib.blake2b(digest_size=8, person=b"crm-clv")


def sketch_key(customer_id: str) -> int:
    """The customer's place in the sample: the smallest ``sample_size`` keys are kept.

    >>> sketch_key("c-1") == sketch_key("c-1") != sketch_key("c-2")
    True
    """
    digest = _SKETCH_HASH.copy()
    digest.update(customer_id.encode("utf-8"))
    return int.from_bytes(digest.digest(), "little") >> 1  # fits a signed 64-bit integer


def sketch_keys(customer_ids: Sequence[str]) -> np.ndarray:
    """:func:`sketch_key` of each id, as int64.

    >>> sketch_keys(["c-1", "c-2"]).tolist() == [sketch_key("c-1"), sketch_key("c-2")]
    True
    """
    digests = []
    for customer_id in customer_ids:
        digest = _SKETCH_HASH.copy()
        digest.update(customer_id.encode("utf-8"))
        digests.append(digest.digest())
    keys = np.frombuffer(b"".join(digests), dtype="<u8") >> np.uint64(1)
    return keys.astype(np.int64)


@dataclass(frozen=True)
class LifetimeShare:
    """The lifetime model's shared part, or what one worker saw since its last delta: a sample
    of customer summaries (by :func:`sketch_key`, the latest summary of each) and, in the
    group's model, the parameters fitted on it (``params``, fitted at event time
    ``fitted_at`` on ``fitted_on`` customers)."""

    keys: np.ndarray  # int64, ascending
    summaries: np.ndarray  # (n, 5): first, last, orders, spend, as_of
    params: tuple[float, ...] = PRIOR
    fitted_at: float = -math.inf
    fitted_on: int = 0

    @classmethod
    def empty(cls) -> LifetimeShare:
        """No customer, the prior parameters."""
        return cls(np.zeros(0, np.int64), np.zeros((0, len(_COLUMNS))))

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Metadata and arrays for a model record."""
        meta = {
            "params": list(self.params),
            "fitted_at": self.fitted_at if math.isfinite(self.fitted_at) else None,
            "fitted_on": self.fitted_on,
        }
        return meta, {"keys": self.keys, "summaries": self.summaries}

    @classmethod
    def from_arrays(
        cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], *, sample_size: int
    ) -> LifetimeShare:
        """The share a model record carries; ValueError if it does not fit the model."""
        keys, summaries = arrays["keys"], arrays["summaries"]
        params = meta.get("params")
        if (
            keys.ndim != 1
            or keys.dtype.kind != "i"
            or summaries.shape != (len(keys), len(_COLUMNS))
            or len(keys) > sample_size
            or not np.isfinite(summaries).all()
            or not isinstance(params, list)
            or len(params) != len(PRIOR)
            or not all(isinstance(v, int | float) and v > 0 and math.isfinite(v) for v in params)
        ):
            msg = f"lifetime share of {keys.shape} keys, {summaries.shape} summaries and params "
            msg += f"{params!r} does not fit a sample of {sample_size}"
            raise ValueError(msg)
        fitted_at = meta.get("fitted_at")
        return cls(
            keys.astype(np.int64),
            summaries.astype(float),
            tuple(float(v) for v in params),
            -math.inf if fitted_at is None else float(fitted_at),
            int(meta.get("fitted_on", 0)),
        )


def merge_lifetime(a: LifetimeShare, b: LifetimeShare, *, sample_size: int) -> LifetimeShare:
    """``a`` and ``b`` together: the latest summary of each customer, the ``sample_size``
    smallest keys kept (exact: the order of merging does not matter); ``a``'s parameters.

    >>> one = LifetimeShare(np.array([5, 9]), np.array([[0, 1, 2, 10, 3], [0, 0, 1, 5, 3.0]]))
    >>> two = LifetimeShare(np.array([5, 7]), np.array([[0, 2, 3, 20, 4], [1, 1, 1, 9, 4.0]]))
    >>> merged = merge_lifetime(one, two, sample_size=2)
    >>> merged.keys.tolist(), merged.summaries[:, 2].tolist()
    ([5, 7], [3.0, 1.0])
    """
    keys = np.concatenate([a.keys, b.keys])
    summaries = np.concatenate([a.summaries, b.summaries])
    # The newest summary of a customer wins: sort by key, then as_of descending.
    order = np.lexsort((-summaries[:, 4], keys))
    keys, summaries = keys[order], summaries[order]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    keys, summaries = keys[first][:sample_size], summaries[first][:sample_size]
    return LifetimeShare(keys, summaries, a.params, a.fitted_at, a.fitted_on)


def fit_lifetime(share: LifetimeShare, *, now: float) -> LifetimeShare:
    """``share`` with its parameters fitted by maximum likelihood on its sample (warm-started
    from the current ones); the sample's buyers as of each summary's time."""
    first, last, orders, spend, as_of = share.summaries.T
    buyers = orders >= 1
    if buyers.sum() < 20:
        return share
    x = orders[buyers] - 1.0
    t_x = (last[buyers] - first[buyers]) / DAY
    age = np.maximum((as_of[buyers] - first[buyers]) / DAY, t_x)
    mean_spend = np.maximum(spend[buyers] / orders[buyers], 0.01)
    bg = _fit(_bgnbd_nll, share.params[:4], _Repeats.of(x), t_x, age)
    gg = _fit(_gamma_gamma_nll, share.params[4:], _Repeats.of(x + 1.0), mean_spend)
    return LifetimeShare(share.keys, share.summaries, bg + gg, now, int(buyers.sum()))


#: Bounds of every parameter. A homogeneous population drives BG/NBD's ``r`` and ``alpha``
#: (or ``a`` and ``b``) up together with their ratio fixed; the bound stops them there.
_LOWEST, _HIGHEST = 1e-4, 1e6
_LOG_BOUNDS = (math.log(_LOWEST), math.log(_HIGHEST))


def _fit(nll: Any, start: Sequence[float], *data: Any) -> tuple[float, ...]:
    """Minimise ``nll(log_params, *data)``, which returns the mean negative log-likelihood and
    its gradient in log parameters, over parameters within the bounds (L-BFGS-B).

    Searched in log space, so the bounds are the optimiser's own: a point outside them is never
    clipped afterwards (clipping one of two parameters that grow together changes their ratio,
    which is what the model predicts with)."""
    lowest, highest = _LOG_BOUNDS
    begin = np.clip(np.log(np.asarray(start, dtype=float)), lowest, highest)
    with np.errstate(all="ignore"), _blas().limit(limits=1, user_api="blas"):
        result = optimize.minimize(
            nll, begin, args=data, jac=True, method="L-BFGS-B",
            bounds=[_LOG_BOUNDS] * len(begin), options={"maxiter": 200, "ftol": 1e-12},
        )  # fmt: skip
    found = np.exp(np.clip(result.x, lowest, highest))
    if not np.isfinite(result.fun) or not np.isfinite(found).all():
        return tuple(start)
    return tuple(float(v) for v in found)


@cache
def _blas() -> ThreadpoolController:
    """The BLAS libraries loaded (scipy's among them, once this module is imported).

    L-BFGS-B's steps are BLAS calls on vectors of a few parameters: with BLAS threads free to
    start for each, a fit took six times as long on a busy 2-core machine."""
    return ThreadpoolController()


class _Repeats(NamedTuple):
    """Whole counts (orders) of many customers as their distinct values and where each
    customer's sits: the special functions of a count are computed once per distinct value."""

    values: np.ndarray
    at: np.ndarray

    @classmethod
    def of(cls, counts: np.ndarray) -> _Repeats:
        values, index = np.unique(counts, return_inverse=True)
        return cls(values, index)

    def each(self, per_value: np.ndarray) -> np.ndarray:
        """``per_value`` (one entry per distinct count) at every customer."""
        return per_value[self.at]


def _bgnbd_nll(
    log_params: np.ndarray, repeats: _Repeats, t_x: np.ndarray, age: np.ndarray
) -> tuple[float, np.ndarray]:
    """BG/NBD's mean negative log-likelihood of customers with ``repeats`` repeat orders, the
    latest ``t_x`` days after the first, observed for ``age`` days since the first; and its
    gradient in the log parameters (log r, log alpha, log a, log b)."""
    r, alpha, a, b = np.exp(log_params)
    x_values = repeats.values
    x = repeats.each(x_values)
    psi = special.digamma
    # Per distinct repeat count: the gamma and beta functions and their derivatives.
    fewer = np.maximum(x_values - 1.0, 0.0)
    common = special.gammaln(r + x_values) - special.gammaln(r)
    alive_beta = special.betaln(a, b + x_values) - special.betaln(a, b)
    gone_beta = special.betaln(a + 1.0, b + fewer) - special.betaln(a, b)
    psi_ab, psi_abx = psi(a + b), psi(a + b + x_values)
    d_common_r = psi(r + x_values) - psi(r)
    d_alive_a, d_alive_b = psi_ab - psi_abx, psi(b + x_values) - psi(b) + psi_ab - psi_abx
    d_gone_a = psi(a + 1.0) - psi(a) + psi_ab - psi_abx
    d_gone_b = psi(b + fewer) - psi(b) + psi_ab - psi_abx
    # Per customer.
    log_alive_rate, log_gone_rate = np.log(alpha + age), np.log(alpha + t_x)
    shared = repeats.each(common) + r * math.log(alpha)
    alive = shared + repeats.each(alive_beta) - (r + x) * log_alive_rate
    repeated = x > 0
    gone = np.where(repeated, shared + repeats.each(gone_beta) - (r + x) * log_gone_rate, -np.inf)
    ll = np.logaddexp(alive, gone)
    w_alive = np.exp(alive - ll)
    w_gone = np.where(repeated, np.exp(gone - ll), 0.0)
    d_shared_r = repeats.each(d_common_r) + math.log(alpha)
    gradient = np.array([
        np.mean(d_shared_r - w_alive * log_alive_rate - w_gone * log_gone_rate) * r,
        np.mean(r / alpha - (r + x) * (w_alive / (alpha + age) + w_gone / (alpha + t_x)))
        * alpha,
        np.mean(w_alive * repeats.each(d_alive_a) + w_gone * repeats.each(d_gone_a)) * a,
        np.mean(w_alive * repeats.each(d_alive_b) + w_gone * repeats.each(d_gone_b)) * b,
    ])  # fmt: skip
    return -float(np.mean(ll)), -gradient


def _gamma_gamma_nll(
    log_params: np.ndarray, orders: _Repeats, mean: np.ndarray
) -> tuple[float, np.ndarray]:
    """Gamma-Gamma's mean negative log-likelihood of customers with ``orders`` orders
    averaging ``mean``, and its gradient in the log parameters (log p, log q, log gamma)."""
    p, q, gamma = np.exp(log_params)
    n_values = orders.values
    n = orders.each(n_values)
    psi = special.digamma
    pn_values = p * n_values
    per_count = (
        special.gammaln(pn_values + q) - special.gammaln(pn_values)
        + pn_values * np.log(n_values)
    )  # fmt: skip
    psi_pnq, psi_pn = psi(pn_values + q), psi(pn_values)
    log_mean = np.log(mean)
    log_total = np.log(gamma + mean * n)
    pn = p * n
    ll = (
        orders.each(per_count) - special.gammaln(q) + q * math.log(gamma)
        + (pn - 1.0) * log_mean - (pn + q) * log_total
    )  # fmt: skip
    d_p = n * (orders.each(psi_pnq - psi_pn + np.log(n_values)) + log_mean - log_total)
    d_q = orders.each(psi_pnq) - psi(q) + math.log(gamma) - log_total
    d_gamma = q / gamma - (pn + q) / (gamma + mean * n)
    gradient = np.array([np.mean(d_p) * p, np.mean(d_q) * q, np.mean(d_gamma) * gamma])
    return -float(np.mean(ll)), -gradient
