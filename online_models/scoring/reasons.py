"""Why a customer is at risk: the churn model's strongest push, in the CRM's words.

A logistic regression's log-odds are a sum of one term per feature (its weight times the
scaled feature value): the terms are the factors' signed contributions, exact for the model
that produced the risk. The three largest positive ones are a score's reasons; a feature that
pulls the risk down is never one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, overload

import numpy as np

from online_models.customer.profile import CustomerProfile
from online_models.scoring.batch_features import ProfileFields

__all__ = [
    "CANCELLED_REASONS",
    "ChurnReason",
    "LazyReasons",
    "ReasonBook",
    "churn_reasons",
    "phrase",
]

logger = logging.getLogger(__name__)

#: At most this many reasons per score.
TOP_REASONS = 3


@dataclass(frozen=True, slots=True)
class ChurnReason:
    """One factor pushing a customer's churn risk up: the churn feature, its contribution to
    the risk's log-odds (None for a rule, such as a cancellation), and what it means in CRM
    words."""

    factor: str
    contribution: float | None
    reason: str

    def to_dict(self) -> dict[str, object]:
        """Plain data for the score hash and alerts."""
        contribution = None if self.contribution is None else round(self.contribution, 4)
        return {"factor": self.factor, "contribution": contribution, "reason": self.reason}


#: The reasons of a cancelled customer's risk (1): a rule, not the model.
CANCELLED_REASONS: tuple[ChurnReason, ...] = (
    ChurnReason("subscription_cancel", None, "cancelled the subscription"),
)


def churn_reasons(
    contributions: Mapping[str, float],
    profile: CustomerProfile,
    now: float,
    expected_orders: float = 0.0,
    horizon_days: float = 90.0,
    no_order_chance: float | None = None,
) -> list[ChurnReason]:
    """The (at most three) factors pushing the risk up the most, strongest first.

    Factor ``expected_orders`` is the BG/NBD half of the served risk: it is phrased with
    BG/NBD's ``no_order_chance`` within ``horizon_days`` (what raised the risk) and the
    ``expected_orders`` over them.

    >>> p = CustomerProfile.new(0.0)
    >>> p.orders, p.last_order_at, p.gap_mean_days, p.gaps = 5, 0.0, 12.0, 4
    >>> [r.reason for r in churn_reasons({"log_days_since_order": 1.2, "log_orders": -0.4},
    ...                                  p, 63 * 86_400.0)]
    ['no order for 63 days; usually orders every 12']
    """
    pushing = sorted(
        ((name, value) for name, value in contributions.items() if value > 0),
        key=lambda item: item[1],
        reverse=True,
    )
    top = pushing[:TOP_REASONS]
    return [
        ChurnReason(
            name,
            value,
            _rhythm(profile, now, expected_orders, horizon_days, no_order_chance)
            if name == "expected_orders"
            else phrase(name, profile, now),
        )
        for name, value in top
    ]


class ReasonBook:
    """The churn reasons of a batch of scores, as numbers: per score the factors pushing the
    risk up the most (indices into ``factors``, strongest first, -1 past the last) and their
    contributions, with what phrasing them needs (the profiles' fields as they were scored, each
    score's ``now``, BG/NBD's expected orders and chance of no order over ``horizon_days``).
    Phrased one score at a time, when its reasons are read (:class:`LazyReasons`)."""

    __slots__ = ("_contributions", "_expected", "_factors", "_horizon", "_no_order", "_now",
                 "_profiles", "_top")  # fmt: skip

    def __init__(
        self,
        factors: Sequence[str],
        top: np.ndarray,
        contributions: np.ndarray,
        *,
        profiles: ProfileFields,
        now: np.ndarray,
        expected_orders: np.ndarray,
        no_order: np.ndarray,
        horizon_days: float,
    ) -> None:
        self._factors, self._top, self._contributions = factors, top, contributions
        self._profiles, self._now, self._horizon = profiles, now, horizon_days
        self._expected, self._no_order = expected_orders, no_order

    def phrase(self, i: int) -> tuple[ChurnReason, ...]:
        """The ``i``-th score's reasons, what :func:`churn_reasons` gives for it."""
        profile = self._profiles.profile(i)
        now, expected = float(self._now[i]), float(self._expected[i])
        no_order = float(self._no_order[i])
        reasons = []
        for j, value in zip(self._top[i].tolist(), self._contributions[i].tolist(), strict=True):
            if j < 0:
                break
            name = self._factors[j]
            if name == "expected_orders":
                text = _rhythm(profile, now, expected, self._horizon,
                               None if no_order != no_order else no_order)  # fmt: skip
            else:
                text = phrase(name, profile, now)
            reasons.append(ChurnReason(name, value, text))
        return tuple(reasons)


