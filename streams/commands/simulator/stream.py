"""The simulated stream: customer timelines merged in event time, plus malformed messages."""

from __future__ import annotations

import heapq
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import orjson

from streams.commands.simulator.catalogue import build_catalogue
from streams.commands.simulator.customers import DAY, Customer

__all__ = ["SimulationConfig", "catalogue_items", "generate_events", "generate_messages"]

logger = logging.getLogger(__name__)

_DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)


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


def catalogue_items(config: SimulationConfig) -> list[dict[str, Any]]:
    """The simulated shop's catalogue, as records of ``CRM_ITEMS_TOPIC``: each item with its
    category (the simulated customers favour a few), price band and a name from both.

    >>> items = catalogue_items(SimulationConfig(items=30))
    >>> len(items), sorted(items[0])
    (30, ['category', 'item_id', 'name', 'price'])
    """
    catalogue = build_catalogue(config.seed, config.items)
    items = []
    for n, item_id in enumerate(catalogue.item_ids):
        category = catalogue.category_names[catalogue.categories[n]]
        price = catalogue.prices[n]
        tier = "budget" if price < 10 else "premium" if price > 60 else "classic"
        items.append({"item_id": item_id, "name": f"{tier.title()} {category} item {n + 1}",
                      "category": f"shop/{category}", "price": price})  # fmt: skip
    return items


def _timed_events(config: SimulationConfig) -> Iterator[tuple[int, dict[str, Any]]]:
    """All customers' timelines merged into one stream ordered by event time."""
    catalogue = build_catalogue(config.seed, config.items)
    base = math.ceil(config.start.timestamp())
    end = base + int(config.days * DAY)
    timelines = [
        Customer(config.seed, catalogue, index, base, end).events()
        for index in range(config.customers)
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
