"""The project's exception hierarchy: one root, and the wire's decode errors."""

from __future__ import annotations

import logging

__all__ = ["CrmScorerError", "EventRejected", "UnknownEventType"]

logger = logging.getLogger(__name__)


class CrmScorerError(Exception):
    """Root of every error this project raises on purpose."""


class EventRejected(CrmScorerError):
    """An event that cannot be scored; it belongs on the dead-letter topic.

    ``reason`` is a short code from :data:`schemas.events.DEAD_LETTER_REASONS` (it becomes a
    metric label), ``field`` names the offending field when there is one, and the message says
    what is wrong in words a producer can act on.
    """

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message


class UnknownEventType(CrmScorerError):
    """A well-formed event of a ``type`` this version does not know: counted and skipped."""

    def __init__(self, event_type: str) -> None:
        msg = f"unknown event type {event_type!r}"
        super().__init__(msg)
        self.event_type = event_type
