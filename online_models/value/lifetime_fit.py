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
from typing import Any

import numpy as np
from scipy import optimize, special

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
    bg = _fit(lambda p: -np.mean(_bgnbd_ll(p[0], p[1], p[2], p[3], x, t_x, age)), share.params[:4])
    gg = _fit(
        lambda p: -np.mean(_gamma_gamma_ll(p[0], p[1], p[2], x + 1.0, mean_spend)),
        share.params[4:],
    )
    return LifetimeShare(share.keys, share.summaries, bg + gg, now, int(buyers.sum()))


def _fit(nll: Any, start: Sequence[float]) -> tuple[float, ...]:
    """Minimise ``nll`` over positive parameters (searched in log space)."""
    with np.errstate(all="ignore"):
        result = optimize.minimize(
            lambda lp: nll(np.exp(lp)), np.log(start), method="Nelder-Mead",
            options={"maxiter": 600, "xatol": 1e-4, "fatol": 1e-7},
        )  # fmt: skip
    found = np.exp(result.x)
    if not np.isfinite(result.fun) or not np.isfinite(found).all():
        return tuple(start)
    return tuple(float(v) for v in np.clip(found, 1e-4, 1e6))


def _bgnbd_ll(r: float, alpha: float, a: float, b: float, x: Any, t_x: Any, age: Any) -> Any:
    """BG/NBD log-likelihood of customers with ``x`` repeat orders, the latest ``t_x`` days
    after the first, observed for ``age`` days since the first."""
    common = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    alive = common + special.betaln(a, b + x) - special.betaln(a, b)
    alive = alive - (r + x) * np.log(alpha + age)
    gone = common + special.betaln(a + 1, b + np.maximum(x - 1, 0)) - special.betaln(a, b)
    gone = gone - (r + x) * np.log(alpha + t_x)
    return np.where(x > 0, np.logaddexp(alive, np.where(x > 0, gone, -np.inf)), alive)


def _gamma_gamma_ll(p: float, q: float, gamma: float, n: Any, mean: Any) -> Any:
    """Gamma-Gamma log-likelihood of ``n`` orders averaging ``mean``."""
    return (
        special.gammaln(p * n + q) - special.gammaln(p * n) - special.gammaln(q)
        + q * np.log(gamma) + p * n * np.log(n) + (p * n - 1) * np.log(mean)
        - (p * n + q) * np.log(gamma + mean * n)
    )  # fmt: skip
