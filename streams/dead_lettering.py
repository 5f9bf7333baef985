"""Rejected events on their way to the dead-letter topic, queued with their reason."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from faust.types import Message

from schemas.dead_letters import DeadLetter, SourcePosition
from streams.metrics import ScorerMetrics
from streams.producing import BatchProducer

__all__ = ["DeadLetters", "position"]

logger = logging.getLogger(__name__)


class DeadLetters:
    """Queues a rejected event's dead letter on ``producer``, for ``topic``, and counts it.

    The record is sent with the batch's other records, before the batch's offsets are
    acknowledged; one the broker refuses is counted in
    ``crm_scorer_dead_letter_failures_total`` and logged, and its event acknowledged all the
    same (a dead letter must never block its partition).
    """

    def __init__(
        self,
        topic: str,
        producer: BatchProducer,
        metrics: ScorerMetrics,
        clock: Callable[[], float],
    ) -> None:
        self.topic = topic
        self._producer = producer
        self._metrics = metrics
        self._clock = clock

    def add(
        self,
        message: Message,
        reason: str,
        error: str,
        field: str | None = None,
        event_type: str | None = None,
    ) -> None:
        """Queue the dead letter of ``message``: rejected for ``reason`` (``error`` says why,
        naming ``field`` when one is at fault)."""
        letter = DeadLetter.for_message(
            message.value,
            reason=reason,
            error=error,
            field=field,
            source=SourcePosition(
                topic=message.topic, partition=message.partition, offset=message.offset
            ),
            dead_lettered_at=datetime.fromtimestamp(self._clock(), tz=UTC),
        )
        where = position(message)

        def sent(_: int, __: int, failure: BaseException | None) -> None:
            if failure is not None:
                self._metrics.dead_letter_failures.inc()
                logger.error("Could not dead-letter %s (%s: %s): %r", where, reason, error, failure)

        self._producer.add(self.topic, message.key, letter.to_bytes(), on_sent=sent)
        self._metrics.dead_letter(reason)
        self._metrics.event(event_type, "dead_lettered")
        logger.info("Dead-lettered %s: %s (%s)", where, reason, error)


def position(message: Any) -> str:
    """``topic[partition]@offset`` of a message, for logs."""
    return f"{message.topic}[{message.partition}]@{message.offset}"
