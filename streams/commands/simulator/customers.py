"""Simulated customers: personas, and one customer's timeline of visits, orders and messages."""

from __future__ import annotations

import heapq
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

from streams.commands.simulator.catalogue import (
    NEGATIVE_PHRASES,
    NEUTRAL_PHRASES,
    POSITIVE_PHRASES,
    QUESTION_PHRASES,
    Catalogue,
    compose_text,
    star_rating,
)

__all__ = ["DAY", "Customer"]

logger = logging.getLogger(__name__)

DAY = 86_400

_CHANNELS = ("web", "app", "store", "email")
_CHANNEL_WEIGHTS = (0.5, 0.3, 0.12, 0.08)
_EXTRA_FIELDS = (
    ("campaign", "spring-sale"),
    ("campaign", "black-friday"),
    ("client_version", "web-2.3.1"),
    ("client_version", "ios-5.0.2"),
    ("source_system", "legacy-pos"),
)


@dataclass(frozen=True, slots=True)
class _Persona:
    """How one kind of customer behaves; gaps in days, probabilities per session or line."""

    name: str
    weight: float
    gap_days: float
    buy_prob: float
    lines: tuple[int, int]
    tier: str  # "normal", "cheap" or "premium" item choice
    ticket_prob: float
    feedback_prob: float
    mood: tuple[float, float, float]  # positive, neutral, negative
    return_prob: float
    lifetime: str  # "stay", "churn" or "lapse"


_PERSONAS = (
    _Persona(
        "loyal", 0.12, 14.0, 0.8, (2, 4), "premium", 0.01, 0.10, (0.82, 0.15, 0.03), 0.02, "stay"
    ),
    _Persona(
        "regular", 0.25, 24.0, 0.6, (1, 3), "normal", 0.02, 0.08, (0.55, 0.40, 0.05), 0.03, "stay"
    ),
    _Persona(
        "bargain_hunter",
        0.15,
        20.0,
        0.55,
        (1, 4),
        "cheap",
        0.02,
        0.06,
        (0.40, 0.45, 0.15),
        0.04,
        "stay",
    ),
    _Persona(
        "browser", 0.14, 14.0, 0.06, (1, 2), "normal", 0.01, 0.03, (0.40, 0.50, 0.10), 0.02, "stay"
    ),
    _Persona(
        "lapsing", 0.10, 14.0, 0.55, (1, 3), "normal", 0.03, 0.06, (0.30, 0.50, 0.20), 0.03, "lapse"
    ),
    _Persona(
        "churner", 0.14, 14.0, 0.5, (1, 3), "normal", 0.05, 0.08, (0.20, 0.40, 0.40), 0.05, "churn"
    ),
    _Persona(
        "unhappy", 0.10, 12.0, 0.6, (1, 3), "normal", 0.25, 0.30, (0.05, 0.20, 0.75), 0.10, "stay"
    ),
)
_PERSONA_CUM = list(accumulate(p.weight for p in _PERSONAS))
# Some unhappy customers spend like loyal ones: negative feedback from a valuable customer.
_UNHAPPY_BIG_SPENDER = _Persona(
    "unhappy_big_spender",
    0.0,
    12.0,
    0.85,
    (2, 5),
    "premium",
    0.20,
    0.30,
    (0.05, 0.20, 0.75),
    0.08,
    "stay",
)


