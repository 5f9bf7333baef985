"""What a customer did, in the models' terms: the input every online model learns from."""

from __future__ import annotations

import logging
from dataclasses import dataclass

__all__ = ["ACTIVITY_KINDS", "DAY", "Activity"]

logger = logging.getLogger(__name__)

#: Seconds in a day: every duration the models reason about is in event-time days.
DAY = 86_400.0

ACTIVITY_KINDS = frozenset(
    {"purchase", "view", "cart_add", "support_ticket", "feedback", "subscription_cancel", "return"}
)


@dataclass(frozen=True, slots=True)
class Activity:
    """One customer action at event time ``time`` (epoch seconds).

    >>> Activity("purchase", 1_700_000_000.0, item_id="sku-1", amount=12.5, quantity=2).kind
    'purchase'
    """

    kind: str
    time: float
    item_id: str | None = None
    amount: float = 0.0
    quantity: int = 0
    text: str | None = None
    rating: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ACTIVITY_KINDS:
            msg = f"unknown activity kind {self.kind!r}"
            raise ValueError(msg)
