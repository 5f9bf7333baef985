"""The wire: events in, scores to Redis, alerts and dead letters out."""

from schemas.alerts import Alert, AlertType, Severity
from schemas.dead_letters import DeadLetter, SourcePosition
from schemas.errors import CrmScorerError, EventRejected, UnknownEventType
from schemas.events import (
    DEAD_LETTER_REASONS,
    EventType,
    decode_event,
    parse_event_time,
    validate_event,
)
from schemas.json_schema import wire_json_schema
from schemas.scores import Score

__all__ = [
    "DEAD_LETTER_REASONS",
    "Alert",
    "AlertType",
    "CrmScorerError",
    "DeadLetter",
    "EventRejected",
    "EventType",
    "Score",
    "Severity",
    "SourcePosition",
    "UnknownEventType",
    "decode_event",
    "parse_event_time",
    "validate_event",
    "wire_json_schema",
]
