"""The engine benchmark's workload (the throughput benchmark's events and catalogue, as
produced) and its stopwatch (CPU seconds per part of the work); see ``benchmarks/engine.py``."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import orjson

from benchmarks.throughput_workload import ITEMS, make_catalogue, make_events
from online_models.customer.activity import DAY, Activity
from online_models.recommend.content import ContentModel
from schemas import decode_event
from schemas.items import decode_item
from streams.convert import activity_of

__all__ = ["START", "Event", "Stopwatch", "Workload"]

START = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
P = ParamSpec("P")
T = TypeVar("T")
#: One event as ``ScoringEngine.process`` takes it: customer id, activity, offset, event id.
Event = tuple[str, Activity, int | None, str | None]
TEXT_KINDS = frozenset({"feedback", "support_ticket"})


@dataclass(frozen=True)
class Workload:
    """The events (JSON values, in event-time order) and catalogue records, as produced."""

    events: list[bytes]
    catalogue: list[tuple[bytes, bytes]]

    @classmethod
    def simulated(
        cls, customers: int, events: int, days: float, seed: int, items: int = ITEMS
    ) -> Workload:
        """The throughput benchmark's events over ``days`` from 2025-01-01, its catalogue of
        ``items`` items (none: 0)."""
        messages = make_events(events, customers, START, START + days * DAY, seed, "e")
        return cls([value for _, value in messages], make_catalogue(items) if items else [])

    def dump(self, path: Path) -> None:
        document = {
            "events": [value.decode() for value in self.events],
            "catalogue": [[key.decode(), value.decode()] for key, value in self.catalogue],
        }
        path.write_bytes(orjson.dumps(document))

    @classmethod
    def load(cls, path: Path) -> Workload:
        document = orjson.loads(path.read_bytes())
        catalogue = [(key.encode(), value.encode()) for key, value in document["catalogue"]]
        return cls([value.encode() for value in document["events"]], catalogue)

    def facts(self) -> dict[str, Any]:
        """How many customers and events, over how many days of event time."""
        documents = [orjson.loads(value) for value in self.events]
        times = [document["timestamp"] for document in documents]
        return {
            "events": len(documents),
            "customers": len({document["customer_id"] for document in documents}),
            "event_time_days": round((max(times) - min(times)) / DAY, 1) if times else 0.0,
            "text_events": sum(document["type"] in TEXT_KINDS for document in documents),
            "catalogue_items": len(self.catalogue),
        }

    def decoded(self) -> list[Event]:
        """The events as the engine takes them, decoded as the worker decodes a message."""
        out = []
        for offset, value in enumerate(self.events):
            event = decode_event(value)
            out.append((event.customer_id, activity_of(event), offset, event.event_id))
        return out

    def content_model(self) -> ContentModel:
        """The catalogue read as the worker reads ``CRM_ITEMS_TOPIC``."""
        catalogue = ContentModel()
        for key, value in self.catalogue:
            item = decode_item(key, value)
            if item is not None:
                catalogue.upsert(item.item_id, item.model_dump(exclude_none=True))
        return catalogue


class Stopwatch:
    """CPU seconds per part of the work. A part entered inside another is charged to itself
    alone: the re-scores an event's ``process`` makes are not the event's time."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: defaultdict[str, int] = defaultdict(int)
        self._open: list[list[Any]] = []  # [part, started, seconds of the parts inside]

    def start(self, part: str) -> None:
        self._open.append([part, time.process_time(), 0.0])

    def stop(self) -> None:
        part, started, inner = self._open.pop()
        elapsed = time.process_time() - started
        self.seconds[part] += elapsed - inner
        self.calls[part] += 1
        if self._open:
            self._open[-1][2] += elapsed

    def timed(self, part: str, function: Callable[P, T]) -> Callable[P, T]:
        """``function``, its calls charged to ``part``."""

        def timed_call(*args: P.args, **kwargs: P.kwargs) -> T:
            self.start(part)
            try:
                return function(*args, **kwargs)
            finally:
                self.stop()

        return timed_call
