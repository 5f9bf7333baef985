"""Deterministic simulator of a realistic customer event stream, for the demo and the tests."""

from __future__ import annotations

import heapq
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from operator import itemgetter
from typing import Any

import orjson

__all__ = ["SimulationConfig", "generate_events", "generate_messages"]

logger = logging.getLogger(__name__)

_DAY = 86_400
_DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)

_CATEGORY_NAMES = (
    "electronics",
    "books",
    "home",
    "garden",
    "toys",
    "beauty",
    "sports",
    "fashion",
    "grocery",
    "pets",
    "music",
    "office",
    "kitchen",
    "health",
    "baby",
    "outdoor",
)
_CHANNELS = ("web", "app", "store", "email")
_CHANNEL_WEIGHTS = (0.5, 0.3, 0.12, 0.08)
_EXTRA_FIELDS = (
    ("campaign", "spring-sale"),
    ("campaign", "black-friday"),
    ("client_version", "web-2.3.1"),
    ("client_version", "ios-5.0.2"),
    ("source_system", "legacy-pos"),
)

# Phrase pools: text = opener + detail + closer, so each mood has over a hundred combinations.
_POSITIVE = (
    (
        "Great service",
        "Absolutely love it",
        "Excellent quality",
        "Really happy with my order",
        "Fantastic experience",
        "Wonderful shop",
        "Brilliant as always",
        "Super pleased",
    ),
    (
        "fast delivery",
        "the parcel arrived early and well packed",
        "exactly as described",
        "the support team was really helpful",
        "great value for money",
        "the quality is even better than expected",
        "checkout was quick and easy",
    ),
    (
        "love it!",
        "will buy again.",
        "highly recommend!",
        "thank you so much!",
        "five stars.",
        "best shop around!",
        "keep up the good work!",
    ),
)
_NEUTRAL = (
    (
        "The order arrived",
        "Delivery was okay",
        "Product is as expected",
        "Average experience",
        "It does the job",
        "Nothing special",
    ),
    (
        "it took the usual number of days",
        "the packaging was standard",
        "the size is what the page says",
        "the price is about the same as elsewhere",
        "the colour is a bit different from the photo",
    ),
    ("Fine.", "No complaints.", "Might order again.", "It is okay.", "Neither good nor bad."),
)
_NEGATIVE = (
    (
        "Terrible experience",
        "Very disappointed",
        "Awful service",
        "Really unhappy",
        "Worst purchase ever",
        "Horrible quality",
        "Extremely frustrated",
    ),
    (
        "the parcel arrived broken and nobody answers",
        "it arrived two weeks late",
        "the item stopped working after one day",
        "I was charged twice and still have no refund",
        "the product looks nothing like the pictures",
        "support ignored my three emails",
        "half of the order was missing",
    ),
    (
        "Very disappointed.",
        "I want a refund.",
        "Never ordering again.",
        "This is unacceptable.",
        "Absolutely terrible.",
        "I am furious.",
        "Worst shop ever.",
    ),
)
_QUESTIONS = (
    ("Hello", "Hi", "Good morning", "Hi there", "Hello team"),
    (
        "could you tell me when my order will ship",
        "can I change the delivery address",
        "do you have this item in another size",
        "how do I update my payment details",
        "is there an invoice for my last order",
        "can I add an item to my open order",
    ),
    ("Thanks.", "Thank you.", "Regards.", "Thanks in advance.", "Cheers."),
)
_MOODS = ("positive", "neutral", "negative")


@dataclass(frozen=True)
class SimulationConfig:
    """Size, period and seed of a simulated stream; equal configs give identical streams."""

    customers: int = 500
    items: int = 300
    days: float = 365.0
    start: datetime = _DEFAULT_START
    seed: int = 7
    bad_event_ratio: float = 0.0  # fraction of extra malformed messages mixed in

    def __post_init__(self) -> None:
        if self.customers < 1 or self.items < 1:
            msg = "customers and items must be at least 1"
            raise ValueError(msg)
        if not 0 < self.days < 36_500:
            msg = f"days must be in (0, 36500), got {self.days}"
            raise ValueError(msg)
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            msg = "start must be timezone-aware"
            raise ValueError(msg)
        if not 0.0 <= self.bad_event_ratio < 1.0:
            msg = f"bad_event_ratio must be in [0, 1), got {self.bad_event_ratio}"
            raise ValueError(msg)


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


@dataclass(frozen=True, slots=True)
class _Catalogue:
    """Items with prices, categories, a companion item each and per-tier popularity."""

    item_ids: list[str]
    prices: list[float]
    categories: list[int]
    category_names: list[str]
    companions: list[int]
    by_category: list[list[int]]
    cum_weights: dict[str, list[list[float]]]
    category_cum: list[float]


