"""Dead letters: a rejected event with its original bytes, the reason and where it came from."""

from __future__ import annotations

import base64
import hashlib
import logging
from datetime import datetime

import orjson
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MAX_EMBEDDED_BYTES", "MAX_EMBEDDED_TEXT", "DeadLetter", "SourcePosition"]

logger = logging.getLogger(__name__)

# A dead letter must itself fit in a Kafka message (1 MB by default): base64 adds a third,
# and the text copy is only for people reading small messages.
MAX_EMBEDDED_BYTES = 600_000
MAX_EMBEDDED_TEXT = 100_000


class SourcePosition(BaseModel):
    """Where the rejected message was read."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int


class DeadLetter(BaseModel):
    """The value of a message on the dead-letter topic (its key is the original key).

    ``original_base64`` holds the exact bytes received (their first ``MAX_EMBEDDED_BYTES``
    when larger, with ``original_truncated`` set: the source position still finds the whole
    message on the events topic); ``original_size`` and ``original_sha256`` describe all of
    it. ``original_text`` repeats small UTF-8 messages as text for people reading the topic.

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
    original_size: int = 0
    original_sha256: str = ""
    original_truncated: bool = False
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
        embedded = payload[:MAX_EMBEDDED_BYTES]
        text: str | None = None
        if len(payload) <= MAX_EMBEDDED_TEXT:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        return cls(
            reason=reason,
            error=error,
            field=field,
            source=source,
            original_base64=base64.b64encode(embedded).decode("ascii"),
            original_text=text,
            original_size=len(payload),
            original_sha256=hashlib.sha256(payload).hexdigest(),
            original_truncated=len(embedded) < len(payload),
            dead_lettered_at=dead_lettered_at,
        )

    def original(self) -> bytes:
        """The bytes that were rejected (their beginning if ``original_truncated``)."""
        return base64.b64decode(self.original_base64)

    def to_bytes(self) -> bytes:
        """The JSON message value."""
        return orjson.dumps(self.model_dump(mode="json"))
