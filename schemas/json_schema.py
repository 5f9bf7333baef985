"""The JSON Schema of everything on the wire, as ``crm-scorer schema`` prints it."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import TypeAdapter

from schemas.alerts import Alert
from schemas.dead_letters import DeadLetter
from schemas.events import CustomerEvent, EventType
from schemas.items import CatalogueItem
from schemas.scores import Score

__all__ = ["wire_json_schema"]

logger = logging.getLogger(__name__)

_ID = "urn:crm-scorer:"


def wire_json_schema() -> dict[str, Any]:
    """One document with the schema of events, catalogue items, scores, alerts and dead letters.

    >>> sorted(wire_json_schema()["properties"])
    ['alert', 'catalogue_item', 'dead_letter', 'event', 'score']
    """
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "crm-scorer wire formats",
        "description": (
            "event: a message value on CRM_EVENTS_TOPIC (key = customer_id). "
            "score: the Redis hash at CRM_REDIS_PREFIX + customer_id (all values are strings "
            "there; recommendations is a JSON array). alert: a message value on "
            "CRM_ALERTS_TOPIC. dead_letter: a message value on CRM_DLQ_TOPIC. catalogue_item: "
            "a message value on CRM_ITEMS_TOPIC (key = item_id; no value removes the item)."
        ),
        "type": "object",
        "properties": {
            # Each part is its own schema resource, so its "#/$defs/..." references resolve
            # inside this document as well as when a producer takes the part alone.
            "event": {"$id": f"{_ID}event", **_event_schema()},
            "score": {"$id": f"{_ID}score", **Score.model_json_schema()},
            "alert": {"$id": f"{_ID}alert", **Alert.model_json_schema()},
            "dead_letter": {"$id": f"{_ID}dead-letter", **DeadLetter.model_json_schema()},
            "catalogue_item": {"$id": f"{_ID}catalogue-item", **CatalogueItem.model_json_schema()},
        },
    }


def _event_schema() -> dict[str, Any]:
    """The known event types, or any other ``type`` with the common fields.

    Events of other types are valid on the wire: the scorer counts and skips them, so a
    producer validating against this schema may send new types before the scorer knows them.
    """
    known = TypeAdapter(CustomerEvent).json_schema()
    defs = known.pop("$defs", {})
    other = {
        "title": "OtherEvent",
        "description": "An event of a type this scorer does not know yet: counted and skipped.",
        "type": "object",
        "required": ["event_id", "customer_id", "type", "timestamp"],
        "properties": {
            "event_id": {"type": "string", "minLength": 1, "maxLength": 256},
            "customer_id": {"type": "string", "minLength": 1, "maxLength": 256},
            "type": {"type": "string", "not": {"enum": [t.value for t in EventType]}},
            "timestamp": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]},
        },
        "additionalProperties": True,
    }
    return {"$defs": defs, "anyOf": [known, other]}