class _Book(Protocol):
    """What phrases the reasons of a batch's ``i``-th score."""

    def phrase(self, i: int) -> tuple[ChurnReason, ...]: ...


class LazyReasons(Sequence[ChurnReason]):
    """One score's reasons from a :class:`ReasonBook` (or the value reasons' book), phrased
    when first read: a batch of re-scores phrases only the reasons someone reads (a score
    written to Redis, an alert's details), not those of every score it makes. Equal to the
    tuple of its reasons; pickles as that tuple."""

    __slots__ = ("_book", "_reasons", "_row")

    def __init__(self, book: _Book, row: int) -> None:
        self._book: _Book | None = book
        self._row = row
        self._reasons: tuple[ChurnReason, ...] | None = None

    def phrased(self) -> tuple[ChurnReason, ...]:
        """The reasons (phrased now, the first time)."""
        if self._reasons is None:
            assert self._book is not None
            self._reasons, self._book = self._book.phrase(self._row), None
        return self._reasons

    @overload
    def __getitem__(self, index: int) -> ChurnReason: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[ChurnReason, ...]: ...
    def __getitem__(self, index: int | slice) -> ChurnReason | tuple[ChurnReason, ...]:
        return self.phrased()[index]

    def __len__(self) -> int:
        return len(self.phrased())

    def __iter__(self) -> Iterator[ChurnReason]:
        return iter(self.phrased())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyReasons):
            other = other.phrased()
        return isinstance(other, tuple) and self.phrased() == other

    def __hash__(self) -> int:
        return hash(self.phrased())

    def __repr__(self) -> str:
        return repr(self.phrased())

    def __reduce__(self) -> tuple[Any, ...]:
        return tuple, (self.phrased(),)


def _rhythm(
    p: CustomerProfile,
    now: float,
    expected_orders: float,
    horizon_days: float,
    no_order_chance: float | None,
) -> str:
    expected = f"{expected_orders:.1f} orders expected"
    if no_order_chance is None:
        return f"{_silence(p, now)}: {expected} in the next {horizon_days:.0f} days"
    return (
        f"{_silence(p, now)}: {no_order_chance:.0%} chance of no order in the next "
        f"{horizon_days:.0f} days ({expected})"
    )


def _silence(p: CustomerProfile, now: float) -> str:
    if not p.orders:
        return f"has not ordered in {p.tenure_days(now):.0f} days as a customer"
    days = p.days_since_order(now)
    if p.gaps:
        return f"no order for {days:.0f} days; usually orders every {p.gap_mean_days:.0f}"
    return f"no order for {days:.0f} days, after a single order"


def _plural(count: float, word: str) -> str:
    number = round(count)
    return f"{number} {word}{'' if number == 1 else 's'}"


_PHRASES: dict[str, Callable[[CustomerProfile, float], str]] = {
    "log_days_since_order": _silence,
    "overdue_ratio": _silence,
    "log_orders": lambda p, now: f"only {_plural(p.orders, 'order')} so far",
    "log_net_monetary": lambda p, now: f"has spent only {p.net_monetary:.2f} so far",
    "log_avg_order": lambda p, now: (
        f"small orders: {p.monetary / p.orders:.2f} on average" if p.orders else "no order yet"
    ),
    "log_tenure_days": lambda p, now: f"a customer for {p.tenure_days(now):.0f} days",
    "log_mean_gap_days": lambda p, now: f"orders only every {p.gap_mean_days:.0f} days",
    "orders_per_month": lambda p, now: (
        f"{p.orders / max(p.tenure_days(now) / 30.0, 1.0):.1f} orders a month"
    ),
    "log_views_per_order": lambda p, now: (
        f"browses without buying: {_plural(p.views, 'view')} for {_plural(p.orders, 'order')}"
    ),
    "log_cart_adds": lambda p, now: f"{_plural(p.cart_adds, 'cart add')} not always bought",
    "return_rate": lambda p, now: f"returned {p.returns} of {p.purchase_lines} purchased lines",
    "log_tickets": lambda p, now: f"opened {_plural(p.tickets, 'support ticket')}",
    "sentiment": lambda p, now: (
        f"unhappy in feedback or tickets (tone {p.sentiment:+.2f})"
        if p.sentiment is not None
        else "no feedback yet"
    ),
    "has_ordered": lambda p, now: "has ordered" if p.orders else "has never ordered",
}


def phrase(factor: str, profile: CustomerProfile, now: float) -> str:
    """What ``factor`` says about this customer now, in CRM words."""
    describe = _PHRASES.get(factor)
    if describe is None:
        return factor.replace("_", " ")
    try:
        return describe(profile, now)
    except (ArithmeticError, ValueError):  # a degenerate profile: say the factor's name
        return factor.replace("_", " ")
