"""The synthetic unusual customers the segment benchmark mixes into Online Retail: a group of
resellers (:class:`Resellers`), and loners too few to make a segment (:class:`Loners`: lone
resellers, one enormous order, bots who only view), all built from the typical basket sold
before the cutoff (:func:`typical_basket`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import NamedTuple

import numpy as np

from online_models.customer.activity import DAY
from schemas.events import AnyEvent, PurchaseEvent, validate_event
from streams.commands.transactions import LoadedEvent

__all__ = [
    "WEEK",
    "Basket",
    "Loners",
    "Resellers",
    "basket_lines",
    "bot_views",
    "enormous_orders",
    "typical_basket",
]

logger = logging.getLogger(__name__)

WEEK = timedelta(days=7)


class Basket(NamedTuple):
    """A basket's lines, units and amount."""

    lines: int
    quantity: float
    amount: float


def typical_basket(events: Iterable[LoadedEvent], before: float) -> tuple[Basket, list[str]]:
    """The median basket (a customer's purchase lines sharing a time) before ``before``, and
    the item of every purchase line then (each item as often as it sold)."""
    baskets: dict[tuple[str, float], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    items = []
    for loaded in events:
        event = loaded.event
        if loaded.time < before and isinstance(event, PurchaseEvent):
            basket = baskets[event.customer_id, loaded.time]
            basket[0] += 1
            basket[1] += event.quantity
            basket[2] += event.amount
            items.append(event.item_id)
    lines, quantity, amount = np.median(np.array(list(baskets.values())), axis=0)
    return Basket(max(round(lines), 1), float(quantity), float(amount)), items


def basket_lines(
    customer: str, basket_id: str, moment: float, items: Sequence[str], basket: Basket, times: float
) -> list[AnyEvent]:
    """One basket of ``customer`` at ``moment``: a purchase line of each of ``items``, sharing
    ``times`` the typical ``basket``'s units and amount; event ids ``{basket_id}-NNN``."""
    timestamp = datetime.fromtimestamp(moment, UTC).isoformat()
    return [
        validate_event(
            {
                "event_id": f"{basket_id}-{line:03d}",
                "customer_id": customer,
                "type": "purchase",
                "timestamp": timestamp,
                "item_id": item,
                "amount": round(times * basket.amount / basket.lines, 2),
                "quantity": max(round(times * basket.quantity / basket.lines), 1),
            }
        )
        for line, item in enumerate(items)
    ]


@dataclass(frozen=True, slots=True)
class Resellers:
    """``count`` synthetic resellers: from a random week in the first half of the ``weeks``
    before the cutoff, each buys every week (same weekday and hour) a basket of the typical
    basket's lines of sold items, with ``scale`` times its units and amount (drawn per basket).
    Their customer ids are ``synthetic-{name}-NN``."""

    count: int = 50
    weeks: int = 26
    scale: tuple[float, float] = (10.0, 20.0)
    seed: int = 0
    name: str = "reseller"

    def events(self, basket: Basket, items: Sequence[str], cutoff: float) -> list[AnyEvent]:
        """Their purchase lines before ``cutoff``, validated, in event-time order."""
        rng = np.random.default_rng(self.seed)
        start = cutoff - self.weeks * WEEK.total_seconds()
        events = []
        for n in range(self.count):
            customer = f"synthetic-{self.name}-{n:02d}"
            offset = float(rng.integers(7) * DAY + rng.integers(8, 18) * 3600.0)
            for week in range(int(rng.integers(self.weeks // 2)), self.weeks):
                moment = start + week * WEEK.total_seconds() + offset
                times = rng.uniform(*self.scale)
                picks = rng.choice(len(items), basket.lines, replace=False)
                basket_id = f"{customer}-{week:02d}"
                events += basket_lines(
                    customer, basket_id, moment, [items[p] for p in picks], basket, times
                )
        return sorted(events, key=attrgetter("timestamp"))


def enormous_orders(
    count: int,
    basket: Basket,
    items: Sequence[str],
    cutoff: float,
    *,
    scale: float,
    weeks: int,
    rng: np.random.Generator,
) -> list[AnyEvent]:
    """``count`` new customers (``synthetic-enormous-order-NN``) whose only basket, at a random
    second of the ``weeks`` before ``cutoff``, is the typical basket's lines of sold items
    with ``scale`` times its units and amount; in event-time order."""
    span = weeks * WEEK.total_seconds()
    events = []
    for n in range(count):
        customer = f"synthetic-enormous-order-{n:02d}"
        moment = cutoff - span + float(rng.integers(int(span)))
        picks = rng.choice(len(items), basket.lines, replace=False)
        events += basket_lines(customer, customer, moment, [items[p] for p in picks], basket, scale)
    return sorted(events, key=attrgetter("timestamp"))


def bot_views(
    count: int,
    items: Sequence[str],
    cutoff: float,
    *,
    views: int,
    weeks: int,
    rng: np.random.Generator,
) -> list[AnyEvent]:
    """``count`` customers (``synthetic-bot-NN``) who each view ``views`` items drawn from
    the sold ones, at random seconds of one random week among the ``weeks`` before
    ``cutoff``, and never buy; in event-time order."""
    catalogue = sorted(set(items))
    week = WEEK.total_seconds()
    events = []
    for n in range(count):
        customer = f"synthetic-bot-{n:02d}"
        start = cutoff - (weeks - int(rng.integers(weeks))) * week
        seconds = np.sort(rng.integers(int(week), size=views))
        picks = rng.integers(len(catalogue), size=views)
        for view, (second, pick) in enumerate(zip(seconds.tolist(), picks.tolist(), strict=True)):
            document = {
                "event_id": f"{customer}-{view:05d}",
                "customer_id": customer,
                "type": "view",
                "timestamp": datetime.fromtimestamp(start + second, UTC).isoformat(),
                "item_id": catalogue[pick],
            }
            events.append(validate_event(document))
    return sorted(events, key=attrgetter("timestamp"))


@dataclass(frozen=True, slots=True)
class Loners:
    """Unusual customers too few to make a segment of their own, each kind a handful:

    * ``lone reseller``: :class:`Resellers` as separate individuals (ids
      ``synthetic-lone-reseller-NN``, drawn with ``seed``, not the group's);
    * ``enormous order``: new customers whose one basket is ``scale`` times the typical one;
    * ``bot``: customers who view ``views`` items over one week and never buy.

    Enormous orders and bots fall in the ``weeks`` before the cutoff.
    """

    lone_resellers: int = 5
    enormous_orders: int = 5
    bots: int = 5
    scale: float = 50.0
    views: int = 3_000
    weeks: int = 8
    seed: int = 1

    def events(
        self, basket: Basket, items: Sequence[str], cutoff: float
    ) -> dict[str, list[AnyEvent]]:
        """Each kind's events before ``cutoff``, validated, in event-time order."""
        # One generator per kind: the count of one kind does not move another's customers.
        orders_rng, bots_rng = (np.random.default_rng([self.seed, kind]) for kind in (1, 2))
        resellers = Resellers(count=self.lone_resellers, seed=self.seed, name="lone-reseller")
        orders = enormous_orders(self.enormous_orders, basket, items, cutoff,
                                 scale=self.scale, weeks=self.weeks, rng=orders_rng)  # fmt: skip
        bots = bot_views(self.bots, items, cutoff, views=self.views, weeks=self.weeks, rng=bots_rng)
        return {
            "lone reseller": resellers.events(basket, items, cutoff),
            "enormous order": orders,
            "bot": bots,
        }
