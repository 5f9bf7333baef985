"""Dead letters: a rejected event with its original bytes, the reason and where it came from."""

from __future__ import annotations

import base64
import logging
from datetime import datetime

import orjson
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DeadLetter", "SourcePosition"]

logger = logging.getLogger(__name__)


class SourcePosition(BaseModel):
    """Where the rejected message was read."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int


class DeadLetter(BaseModel):
    """The value of a message on the dead-letter topic (its key is the original key).

    ``original_base64`` always holds the exact bytes received; ``original_text`` repeats
    them as text when they were valid UTF-8, for people reading the topic.

    >>> from datetime import UTC, datetime
    >>> letter = DeadLetter.for_message(
    ...     b"not json", reason="not_json", error="message is not JSON", field=None,
    ...     source=SourcePosition(topic="crm.events", partition=0, offset=7),
    ...     dead_lettered_at=datetime(2024, 1, 1, tzinfo=UTC))
    >>> letter.original() == b"not json", letter.original_text
    (True, 'not json')
    """

    model_config = ConfigDict(frozen=True)

    reason: str = Field(description="Short reason code, also the metric label.")
    error: str = Field(description="What is wrong, naming the field when there is one.")
    field: str | None = None
    source: SourcePosition
    original_base64: str
    original_text: str | None = None
    dead_lettered_at: datetime

    @classmethod
    def for_message(
        cls,
        raw: bytes | None,
        *,
        reason: str,
        error: str,
        field: str | None,
        source: SourcePosition,
        dead_lettered_at: datetime,
    ) -> DeadLetter:
        """Wrap the original bytes of a rejected message."""
        payload = raw or b""
        try:
            text: str | None = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        return cls(
            reason=reason,
            error=error,
            field=field,
            source=source,
            original_base64=base64.b64encode(payload).decode("ascii"),
            original_text=text,
            dead_lettered_at=dead_lettered_at,
        )

    def original(self) -> bytes:
        """The exact bytes that were rejected."""
        return base64.b64decode(self.original_base64)

    def to_bytes(self) -> bytes:
        """The JSON message value."""
        return orjson.dumps(self.model_dump(mode="json"))
