"""A crowd of ordinary customers and a few unusual ones, as points on the segment features
and the basket."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from online_models.customer.activity import DAY, Activity

T0 = 1_735_689_600.0  # 2025-01-01T00:00:00Z


#: Ordinary customers on the segment features' fixed scales (see CustomerProfile).
ORDINARY = {
    "regulars": (1.0, 0.05, 0.6, 0.55, 0.4),
    "occasional": (1.0, 0.15, 0.2, 0.25, 0.15),
    "lapsing": (1.0, 0.7, 0.3, 0.35, 0.1),
    "browsers": (0.0, 0.4, 0.0, 0.0, 0.45),
}
#: Customers who fit no group: a reseller buying hundreds of baskets for a fortune, a single
#: enormous order, a bot viewing thousands of items.
EXTREME = {
    "reseller": (1.0, 0.01, 1.5, 1.5, 0.3),
    "one huge order": (1.0, 0.05, 0.18, 1.45, 0.1),
    "bot": (0.0, 0.02, 0.0, 0.0, 1.5),
}

#: Each kind's basket features (spend and units per order on their log scales, see
#: CustomerProfile): baskets of about 15 to 20 of one or two units; the reseller's of about
#: 4,000 and 2,000 units, the huge order's 2,000,000.
BASKETS = {
    "regulars": (0.41, 0.12),
    "occasional": (0.44, 0.15),
    "lapsing": (0.4, 0.1),
    "browsers": (0.0, 0.0),
    "reseller": (1.2, 1.1),
    "one huge order": (2.1, 0.1),
    "bot": (0.0, 0.0),
}


@dataclass
class Crowd:
    """Segment-feature points in event-time order: mostly ordinary, ``extreme`` of them not."""

    points: list[dict[str, float]]
    times: list[float]
    extreme: list[bool]


def crowd(seed: int, ordinary: int = 4_000, extremes: int = 12, spread: float = 0.05) -> Crowd:
    """``ordinary`` points around the ordinary groups (the first quarter before any extreme
    one, so segments form first), with ``extremes`` points of the extreme kinds mixed into the
    rest; one point every 30 s of event time from T0."""
    rng = random.Random(seed)
    names = ("ordered", "recency", "frequency", "monetary", "engagement")
    kinds = [(group, False) for group in rng.choices(list(ORDINARY), k=ordinary)]
    rest = kinds[ordinary // 4 :]
    for n in range(extremes):
        rest.insert(rng.randrange(len(rest) + 1), (list(EXTREME)[n % len(EXTREME)], True))
    kinds[ordinary // 4 :] = rest
    points = []
    for group, extreme in kinds:
        centre = (EXTREME if extreme else ORDINARY)[group]
        noise = spread / 5 if extreme else spread
        point = {n: max(c + rng.gauss(0.0, noise), 0.0) for n, c in zip(names, centre, strict=True)}
        point["ordered"] = centre[0]
        spend, units = BASKETS[group]
        point["basket_spend"] = max(spend + rng.gauss(0.0, noise), 0.0) if spend else 0.0
        point["basket_units"] = max(units + rng.gauss(0.0, noise), 0.0) if units else 0.0
        points.append(point)
    times = [T0 + 30.0 * n for n in range(len(points))]
    return Crowd(points, times, [extreme for _, extreme in kinds])


def shop(
    seed: int, *, whale_day: float | None = None, bot: bool = False, bot_days: float = 30.0
) -> list[Any]:
    """Sixty days of a small shop, as ``(customer, Activity)`` in event-time order: 200 buyers
    of a basket every 3 to 12 days for 15 to 120, and 60 browsers who view a few items; with
    ``whale_day`` a single order of 2,000,000 that day, with ``bot`` 3,000 views by one
    customer from day 30, over ``bot_days`` days (a hundred a day by default)."""
    rng = random.Random(seed)
    events: list[tuple[str, Activity]] = []
    for n in range(200):
        day = rng.uniform(0.0, 5.0)
        while day < 60.0:
            amount = rng.uniform(15.0, 120.0)
            buy = Activity("purchase", T0 + day * DAY, item_id="sku-1", amount=amount, quantity=1)
            events.append((f"c{n}", buy))
            day += rng.uniform(3.0, 12.0)
    for n in range(60):
        for _ in range(rng.randint(2, 8)):
            view = Activity("view", T0 + rng.uniform(0.0, 60.0) * DAY, item_id="sku-2")
            events.append((f"b{n}", view))
    if whale_day is not None:
        whale = Activity("purchase", T0 + whale_day * DAY, item_id="sku-1", amount=2e6, quantity=1)
        events.append(("whale", whale))
    if bot:
        for n in range(3_000):
            when = T0 + 30 * DAY + n * bot_days * DAY / 3_000
            view = Activity("view", when, item_id=f"sku-{n}")
            events.append(("bot", view))
    return sorted(events, key=lambda event: event[1].time)