def _build_catalogue(config: SimulationConfig) -> _Catalogue:
    """Log-normal prices by category level, Zipf-like popularity, 1-16 categories."""
    rng = random.Random(f"{config.seed}:catalogue")
    n_items = config.items
    n_categories = min(len(_CATEGORY_NAMES), max(1, n_items // 12))
    levels = [rng.uniform(math.log(6.0), math.log(45.0)) for _ in range(n_categories)]
    order = list(range(n_items))
    rng.shuffle(order)
    # Round-robin over a shuffled order: every category gets items.
    categories = [0] * n_items
    for position, item in enumerate(order):
        categories[item] = position % n_categories
    prices = [
        round(min(200.0, max(2.0, math.exp(rng.gauss(levels[c], 0.7)))), 2) for c in categories
    ]
    ranks = list(range(n_items))
    rng.shuffle(ranks)
    popularity = [1.0 / (rank + 1) ** 1.07 for rank in ranks]
    by_category: list[list[int]] = [[] for _ in range(n_categories)]
    for item, category in enumerate(categories):
        by_category[category].append(item)
    tiers = {
        "normal": popularity,
        "cheap": [w / p**1.5 for w, p in zip(popularity, prices, strict=True)],
        "premium": [w * p**0.8 for w, p in zip(popularity, prices, strict=True)],
    }
    cum_weights = {
        tier: [list(accumulate(weights[i] for i in members)) for members in by_category]
        for tier, weights in tiers.items()
    }
    companions = []
    for item, category in enumerate(categories):
        members = by_category[category]
        companion = rng.choice(members)
        companions.append(companion if companion != item or len(members) == 1 else members[0])
    category_cum = list(accumulate(sum(popularity[i] for i in m) for m in by_category))
    return _Catalogue(
        item_ids=[f"sku-{i + 1:04d}" for i in range(n_items)],
        prices=prices,
        categories=categories,
        category_names=[_CATEGORY_NAMES[c] for c in range(n_categories)],
        companions=companions,
        by_category=by_category,
        cum_weights=cum_weights,
        category_cum=category_cum,
    )


def _text(rng: random.Random, pools: tuple[tuple[str, ...], ...], mood: str) -> str:
    """One sentence from a phrase pool; negative text ends its detail with a full stop."""
    opener, detail, closer = (rng.choice(pool) for pool in pools)
    if mood == "negative":
        return f"{opener}, {detail}. {closer}"
    if mood == "question":
        return f"{opener}, {detail}? {closer}"
    if mood == "positive":
        return f"{opener}, {detail}, {closer}"
    return f"{opener}; {detail}. {closer}"


def _rating(rng: random.Random, mood: str) -> int:
    if mood == "positive":
        return 5 if rng.random() < 0.65 else 4
    if mood == "negative":
        return 1 if rng.random() < 0.6 else 2
    return 3 if rng.random() < 0.85 else 4


class _Customer:
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

    def __init__(
        self, config: SimulationConfig, cat: _Catalogue, index: int, base: int, end: int
    ) -> None:
        rng = random.Random(f"{config.seed}:customer:{index}")
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
        latest_stop = end - 100 * _DAY if span >= 200 * _DAY else base + span // 2
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
            self.stop = self.join + max(21 * _DAY, int(rng.uniform(0.3, 1.0) * room))
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
                self._ticket(self.stop - rng.randint(600, 3 * _DAY), "negative")
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
        pools = _NEGATIVE if mood == "negative" else _QUESTIONS
        text = _text(self.rng, pools, "negative" if mood == "negative" else "question")
        self._push(t, {"type": "support_ticket", "text": text})

    def _feedback(self, t: int, mood: str) -> None:
        rng = self.rng
        pools = {"positive": _POSITIVE, "neutral": _NEUTRAL, "negative": _NEGATIVE}[mood]
        body: dict[str, Any] = {"type": "feedback", "text": _text(rng, pools, mood)}
        if rng.random() < 0.9:
            body["rating"] = _rating(rng, mood)
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
                back = t + rng.randint(2 * _DAY, 25 * _DAY)
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
                    self._ticket(back + rng.randint(600, _DAY), "negative")
        if rng.random() < persona.feedback_prob:
            self._feedback(t + rng.randint(_DAY // 2, 7 * _DAY), self._mood(t))
        return t

    def _next_session(self, day_start: int, gap_days: float) -> int:
        rng = self.rng
        day = day_start // _DAY + max(0.3, rng.expovariate(1.0 / gap_days))
        hour = min(23.5, max(6.0, rng.gauss(self.hour, 2.5)))
        return int(int(day) * _DAY + hour * 3600)

    def events(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield ``(time, event)`` in time order, interleaving sessions with queued follow-ups."""
        rng, persona, queue = self.rng, self.persona, self.queue
        gap = persona.gap_days * math.exp(rng.gauss(0.0, 0.3))
        slowdown = rng.uniform(1.3, 1.7) if persona.lifetime == "lapse" else 1.15
        first_delay = rng.uniform(0, min(gap, 10.0, (self.end - self.join) / _DAY / 4))
        t = self.join + int(first_delay * _DAY)
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


def _timed_events(config: SimulationConfig) -> Iterator[tuple[int, dict[str, Any]]]:
    """All customers' timelines merged into one stream ordered by event time."""
    catalogue = _build_catalogue(config)
    base = math.ceil(config.start.timestamp())
    end = base + int(config.days * _DAY)
    timelines = [
        _Customer(config, catalogue, index, base, end).events() for index in range(config.customers)
    ]
    return heapq.merge(*timelines, key=itemgetter(0))


def generate_events(config: SimulationConfig, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Valid events as dicts, in non-decreasing event-time order, at most `limit`.

    The stream is a pure function of ``config``: a smaller ``limit`` yields a prefix.

    >>> events = list(generate_events(SimulationConfig(customers=20, days=60), limit=5))
    >>> len(events), events[0]["event_id"], events[0]["customer_id"].startswith("cust-")
    (5, '7-0', True)
    >>> list(generate_events(SimulationConfig(customers=20, days=60), limit=5)) == events
    True
    """
    if limit is not None and limit < 0:
        msg = f"limit must be >= 0, got {limit}"
        raise ValueError(msg)
    if limit == 0:
        return
    prefix = f"{config.seed}-"
    for n, (_, event) in enumerate(_timed_events(config)):
        event["event_id"] = f"{prefix}{n}"
        yield event
        if limit is not None and n + 1 >= limit:
            return


def _bad_message(
    rng: random.Random, config: SimulationConfig, number: int, timestamp: Any
) -> tuple[bytes | None, bytes]:
    """One malformed message of a random kind, shaped like a real producer's mistake."""
    customer_id = f"cust-{rng.randint(1, config.customers):05d}"
    item_id = f"sku-{rng.randint(1, config.items):04d}"
    key: bytes | None = customer_id.encode() if rng.random() < 0.8 else None
    event: dict[str, Any] = {
        "event_id": f"{config.seed}-bad-{number}",
        "customer_id": customer_id,
        "type": "purchase",
        "timestamp": timestamp,
        "item_id": item_id,
        "amount": round(rng.uniform(2, 150), 2),
        "quantity": 1,
    }
    kind = rng.randrange(9)
    if kind == 0:  # not JSON: a CSV line or a truncated document
        if rng.random() < 0.5:
            return key, f"purchase;{customer_id};{item_id};{event['amount']}".encode()
        return key, orjson.dumps(event)[: -rng.randint(2, 12)]
    if kind == 1:  # a batch sent as one message
        return key, orjson.dumps([event])
    if kind == 2:
        del event["customer_id"]
    elif kind == 3:
        event["amount"] = f"{event['amount']:.2f}"
    elif kind == 4:
        event["amount"] = -event["amount"]
    elif kind == 5:
        event["timestamp"] = rng.choice(("yesterday", "2025-13-45T99:00:00+00:00", "", "n/a"))
    elif kind == 6:
        event["timestamp"] = (
            datetime.fromtimestamp(rng.randint(1_735_689_600, 1_767_225_600), UTC)
            .replace(tzinfo=None)
            .isoformat()
        )
    elif kind == 7:
        event = {
            "event_id": event["event_id"],
            "customer_id": customer_id,
            "type": "feedback",
            "timestamp": timestamp,
            "text": "Love it!",
            "rating": 9,
        }
    else:  # Latin-1 text where UTF-8 is required
        event = {
            "event_id": event["event_id"],
            "customer_id": customer_id,
            "type": "support_ticket",
            "timestamp": timestamp,
            "text": "TEXT",
        }
        return key, orjson.dumps(event).replace(b"TEXT", "Caf\u00e9 cr\u00e8me".encode("latin-1"))
    return key, orjson.dumps(event)


def generate_messages(
    config: SimulationConfig, limit: int | None = None
) -> Iterator[tuple[bytes | None, bytes]]:
    """(kafka key, value) pairs ready to produce: key = customer_id UTF-8, value = orjson bytes.

    When ``bad_event_ratio`` > 0 each message is, with that probability, a malformed one (not
    JSON, a JSON array, no customer_id, amount as a string, a negative amount, a bad timestamp
    string, an ISO timestamp without offset, rating 9, invalid UTF-8) under some key; the valid
    ones are exactly :func:`generate_events`' stream. ``limit`` counts every message yielded.
    """
    if limit is not None and limit < 0:
        msg = f"limit must be >= 0, got {limit}"
        raise ValueError(msg)
    ratio = config.bad_event_ratio
    rng = random.Random(f"{config.seed}:bad")
    count = bad = 0
    timestamp: Any = datetime.fromtimestamp(math.ceil(config.start.timestamp()), UTC).isoformat()
    events = generate_events(config)
    while limit is None or count < limit:
        if ratio and rng.random() < ratio:
            yield _bad_message(rng, config, bad, timestamp)
            bad += 1
        else:
            event = next(events, None)
            if event is None:
                break
            timestamp = event["timestamp"]
            yield event["customer_id"].encode(), orjson.dumps(event)
        count += 1
    if bad:
        logger.debug("simulated %d malformed messages among %d", bad, count)
