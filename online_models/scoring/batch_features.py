"""Many customers' churn and segment features at once: profiles as columns, features as arrays."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from operator import attrgetter
from typing import NamedTuple

import numpy as np

from online_models.customer.activity import DAY
from online_models.customer.profile import CHURN_FEATURES, OUTLIER_FEATURES, CustomerProfile

__all__ = ["ProfileColumns", "ProfileFields", "churn_feature_matrix", "segment_feature_matrix"]

logger = logging.getLogger(__name__)

# The profile's fields the columns hold (None reads as NaN).
_FIELDS = (
    "first_seen", "last_seen", "orders", "monetary", "refunded", "returns", "purchase_lines",
    "units", "views", "cart_adds", "tickets", "gap_mean_days", "gaps", "sentiment",
    "first_order_at", "last_order_at",
)  # fmt: skip
_READERS = tuple(attrgetter(name) for name in _FIELDS)
_LOG_51, _LOG_10001, _LOG_201 = math.log1p(50.0), math.log1p(10_000.0), math.log1p(200.0)
_LOG_1001 = math.log1p(1_000.0)


class ProfileFields(NamedTuple):
    """Many profiles' fields as they were read: one list per field, of the values themselves
    (ints, floats, None), which no later event changes."""

    first_seen: list[float]
    last_seen: list[float]
    orders: list[int]
    monetary: list[float]
    refunded: list[float]
    returns: list[int]
    purchase_lines: list[int]
    units: list[int]
    views: list[int]
    cart_adds: list[int]
    tickets: list[int]
    gap_mean_days: list[float]
    gaps: list[int]
    sentiment: list[float | None]
    first_order_at: list[float | None]
    last_order_at: list[float | None]

    @classmethod
    def of(cls, profiles: Sequence[CustomerProfile]) -> ProfileFields:
        """The fields of ``profiles``, in order (a list per field: one C call per profile
        each, and no tuple per profile kept alive for the garbage collector to follow)."""
        return cls(*(list(map(read, profiles)) for read in _READERS))

    def columns(self) -> ProfileColumns:
        """The fields as arrays. Raises ValueError or TypeError for a field that is not a
        number (numpy converts a list of lists faster than a list of tuples)."""
        table = np.array(self, dtype=float)
        return ProfileColumns(*table.reshape(len(_FIELDS), len(self.first_seen)))

    def profile(self, i: int) -> CustomerProfile:
        """The ``i``-th profile as it was read: the fields these hold (lists empty).

        >>> profile = CustomerProfile.new(0.0)
        >>> profile.orders, profile.monetary, profile.last_order_at = 2, 30.0, 5.0
        >>> ProfileFields.of([profile]).profile(0) == profile
        True
        """
        values = {name: getattr(self, name)[i] for name in _FIELDS}
        return CustomerProfile(**values)


class ProfileColumns(NamedTuple):
    """What the features of many profiles are made of: one array per profile field (NaN for
    a field that is None: no order yet, no feedback yet)."""

    first_seen: np.ndarray
    last_seen: np.ndarray
    orders: np.ndarray
    monetary: np.ndarray
    refunded: np.ndarray
    returns: np.ndarray
    purchase_lines: np.ndarray
    units: np.ndarray
    views: np.ndarray
    cart_adds: np.ndarray
    tickets: np.ndarray
    gap_mean_days: np.ndarray
    gaps: np.ndarray
    sentiment: np.ndarray
    first_order_at: np.ndarray
    last_order_at: np.ndarray

    @classmethod
    def of(cls, profiles: Sequence[CustomerProfile]) -> ProfileColumns:
        """The columns of ``profiles``, in order (:meth:`ProfileFields.columns`).

        >>> profile = CustomerProfile.new(0.0)
        >>> columns = ProfileColumns.of([profile])
        >>> columns.orders.tolist(), bool(np.isnan(columns.last_order_at[0]))
        ([0.0], True)
        """
        return ProfileFields.of(profiles).columns()

    @property
    def net_monetary(self) -> np.ndarray:
        """Purchases minus refunds, never below zero (:attr:`CustomerProfile.net_monetary`)."""
        return np.maximum(self.monetary - self.refunded, 0.0)

    def days_since_order(self, now: np.ndarray) -> np.ndarray:
        """Days since the latest basket, or since first seen (``days_since_order``)."""
        anchor = np.where(np.isnan(self.last_order_at), self.first_seen, self.last_order_at)
        return np.maximum(now - anchor, 0.0) / DAY


def churn_feature_matrix(columns: ProfileColumns, now: np.ndarray) -> np.ndarray:
    """One row of churn features per profile, in ``CHURN_FEATURES`` order:
    :meth:`CustomerProfile.churn_features` of each at its ``now``.

    >>> profile = CustomerProfile.new(0.0)
    >>> profile.orders, profile.monetary, profile.last_order_at = 2, 30.0, 0.0
    >>> row = churn_feature_matrix(ProfileColumns.of([profile]), np.array([9 * DAY]))[0]
    >>> features = profile.churn_features(9 * DAY)
    >>> all(abs(features[name] - value) < 1e-12 for name, value in zip(CHURN_FEATURES, row))
    True
    """
    c = columns
    days_since = c.days_since_order(now)
    tenure = np.maximum(now - c.first_seen, 0.0) / DAY
    orders = c.orders
    bought = orders > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        average = np.where(bought, np.log1p(c.monetary / orders), 0.0)
    features = (
        np.log1p(orders),
        np.log1p(c.net_monetary),
        average,
        np.log1p(tenure),
        np.log1p(days_since),
        np.log1p(c.gap_mean_days),
        np.minimum(days_since / (c.gap_mean_days + 7.0), 10.0),
        orders / np.maximum(tenure / 30.0, 1.0),
        np.log1p(c.views / (orders + 1)),
        np.log1p(c.cart_adds),
        np.minimum(c.returns / np.maximum(c.purchase_lines, 1), 1.0),
        np.log1p(c.tickets),
        np.where(np.isnan(c.sentiment), 0.0, c.sentiment),
        bought.astype(float),
    )
    assert len(features) == len(CHURN_FEATURES)
    return np.stack(features, axis=1)


def segment_feature_matrix(columns: ProfileColumns, now: np.ndarray) -> np.ndarray:
    """One row of segment features per profile, in ``OUTLIER_FEATURES`` order (the segment
    features, then the basket): :meth:`CustomerProfile.segment_features` of each at its
    ``now``."""
    c = columns
    orders = np.maximum(c.orders, 1.0)
    features = (
        (c.orders > 0).astype(float),
        np.minimum(c.days_since_order(now) / 180.0, 1.5),
        np.minimum(np.log1p(c.orders) / _LOG_51, 1.5),
        np.minimum(np.log1p(c.net_monetary) / _LOG_10001, 1.5),
        np.minimum(np.log1p(c.views + c.cart_adds) / _LOG_201, 1.5),
        np.log1p(c.net_monetary / orders) / _LOG_1001,
        np.log1p(np.maximum(c.units, 0.0) / orders) / _LOG_1001,
    )
    assert len(features) == len(OUTLIER_FEATURES)
    return np.stack(features, axis=1)
