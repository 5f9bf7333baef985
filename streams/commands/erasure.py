"""``crm-scorer forget``: an erasure request sent to the events topic, and its audit record."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.errors import CrmScorerError
from streams.settings import Settings

__all__ = ["await_audit_record", "send_erasure_request"]

logger = logging.getLogger(__name__)


def send_erasure_request(
    settings: Settings, customer_id: str, requested_by: str
) -> tuple[str, Any]:
    """Send an erasure request for ``customer_id``; its request id, and a consumer of the audit
    topic positioned before the audit record of it (the caller closes it, or
    :func:`await_audit_record` does). Raises CrmScorerError when the request was not sent."""
    from kafka import KafkaConsumer, TopicPartition

    from streams.commands.producer import EventProducer
    from streams.kafka_security import kafka_python_options

    request_id = f"erasure-{uuid.uuid4()}"
    request = {
        "event_id": request_id,
        "customer_id": customer_id,
        "type": "erasure_request",
        "timestamp": datetime.now(UTC).isoformat(),
        "requested_by": requested_by,
    }
    try:
        with EventProducer(settings) as producer:  # creates the audit topic if missing
            audit = KafkaConsumer(
                bootstrap_servers=settings.broker_hosts,
                enable_auto_commit=False,
                **kafka_python_options(settings),
            )
            partitions = [
                TopicPartition(settings.audit_topic, p)
                for p in sorted(audit.partitions_for_topic(settings.audit_topic) or ())
            ]
            audit.assign(partitions)
            audit.seek_to_end(*partitions)
            for partition in partitions:  # pinned now: the record comes after the request
                audit.position(partition)
            producer.send_event(request).get(timeout=30)
    except CrmScorerError:
        raise
    except Exception as exc:  # KafkaError: the request was not acknowledged
        msg = f"cannot send the erasure request to CRM_BROKER={settings.broker}: {exc}"
        raise CrmScorerError(msg) from None
    return request_id, audit


def await_audit_record(audit: Any, request_id: str, wait: float) -> dict[str, Any] | None:
    """The audit record of ``request_id`` read from ``audit`` within ``wait`` seconds (None
    when none came, or ``wait`` is 0); closes ``audit``."""
    deadline = time.monotonic() + wait
    try:
        while wait > 0 and time.monotonic() < deadline:
            for records in audit.poll(timeout_ms=500).values():
                for record in records:
                    document = orjson.loads(record.value)
                    if document.get("request_id") == request_id:
                        return document  # type: ignore[no-any-return]
    finally:
        audit.close()
    return None
