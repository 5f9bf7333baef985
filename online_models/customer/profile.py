"""Per-customer features kept in the state table, updated by event time only."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from typing import Any

from online_models.customer.activity import DAY, Activity

__all__ = [
    "CHURN_FEATURES",
    "OUTLIER_FEATURES",
    "PROFILE_FIELDS",
    "SEGMENT_FEATURES",
    "CustomerProfile",
    "segment_quantity",
]

logger = logging.getLogger(__name__)

# Enough to keep recommending new things to heavy buyers without unbounded state.
MAX_PURCHASED_ITEMS = 200
MAX_RECENT_ITEMS = 10
MAX_ORDER_TIMES = 8
SENTIMENT_SMOOTHING = 0.5
# The segment features' fixed scales: recency in days per unit, the others log1p(quantity)
# over these; every feature is capped at 1.5.
_RECENCY_DAYS = 180.0
_LOG_SCALES = {
    "frequency": math.log1p(50.0),
    "monetary": math.log1p(10_000.0),
    "engagement": math.log1p(200.0),
}
_SEGMENT_CAP = 1.5
# The basket features: log1p of spend and units per order over these, uncapped (the biggest
# baskets are what they are there to show).
_BASKET_SCALES = {
    "basket_spend": math.log1p(1_000.0),
    "basket_units": math.log1p(1_000.0),
}

#: The segment features, in the order of a k-means centre's coordinates.
SEGMENT_FEATURES = ("ordered", "recency", "frequency", "monetary", "engagement")
#: What the outlier score measures against a segment: its features and the customer's basket
#: (spend and units per order), which segments are not formed on but describe.
OUTLIER_FEATURES = (*SEGMENT_FEATURES, *_BASKET_SCALES)

#: The churn model's features, in the order pending examples store them.
CHURN_FEATURES = (
    "log_orders",
    "log_net_monetary",
    "log_avg_order",
    "log_tenure_days",
    "log_days_since_order",
    "log_mean_gap_days",
    "overdue_ratio",
    "orders_per_month",
    "log_views_per_order",
    "log_cart_adds",
    "return_rate",
    "log_tickets",
    "sentiment",
    "has_ordered",
)


@dataclass(slots=True)
class CustomerProfile:
    """Recency, frequency, monetary and engagement features of one customer.

    Lines of one basket share a timestamp, so ``orders`` counts distinct purchase times.

    >>> p = CustomerProfile.new(0.0)
    >>> p.record(Activity("purchase", 0.0, item_id="a", amount=10.0, quantity=1))
    >>> p.record(Activity("purchase", 0.0, item_id="b", amount=5.0, quantity=1))
    >>> p.record(Activity("purchase", 10 * 86_400.0, item_id="c", amount=20.0, quantity=1))
    >>> p.orders, p.purchase_lines, p.monetary, p.gap_mean_days
    (2, 3, 35.0, 10.0)
    """

    first_seen: float
    last_seen: float
    events: int = 0
    orders: int = 0
    purchase_lines: int = 0
    units: int = 0
    monetary: float = 0.0
    refunded: float = 0.0
    returns: int = 0
    views: int = 0
    cart_adds: int = 0
    tickets: int = 0
    feedbacks: int = 0
    cancels: int = 0
    first_order_at: float | None = None
    last_order_at: float | None = None
    gap_mean_days: float = 0.0
    gaps: int = 0
    order_times: list[float] = field(default_factory=list)
    sentiment: float | None = None
    last_sentiment: float | None = None
    purchased_items: list[str] = field(default_factory=list)
    recent_items: list[str] = field(default_factory=list)

    @classmethod
    def new(cls, time: float) -> CustomerProfile:
        """An empty profile of a customer first seen at ``time``."""
        return cls(first_seen=time, last_seen=time)

    @property
    def net_monetary(self) -> float:
        """Purchases minus refunds, never below zero."""
        return max(self.monetary - self.refunded, 0.0)

    def days_since_order(self, now: float) -> float:
        """Event-time days since the latest basket (since first seen if none)."""
        anchor = self.last_order_at if self.last_order_at is not None else self.first_seen
        return max(now - anchor, 0.0) / DAY

    def tenure_days(self, now: float) -> float:
        """Event-time days since the customer was first seen."""
        return max(now - self.first_seen, 0.0) / DAY

    def record(self, activity: Activity, sentiment: float | None = None) -> None:
        """Fold one activity into the features; ``sentiment`` is the text's score, if any."""
        time = activity.time
        self.events += 1
        self.last_seen = max(self.last_seen, time)
        self.first_seen = min(self.first_seen, time)
        kind = activity.kind
        if kind == "purchase":
            self._record_purchase(activity)
        elif kind == "return":
            self.returns += 1
            self.refunded += activity.amount
        elif kind == "view":
            self.views += 1
        elif kind == "cart_add":
            self.cart_adds += 1
        elif kind == "support_ticket":
            self.tickets += 1
        elif kind == "feedback":
            self.feedbacks += 1
        elif kind == "subscription_cancel":
            self.cancels += 1
        if sentiment is not None:
            self.last_sentiment = sentiment
            previous = self.sentiment if self.sentiment is not None else sentiment
            self.sentiment = previous + SENTIMENT_SMOOTHING * (sentiment - previous)

    def _record_purchase(self, activity: Activity) -> None:
        time = activity.time
        self.purchase_lines += 1
        self.units += activity.quantity
        self.monetary += activity.amount
        if time not in self.order_times:
            # Lines of a basket share its timestamp: only a new timestamp is a new basket, also
            # when it arrives late (older than the latest basket).
            self.orders += 1
            self.order_times.append(time)
            del self.order_times[:-MAX_ORDER_TIMES]
            if self.last_order_at is not None and time > self.last_order_at:
                self.gaps += 1
                gap = (time - self.last_order_at) / DAY
                self.gap_mean_days += (gap - self.gap_mean_days) / self.gaps
            if self.last_order_at is None or time > self.last_order_at:
                self.last_order_at = time
        if self.first_order_at is None or time < self.first_order_at:
            self.first_order_at = time
        item = activity.item_id
        if item is not None:
            if item not in self.purchased_items:
                self.purchased_items.append(item)
                del self.purchased_items[:-MAX_PURCHASED_ITEMS]
            if item in self.recent_items:
                self.recent_items.remove(item)
            self.recent_items.append(item)
            del self.recent_items[:-MAX_RECENT_ITEMS]

    def churn_features(self, now: float) -> dict[str, float]:
        """Features of the churn model as of ``now``; nothing after ``now`` is used."""
        days_since = self.days_since_order(now)
        tenure = self.tenure_days(now)
        orders = self.orders
        return {
            "log_orders": math.log1p(orders),
            "log_net_monetary": math.log1p(self.net_monetary),
            "log_avg_order": math.log1p(self.monetary / orders) if orders else 0.0,
            "log_tenure_days": math.log1p(tenure),
            "log_days_since_order": math.log1p(days_since),
            "log_mean_gap_days": math.log1p(self.gap_mean_days),
            "overdue_ratio": min(days_since / (self.gap_mean_days + 7.0), 10.0),
            "orders_per_month": orders / max(tenure / 30.0, 1.0),
            "log_views_per_order": math.log1p(self.views / (orders + 1)),
            "log_cart_adds": math.log1p(self.cart_adds),
            "return_rate": min(self.returns / max(self.purchase_lines, 1), 1.0),
            "log_tickets": math.log1p(self.tickets),
            "sentiment": self.sentiment if self.sentiment is not None else 0.0,
            "has_ordered": 1.0 if orders else 0.0,
        }

    def segment_features(self, now: float) -> dict[str, float]:
        """RFM and engagement on fixed scales, roughly 0..1, so segments stay put, and the
        basket features the outlier score adds (:data:`OUTLIER_FEATURES`).

        Recency is linear in months (180 days = 1): a few days' gap between baskets barely
        moves a customer, while months of silence do.
        """
        quantities = self.segment_quantities(now)
        features = {
            # Buyers and never-buyers differ in kind, not degree: keep them apart.
            "ordered": quantities["ordered"],
            "recency": min(quantities["recency"] / _RECENCY_DAYS, _SEGMENT_CAP),
        }
        for name, scale in _LOG_SCALES.items():
            features[name] = min(math.log1p(quantities[name]) / scale, _SEGMENT_CAP)
        for name, scale in _BASKET_SCALES.items():
            features[name] = math.log1p(quantities[name]) / scale
        return features

    def segment_quantities(self, now: float) -> dict[str, float]:
        """What each segment feature measures, unscaled: ordered at all (0 or 1), days since
        the latest basket, baskets, net spend, views and cart adds, net spend and units per
        basket (0 before any)."""
        orders = max(self.orders, 1)
        return {
            "ordered": 1.0 if self.orders else 0.0,
            "recency": self.days_since_order(now),
            "frequency": float(self.orders),
            "monetary": self.net_monetary,
            "engagement": float(self.views + self.cart_adds),
            "basket_spend": self.net_monetary / orders,
            "basket_units": max(self.units, 0) / orders,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the state table (lists copied, so the record owns them)."""
        data = {name: getattr(self, name) for name in PROFILE_FIELDS}
        for name in _LIST_FIELDS:
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CustomerProfile:
        """Inverse of :meth:`to_dict`; unknown keys from newer versions are ignored."""
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


def segment_quantity(name: str, value: float) -> float:
    """The quantity a segment feature's ``value`` stands for (the inverse of its scale; a
    capped value gives the cap's quantity).

    >>> segment_quantity("recency", 0.5), round(segment_quantity("frequency", 1.0))
    (90.0, 50)
    """
    if name == "recency":
        return value * _RECENCY_DAYS
    scale = _LOG_SCALES.get(name, _BASKET_SCALES.get(name))
    return value if scale is None else math.expm1(value * scale)


#: The profile's fields in declaration order: the order of a compact state record.
PROFILE_FIELDS = tuple(f.name for f in fields(CustomerProfile))
_LIST_FIELDS = tuple(f.name for f in fields(CustomerProfile) if str(f.type).startswith("list["))
