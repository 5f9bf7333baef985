"""The JSON Schema of everything on the wire, as ``crm-scorer schema`` prints it."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import TypeAdapter

from schemas.alerts import Alert
from schemas.dead_letters import DeadLetter
from schemas.events import CustomerEvent
from schemas.scores import Score

__all__ = ["wire_json_schema"]

logger = logging.getLogger(__name__)


def wire_json_schema() -> dict[str, Any]:
    """One document with the schema of events, scores, alerts and dead letters.

    >>> sorted(wire_json_schema()["properties"])
    ['alert', 'dead_letter', 'event', 'score']
    """
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "crm-scorer wire formats",
        "description": (
            "event: a message value on CRM_EVENTS_TOPIC (key = customer_id). "
            "score: the Redis hash at CRM_REDIS_PREFIX + customer_id (all values are strings "
            "there; recommendations is a JSON array). alert: a message value on "
            "CRM_ALERTS_TOPIC. dead_letter: a message value on CRM_DLQ_TOPIC."
        ),
        "type": "object",
        "properties": {
            "event": TypeAdapter(CustomerEvent).json_schema(),
            "score": Score.model_json_schema(),
            "alert": Alert.model_json_schema(),
            "dead_letter": DeadLetter.model_json_schema(),
        },
    }
