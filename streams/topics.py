"""Creates the scorer's topics on the cluster when they are missing."""

from __future__ import annotations

import contextlib
import logging
import time

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.errors import CrmScorerError
from schemas.model_records import MODEL_RECORD_BYTES
from streams.kafka_security import kafka_python_options
from streams.settings import Settings

__all__ = ["MODEL_RECORD_BYTES", "BrokerUnavailable", "ensure_topics", "partition_count"]

logger = logging.getLogger(__name__)

# The models topic is a table: the newest record of each part and the newest manifest are
# what matter, so it is compacted, in segments small enough for the cleaner to reach soon.
_MODELS_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": str(10 * 60 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
    "max.message.bytes": str(MODEL_RECORD_BYTES),
}
_UPDATES_TOPIC_CONFIG = {"max.message.bytes": str(MODEL_RECORD_BYTES)}
# The catalogue is a table too: the newest record of each item is the item.
_ITEMS_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}


class BrokerUnavailable(CrmScorerError):
    """The configured Kafka cluster does not answer."""


def _admin(settings: Settings, timeout: float) -> tuple[KafkaAdminClient, set[str]]:
    """An admin client that answered, and the topics it listed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=settings.broker_hosts,
                client_id=f"{settings.app_id}-admin",
                request_timeout_ms=10_000,
                # kafka-python's own default waits 30 s for a first broker, whatever we allow.
                bootstrap_timeout_ms=max(int((deadline - time.monotonic()) * 1000), 500),
                **kafka_python_options(settings),
            )
            return admin, set(admin.list_topics())
        except (KafkaError, OSError) as exc:
            if time.monotonic() >= deadline:
                msg = (
                    f"cannot reach the Kafka broker at CRM_BROKER={settings.broker} "
                    f"within {timeout:.0f}s: {exc}"
                )
                raise BrokerUnavailable(msg) from exc
            time.sleep(0.5)


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the scorer's topics if missing; returns those created.

    The customer-data topics (:attr:`Settings.topics`) get ``CRM_TOPIC_PARTITIONS``; the
    group model's (:attr:`Settings.model_topics`) one partition each, the models topic
    compacted; the catalogue (``CRM_ITEMS_TOPIC``) ``CRM_TOPIC_PARTITIONS``, compacted. All
    get ``CRM_TOPIC_REPLICATION``. A cluster that forbids topic creation (ACLs) is logged,
    not fatal: the topics may have been made by an operator.
    """
    admin, existing = _admin(settings, timeout)
    created = []
    wanted = [
        *(NewTopic(name, settings.topic_partitions, settings.topic_replication)
          for name in settings.topics.values()),
        NewTopic(settings.model_updates_topic, 1, settings.topic_replication,
                 topic_configs=_UPDATES_TOPIC_CONFIG),
        NewTopic(settings.models_topic, 1, settings.topic_replication,
                 topic_configs=_MODELS_TOPIC_CONFIG),
        NewTopic(settings.items_topic, settings.topic_partitions, settings.topic_replication,
                 topic_configs=_ITEMS_TOPIC_CONFIG),
    ]  # fmt: skip
    try:
        for topic in wanted:
            name = topic.name
            if name in existing:
                continue
            try:
                admin.create_topics([topic])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
            except KafkaError as exc:
                logger.warning("Could not create topic %s: %s", name, exc)
    finally:
        with contextlib.suppress(Exception):
            admin.close()
    if created:
        logger.info("Created topics %s", ", ".join(created))
    return created


def partition_count(settings: Settings, topic: str, timeout: float = 30.0) -> int:
    """How many partitions ``topic`` has on the cluster (the customer table must match it)."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.broker_hosts,
        request_timeout_ms=10_000,
        **kafka_python_options(settings),
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            partitions = consumer.partitions_for_topic(topic)
            if partitions:
                return len(partitions)
            if time.monotonic() >= deadline:
                msg = f"topic {topic} has no partitions on CRM_BROKER={settings.broker}"
                raise BrokerUnavailable(msg)
            time.sleep(0.5)
    finally:
        consumer.close()
