"""Starts the scorer worker: checks Kafka and Redis, creates topics, runs the Faust worker."""

from __future__ import annotations

import gc
import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
from faust.worker import Worker

from schemas.errors import CrmScorerError
from streams.app import ScorerService
from streams.numeric_threads import one_numeric_thread
from streams.settings import Settings
from streams.topics import ensure_topics, partition_count

__all__ = [
    "RedisUnavailable",
    "check_redis",
    "fewer_collections",
    "one_numeric_thread",
    "run_worker",
]

logger = logging.getLogger(__name__)


class RedisUnavailable(CrmScorerError):
    """The configured Redis does not answer."""


def check_redis(settings: Settings, wait: float) -> None:
    """Ping Redis until it answers, or raise naming ``CRM_REDIS_URL`` after ``wait`` seconds."""
    client = redis.Redis.from_url(
        settings.redis_url.get_secret_value(), socket_timeout=3.0, socket_connect_timeout=3.0
    )
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                client.ping()
                return
            except redis.AuthenticationError as exc:
                msg = f"Redis refused the credentials in CRM_REDIS_URL: {exc}"
                raise RedisUnavailable(msg) from exc
            except (redis.RedisError, OSError) as exc:
                if time.monotonic() >= deadline:
                    msg = f"cannot reach Redis at CRM_REDIS_URL within {wait:.0f}s: {exc}"
                    raise RedisUnavailable(msg) from exc
                time.sleep(0.5)
    finally:
        client.close()


def run_worker(settings: Settings, wait: float = 30.0) -> None:
    """Run until SIGINT or SIGTERM; pending scores are flushed to Redis on the way out."""
    check_redis(settings, wait)
    ensure_topics(settings, timeout=wait)
    partitions = partition_count(settings, settings.events_topic, timeout=wait)
    if partitions != settings.topic_partitions:
        logger.warning(
            "%s has %d partitions, not CRM_TOPIC_PARTITIONS=%d: the customer table follows it",
            settings.events_topic,
            partitions,
            settings.topic_partitions,
        )
        settings = settings.model_copy(update={"topic_partitions": partitions})
    service = ScorerService(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    one_numeric_thread()
    fewer_collections()
    faust_worker(service.app, settings.log_level, settings.log_format).execute_from_commandline()


#: Allocations between two young-generation collections (CPython's default: 700), and how many
#: of those before the middle one and of those before a full one (default 10 and 10).
GC_THRESHOLDS = (50_000, 20, 20)


def fewer_collections() -> None:
    """Collect cyclic garbage less often, and never walk what start-up built.

    Scoring makes short-lived objects by the thousand (a score, its outcome, its record), none
    in a cycle, while the customer states stay; at the interpreter's thresholds the young
    collections kept promoting them into full collections that walk every object of every
    state. Re-scoring 1,000 customers at a time with 230,000 state objects alive cost 28.6 us
    each with the defaults, 21.3 with ``gc.freeze()`` after the states were loaded, 18 with
    these thresholds (``benchmarks/rescore.py``, the settings made by hand around it). Here
    the freeze runs before the customer table is recovered, so it covers the modules and the
    models, not the states: for those, the thresholds are what counts.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def faust_worker(app: Any, log_level: str, log_format: str = "text") -> Worker:
    """Faust's worker for ``app``, logging at ``log_level``, without its terminal spinner.

    At warning and above the spinner sets the root logger to DEBUG so that it spins on every
    record: every debug call of Faust and aiokafka (several per record produced) then builds
    a record, about a tenth of a busy worker's CPU. ``log_format="json"`` writes one JSON
    object per record to stdout (:class:`JsonFormatter`).
    """
    config = None
    if log_format == "json":
        level = log_level.upper()
        config = {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"json": {"()": JsonFormatter}},
            "handlers": {
                "default": {
                    "class": "logging.StreamHandler",
                    "formatter": "json",
                    "level": level,
                    "stream": "ext://sys.stdout",
                }
            },
            "root": {"level": level, "handlers": ["default"]},
        }
    # JSON lines only: no banner on stdout.
    worker = Worker(app, loglevel=log_level, logging_config=config, quiet=config is not None)
    worker.spinner = None
    return worker


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp (UTC, ISO 8601), level, logger, message and,
    for a logged exception, its traceback as ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document).decode()
