"""A Kafka producer of CRM events keyed by customer_id, for the CLI and the demo."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError

from streams.kafka_security import kafka_python_options
from streams.settings import Settings
from streams.topics import BrokerUnavailable, ensure_topics

__all__ = ["EventProducer", "check_acknowledged", "customer_key"]

logger = logging.getLogger(__name__)


def customer_key(raw: bytes) -> bytes | None:
    """The message key of an event: its customer_id, or None when it has none.

    >>> customer_key(b'{"customer_id": "c-42", "type": "view"}')
    b'c-42'
    >>> customer_key(b"not json") is None
    True
    """
    try:
        document: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(document, dict) and isinstance(document.get("customer_id"), str):
        return str(document["customer_id"]).encode("utf-8")
    return None


def check_acknowledged(
    settings: Settings, failures: list[BaseException], total: int, what: str
) -> None:
    """Raise :class:`BrokerUnavailable` when any of ``total`` records (``what``) failed."""
    if failures:
        msg = (
            f"{len(failures)} of {total} {what} were not acknowledged by "
            f"CRM_BROKER={settings.broker}: {failures[0]}"
        )
        raise BrokerUnavailable(msg)


class EventProducer:
    """Sends event messages to ``CRM_EVENTS_TOPIC`` (and catalogue records to
    ``CRM_ITEMS_TOPIC``); creates the scorer's topics if missing."""

    def __init__(self, settings: Settings, timeout: float = 30.0) -> None:
        self._settings = settings
        ensure_topics(settings, timeout=timeout)
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=settings.broker_hosts,
                linger_ms=5,
                acks="all",
                batch_size=256 * 1024,
                **kafka_python_options(settings),
            )
        except KafkaError as exc:
            msg = f"cannot reach the Kafka broker at CRM_BROKER={settings.broker}: {exc}"
            raise BrokerUnavailable(msg) from exc

    def send_raw(self, value: bytes, key: bytes | None = None) -> Any:
        """Send one message as is; the key defaults to the event's customer_id.

        Returns kafka-python's future of the delivery (``add_errback`` sees a failed one).
        """
        return self._producer.send(
            self._settings.events_topic,
            value=value,
            key=key if key is not None else customer_key(value),
        )

    def send_to(self, topic: str, key: bytes, value: bytes | None) -> Any:
        """Send one record to ``topic`` (a catalogue item, a tombstone); returns its future."""
        return self._producer.send(topic, value=value, key=key)

    def send_event(self, event: dict[str, Any]) -> Any:
        """Send one event given as a dict; returns the future of its delivery."""
        return self.send_raw(orjson.dumps(event), str(event["customer_id"]).encode("utf-8"))

    def flush(self) -> None:
        """Wait until everything sent is acknowledged."""
        self._producer.flush()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._producer.flush()
        self._producer.close()