class Customer:
    """One customer's timeline, generated session by session in event-time order."""

    __slots__ = (
        "base",
        "cat",
        "channel",
        "customer_id",
        "end",
        "fav_cum",
        "favourites",
        "hour",
        "join",
        "lapse_start",
        "persona",
        "queue",
        "rng",
        "seq",
        "stop",
    )

    def __init__(self, seed: int, cat: Catalogue, index: int, base: int, end: int) -> None:
        rng = random.Random(f"{seed}:customer:{index}")
        self.rng = rng
        self.cat = cat
        self.base = base
        self.end = end
        self.customer_id = f"cust-{index + 1:05d}"
        persona = _PERSONAS[_bisect_choice(rng, _PERSONA_CUM)]
        if persona.name == "unhappy" and rng.random() < 0.4:
            persona = _UNHAPPY_BIG_SPENDER
        self.persona = persona
        self.channel = rng.choices(_CHANNELS, _CHANNEL_WEIGHTS)[0]
        self.hour = min(22.0, max(7.0, rng.gauss(15.0, 3.5)))
        n_fav = min(len(cat.by_category), rng.choice((1, 2, 2, 3)))
        favourites: list[int] = []
        while len(favourites) < n_fav:
            category = _bisect_choice(rng, cat.category_cum)
            if category not in favourites:
                favourites.append(category)
        self.favourites = favourites
        self.fav_cum = list(accumulate(0.6**k for k in range(n_fav)))
        span = end - base
        # Churners and lapsing customers stop early enough to be silent past a 90-day horizon.
        latest_stop = end - 100 * DAY if span >= 200 * DAY else base + span // 2
        lifetime = persona.lifetime
        if lifetime == "stay" and persona.name == "unhappy" and rng.random() < 0.3:
            lifetime = "churn"
        if lifetime == "stay":
            roll = rng.random()
            offset = rng.uniform(0, 0.05) if roll < 0.4 else rng.uniform(0, 0.8)
            self.join = base + int(offset * span)
            self.stop = end
            self.lapse_start = end
        else:
            self.join = base + int(rng.uniform(0, 0.6) * (latest_stop - base))
            room = latest_stop - self.join
            self.stop = self.join + max(21 * DAY, int(rng.uniform(0.3, 1.0) * room))
            if lifetime == "lapse":
                self.lapse_start = self.join + int(rng.uniform(0.2, 0.6) * (self.stop - self.join))
            else:
                # Churners slow down over the last quarter of their life, then stop at once.
                self.lapse_start = self.stop - (self.stop - self.join) // 4
        self.stop = min(self.stop, end)
        self.queue: list[tuple[int, int, dict[str, Any]]] = []
        self.seq = 0
        if lifetime == "churn" and rng.random() < 0.3:
            if rng.random() < 0.5:
                self._ticket(self.stop - rng.randint(600, 3 * DAY), "negative")
            self._push(self.stop, {"type": "subscription_cancel"})

    # -- building events -------------------------------------------------------------------

    def _push(self, t: int, body: dict[str, Any]) -> None:
        """Queue an event at time ``t`` unless it falls after this customer's stop."""
        if t < self.join or t > self.stop or t >= self.end:
            return
        rng = self.rng
        roll = rng.random()
        if roll < 0.85:
            timestamp: Any = datetime.fromtimestamp(t, UTC).isoformat()
        elif roll < 0.95:
            timestamp = t
        else:
            timestamp = float(t)
        event = {
            "event_id": "",
            "customer_id": self.customer_id,
            "type": body.pop("type"),
            "timestamp": timestamp,
        }
        event.update(body)
        roll = rng.random()
        if roll < 0.35:
            channel = self.channel if roll < 0.3 else rng.choice(_CHANNELS)
            properties: dict[str, Any] = {"channel": channel}
            if "item_id" in body and roll < 0.12:
                item = int(body["item_id"][4:]) - 1
                properties["category"] = self.cat.category_names[self.cat.categories[item]]
            event["properties"] = properties
        if rng.random() < 0.01:
            key, value = rng.choice(_EXTRA_FIELDS)
            event[key] = value
        self.seq += 1
        heapq.heappush(self.queue, (t, self.seq, event))

    def _pick_item(self, tier: str) -> int:
        rng, cat = self.rng, self.cat
        if rng.random() < 0.85:
            category = self.favourites[_bisect_choice(rng, self.fav_cum)]
        else:
            category = _bisect_choice(rng, cat.category_cum)
        members = cat.by_category[category]
        return members[_bisect_choice(rng, cat.cum_weights[tier][category])]

    def _ticket(self, t: int, mood: str) -> None:
        pools = NEGATIVE_PHRASES if mood == "negative" else QUESTION_PHRASES
        text = compose_text(self.rng, pools, "negative" if mood == "negative" else "question")
        self._push(t, {"type": "support_ticket", "text": text})

    def _feedback(self, t: int, mood: str) -> None:
        rng = self.rng
        pools = {
            "positive": POSITIVE_PHRASES,
            "neutral": NEUTRAL_PHRASES,
            "negative": NEGATIVE_PHRASES,
        }[mood]
        body: dict[str, Any] = {"type": "feedback", "text": compose_text(rng, pools, mood)}
        if rng.random() < 0.9:
            body["rating"] = star_rating(rng, mood)
        self._push(t, body)

    def _mood(self, t: int) -> str:
        pos, neu, _ = self.persona.mood
        if self.persona.lifetime == "churn" and t >= self.lapse_start:
            pos, neu = pos / 2, neu / 2  # unhappy before leaving
        roll = self.rng.random()
        return "positive" if roll < pos else ("neutral" if roll < pos + neu else "negative")

    def _session(self, t: int) -> int:
        """Queue one visit starting at ``t``; returns the time of its last event."""
        rng, persona, cat = self.rng, self.persona, self.cat
        if rng.random() < persona.ticket_prob:
            mood = self._mood(t)
            self._ticket(t, "negative" if mood == "negative" else "question")
            t += rng.randint(60, 900)
        if rng.random() >= persona.buy_prob:
            viewed = [self._pick_item("normal") for _ in range(rng.randint(1, 4))]
            for item in viewed:
                self._push(t, {"type": "view", "item_id": cat.item_ids[item]})
                t += rng.randint(15, 240)
            if rng.random() < 0.35:
                self._push(t, {"type": "cart_add", "item_id": cat.item_ids[rng.choice(viewed)]})
            return t
        low, high = persona.lines
        basket: list[int] = []
        for _ in range(rng.randint(low, high)):
            if basket and rng.random() < 0.3:
                item = cat.companions[rng.choice(basket)]
            else:
                item = self._pick_item(persona.tier)
            if item not in basket:
                basket.append(item)
        for _ in range(rng.randint(0, 1)):  # browsing around before choosing
            self._push(t, {"type": "view", "item_id": cat.item_ids[self._pick_item("normal")]})
            t += rng.randint(15, 240)
        for item in basket:
            if rng.random() < 0.5:
                self._push(t, {"type": "view", "item_id": cat.item_ids[item]})
                t += rng.randint(15, 300)
            if rng.random() < 0.5:
                self._push(t, {"type": "cart_add", "item_id": cat.item_ids[item]})
                t += rng.randint(10, 120)
        t += rng.randint(30, 600)
        cheap = persona.tier == "cheap"
        for item in basket:
            roll = rng.random()
            quantity = 1 if roll < 0.75 else (2 if roll < 0.9 else rng.randint(3, 5))
            if cheap and rng.random() < 0.3:
                quantity += rng.randint(1, 3)
            discount = rng.uniform(0.7, 0.95) if cheap and rng.random() < 0.4 else 1.0
            amount = round(cat.prices[item] * quantity * discount, 2)
            self._push(
                t,
                {
                    "type": "purchase",
                    "item_id": cat.item_ids[item],
                    "amount": amount,
                    "quantity": quantity,
                },
            )
            if rng.random() < persona.return_prob:
                back = t + rng.randint(2 * DAY, 25 * DAY)
                returned = quantity
                if quantity > 1 and rng.random() < 0.5:
                    returned = rng.randint(1, quantity - 1)
                body: dict[str, Any] = {
                    "type": "return",
                    "item_id": cat.item_ids[item],
                    "amount": round(amount * returned / quantity, 2),
                }
                if rng.random() < 0.7 or returned != quantity:
                    body["quantity"] = returned
                self._push(back, body)
                if persona.ticket_prob > 0.1 and rng.random() < 0.5:
                    self._ticket(back + rng.randint(600, DAY), "negative")
        if rng.random() < persona.feedback_prob:
            self._feedback(t + rng.randint(DAY // 2, 7 * DAY), self._mood(t))
        return t

    def _next_session(self, day_start: int, gap_days: float) -> int:
        rng = self.rng
        day = day_start // DAY + max(0.3, rng.expovariate(1.0 / gap_days))
        hour = min(23.5, max(6.0, rng.gauss(self.hour, 2.5)))
        return int(int(day) * DAY + hour * 3600)

    def events(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield ``(time, event)`` in time order, interleaving sessions with queued follow-ups."""
        rng, persona, queue = self.rng, self.persona, self.queue
        gap = persona.gap_days * math.exp(rng.gauss(0.0, 0.3))
        slowdown = rng.uniform(1.3, 1.7) if persona.lifetime == "lapse" else 1.15
        first_delay = rng.uniform(0, min(gap, 10.0, (self.end - self.join) / DAY / 4))
        t = self.join + int(first_delay * DAY)
        while t < self.stop:
            last = self._session(t)
            if t >= self.lapse_start:
                gap *= slowdown
            following = max(self._next_session(t, gap), last + 600)
            while queue and queue[0][0] < following:
                entry = heapq.heappop(queue)
                yield entry[0], entry[2]
            t = following
        while queue:
            entry = heapq.heappop(queue)
            yield entry[0], entry[2]


def _bisect_choice(rng: random.Random, cum_weights: list[float]) -> int:
    """Index drawn with the given cumulative weights (``random.choices`` without the list)."""
    target = rng.random() * cum_weights[-1]
    low, high = 0, len(cum_weights) - 1
    while low < high:
        middle = (low + high) // 2
        if cum_weights[middle] > target:
            high = middle
        else:
            low = middle + 1
    return low
