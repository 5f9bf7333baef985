"""What customers bought and refunded, in event time: the outcomes scores are judged on, and
the batch baselines' features."""

from __future__ import annotations

import logging
import sys
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

__all__ = ["DAY", "Purchase", "PurchaseHistory"]

logger = logging.getLogger(__name__)

DAY = 86_400.0

#: One purchase or refund: customer, event time (epoch seconds), item, amount, is a refund.
Purchase = tuple[str, float, str | None, float, bool]


class PurchaseHistory:
    """Purchases and refunds per customer, for labels, outcomes and batch features.

    >>> history = PurchaseHistory([("c", 0.0, "x", 5.0, False), ("c", 2 * DAY, "y", 3.0, False),
    ...                            ("c", 3 * DAY, None, 1.0, True)])
    >>> history.buyers_before(DAY), history.spend_between("c", 0.0, 4 * DAY)
    (['c'], 2.0)
    >>> history.rfm("c", 4 * DAY)
    (2.0, 2.0, 7.0, 4.0)
    """

    def __init__(self, purchases: Iterable[Purchase] = ()) -> None:
        self.buys: dict[str, list[tuple[float, str, float]]] = defaultdict(list)
        self.refunds: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.first_event = float("inf")
        self.last_event = float("-inf")
        self.add(purchases)

    def add(self, purchases: Iterable[Purchase]) -> None:
        """Take in more purchases and refunds (a file's chunk after chunk), in any order."""
        late = set()
        first, last = self.first_event, self.last_event
        for customer, when, item, amount, refund in purchases:
            first, last = min(first, when), max(last, when)
            if refund:
                self.refunds[customer].append((when, amount))
                continue
            buys = self.buys[customer]
            if buys and when < buys[-1][0]:
                late.add(customer)
            # A file names an item on many rows: one string each is enough.
            buys.append((when, sys.intern(item or ""), amount))
        self.first_event, self.last_event = first, last
        for customer in late:
            self.buys[customer].sort(key=lambda buy: buy[0])

    def buyers_before(self, t: float) -> list[str]:
        """Customers with a purchase before ``t``, sorted."""
        return sorted(c for c, buys in self.buys.items() if buys and buys[0][0] < t)

    def bought_between(self, customer: str, start: float, end: float) -> bool:
        return any(start < when <= end for when, _, _ in self.buys.get(customer, ()))

    def items_before(self, customer: str, t: float) -> set[str]:
        return {item for when, item, _ in self.buys.get(customer, ()) if when < t}

    def items_between(self, customer: str, start: float, end: float) -> set[str]:
        """Items bought in (start, end]."""
        return {item for when, item, _ in self.buys.get(customer, ()) if start < when <= end}

    def spend_between(self, customer: str, start: float, end: float) -> float:
        """Net spend in (start, end]."""
        bought = sum(a for when, _, a in self.buys.get(customer, ()) if start < when <= end)
        refunded = sum(a for when, a in self.refunds.get(customer, ()) if start < when <= end)
        return max(bought - refunded, 0.0)

    def baskets_between(self, customer: str, start: float, end: float) -> int:
        """Distinct purchase times in (start, end]."""
        return len({when for when, _, _ in self.buys.get(customer, ()) if start < when <= end})

    def summary(self, customer: str, t: float) -> tuple[float, float, float, float, float]:
        """BG/NBD's x, t_x, T (days) and Gamma-Gamma's mean spend per order, and net spend,
        of the purchases before t."""
        baskets: dict[float, float] = defaultdict(float)
        for when, _, amount in self.buys.get(customer, ()):
            if when < t:
                baskets[when] += amount
        times = sorted(baskets)
        refunded = sum(a for when, a in self.refunds.get(customer, ()) if when < t)
        spend = max(sum(baskets.values()) - refunded, 0.0)
        mean = max(sum(baskets.values()) / len(times), 0.01)
        return (len(times) - 1.0, (times[-1] - times[0]) / DAY, (t - times[0]) / DAY, mean, spend)

    def rfm(self, customer: str, t: float) -> tuple[float, float, float, float]:
        """Recency (days), frequency (baskets), net monetary, tenure (days) as of ``t``."""
        buys = [(when, amount) for when, _, amount in self.buys[customer] if when < t]
        baskets = {when for when, _ in buys}
        refunded = sum(amount for when, amount in self.refunds.get(customer, ()) if when < t)
        monetary = max(sum(amount for _, amount in buys) - refunded, 0.0)
        return (
            (t - max(baskets)) / DAY,
            float(len(baskets)),
            monetary,
            (t - min(baskets)) / DAY,
        )

    def rfm_matrix(self, customers: list[str], t: float) -> np.ndarray:
        """log1p of each customer's :meth:`rfm` as of ``t``, a row each."""
        return np.log1p(np.array([self.rfm(c, t) for c in customers]).reshape(-1, 4))
