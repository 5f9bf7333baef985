"""The worker benchmarks' synthetic workload: events of every type and a product catalogue.

``make_events`` spreads ``n`` events of every type (:data:`KINDS`) over customers and items
with skewed activity; ``make_catalogue`` gives the ``CRM_ITEMS_TOPIC`` records (a name, a
category and a price) of the events' :data:`ITEMS` items. ``throughput.py``,
``catalogue_cost.py``, ``profile_worker.py`` and ``batch_io.py`` produce them to a broker;
``engine_workload.py`` feeds them to the scoring core alone.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import orjson

__all__ = ["ITEMS", "KINDS", "TEXTS", "make_catalogue", "make_events", "recent_events"]

logger = logging.getLogger(__name__)

KINDS = (
    ("view", 40),
    ("purchase", 28),
    ("cart_add", 15),
    ("feedback", 5),
    ("support_ticket", 5),
    ("return", 4),
    ("subscription_cancel", 1),
)
TEXTS = ("great service", "slow delivery, again", "love it", "broken on arrival", "ok")
ITEMS = 5_000
_COLOURS = ("red", "blue", "green", "white", "black", "pink", "grey", "gold", "silver", "ivory")
_NOUNS = ("lamp", "mug", "candle", "frame", "cushion", "bag", "vase", "clock", "tray", "jar")
_NOUNS += ("bowl", "box", "card", "set", "light", "sign", "tin", "plate", "holder", "bottle")


def recent_events(
    n: int, customers: int, span_days: float, now: float, tag: str = "a"
) -> list[tuple[bytes, bytes]]:
    """:func:`make_events` over the ``span_days`` of event time that end an hour before
    ``now`` (seed 1): the worker benchmarks' pass, silent customers re-scored daily."""
    return make_events(n, customers, now - span_days * 86_400 - 3600, now - 3600, 1, tag)


def make_catalogue(items: int = ITEMS) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` records of ``CRM_ITEMS_TOPIC`` for the events' items ``sku-N``."""
    rng = random.Random("catalogue")
    records = []
    for n in range(items):
        noun = rng.choice(_NOUNS)
        item = {
            "item_id": f"sku-{n}",
            "name": f"{rng.choice(_COLOURS)} {rng.choice(_COLOURS)} {noun} {rng.randrange(99)}",
            "category": f"home/{noun}s",
            "price": round(rng.lognormvariate(2.0, 0.8), 2),
        }
        records.append((item["item_id"].encode(), orjson.dumps(item)))
    return records


def make_events(
    n: int, customers: int, start: float, end: float, seed: int, tag: str, prefix: str = "c"
) -> list:
    """``(key, value)`` messages: every event type, customers and items with skewed activity."""
    rng = random.Random(seed)
    kinds, weights = zip(*KINDS, strict=True)
    out = []
    step = (end - start) / n
    for i in range(n):
        # Every customer appears; a tenth of them send a third of the events.
        hot = rng.random() < 0.33
        customer = f"{prefix}{rng.randrange(customers // 10 if hot else customers)}"
        kind = rng.choices(kinds, weights)[0]
        event: dict[str, Any] = {
            "event_id": f"{tag}-{i}",
            "customer_id": customer,
            "type": kind,
            "timestamp": start + i * step,
        }
        item = f"sku-{int(rng.paretovariate(1.1) * 3) % ITEMS}"
        if kind in {"purchase", "return"}:
            event.update(item_id=item, amount=round(rng.uniform(2, 150), 2), quantity=1)
        elif kind in {"view", "cart_add"}:
            event["item_id"] = item
        elif kind in {"feedback", "support_ticket"}:
            event["text"] = rng.choice(TEXTS)
            if kind == "feedback":
                event["rating"] = rng.randint(1, 5)
        out.append((customer.encode(), orjson.dumps(event)))
    return out
