"""Writes scores to Redis in batches: one pipeline per batch, the latest score per customer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from schemas.scores import Score
from streams.metrics import ScorerMetrics

__all__ = ["ScoreWriter"]

logger = logging.getLogger(__name__)

BASE_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 5.0

_Queued = tuple[Callable[[], Score], float | None]


class ScoreWriter:
    """Buffers scores and writes them with one non-transactional pipeline per flush.

    A score is queued as a function that renders it, called at the flush: a customer scored
    twice before a flush is rendered and written once, with the newer score. A failed
    flush keeps its scores (newer ones win) and is retried by the next flush, so an outage
    delays scores but never drops them.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        metrics: ScorerMetrics,
        batch_size: int = 500,
        ttl_seconds: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._metrics = metrics
        self._batch_size = batch_size
        self._ttl_seconds = ttl_seconds
        self._clock = clock
        # customer id -> (renders the score, Kafka timestamp of the event behind the score)
        self._pending: dict[str, _Queued] = {}
        self._lock = asyncio.Lock()
        self._failures = 0
        self._retry_at = 0.0
        #: ``run_id`` of the Redis server last seen: a new one means a restarted server.
        self.server_id: str | None = None

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        """Whether the buffer reached a batch and a write may be tried now."""
        return len(self._pending) >= self._batch_size and time.monotonic() >= self._retry_at

    @property
    def failing(self) -> bool:
        """Whether the latest write failed (Redis is down or refusing writes)."""
        return self._failures > 0

    async def server_restarted(self) -> bool:
        """Whether Redis is now a different server process than when last asked.

        A Redis restarted without persistence comes back empty: every score must be written
        again, not only the ones buffered during the outage. False while Redis is down.
        """
        try:
            info = await self._redis.info("server")
        except Exception as exc:  # RedisError, OSError: the writer's own retries report it
            logger.debug("Cannot ask Redis for its run_id: %s", exc)
            return False
        server_id = str(info.get("run_id", ""))
        if server_id == self.server_id:
            return False
        restarted = self.server_id is not None
        logger.info("Writing scores to the Redis server with run_id %s", server_id)
        self.server_id = server_id
        return restarted

    def put(
        self, customer_id: str, render: Callable[[], Score], produced_at: float | None = None
    ) -> None:
        """Queue a customer's score (replacing one not yet written); ``render`` makes it."""
        self._pending.pop(customer_id, None)
        self._pending[customer_id] = (render, produced_at)
        self._metrics.redis_pending_scores.set(len(self._pending))

    async def flush(self, *, force: bool = False) -> int:
        """Write what is buffered; returns how many scores were written.

        After a failed write, further flushes wait out a growing backoff (up to
        ``MAX_BACKOFF_SECONDS``) unless ``force`` (shutdown, rebalance) asks for one now.
        """
        async with self._lock:
            if not self._pending:
                return 0
            if not force and time.monotonic() < self._retry_at:
                return 0
            batch, self._pending = self._pending, {}
            rendered = self._render(batch)
            started = time.perf_counter()
            try:
                results = await self._write(rendered)
            except asyncio.CancelledError:  # the worker stops: its shutdown flush writes them
                self._requeue(batch)
                raise
            except Exception as exc:  # RedisError, OSError, or anything else: never lose the batch
                self._keep_for_retry(batch, exc)
                return 0
            self._failures = 0
            self._retry_at = 0.0
            self._metrics.redis_write_seconds.observe(time.perf_counter() - started)
            written = self._count_written(rendered, results)
            self._metrics.redis_pending_scores.set(len(self._pending))
            return written

    def _render(self, batch: dict[str, _Queued]) -> dict[str, tuple[dict[str, str], float | None]]:
        """The hash fields of each queued score; one that fails to render is logged and dropped."""
        rendered = {}
        for customer_id, (render, produced_at) in batch.items():
            try:
                rendered[customer_id] = (render().to_redis(), produced_at)
            except Exception:
                self._metrics.score_render_errors.inc()
                logger.exception("Could not render the score of %s", customer_id)
        return rendered

    async def _write(self, batch: dict[str, tuple[dict[str, str], float | None]]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for customer_id, (fields, _) in batch.items():
                key = self._prefix + customer_id
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]  # str is a valid field
                if self._ttl_seconds:
                    pipe.expire(key, self._ttl_seconds)
            return list(await pipe.execute(raise_on_error=False))

    def _requeue(self, batch: dict[str, _Queued]) -> None:
        # Scores that arrived meanwhile are newer: keep them over the batch's.
        batch.update(self._pending)
        self._pending = batch

    def _keep_for_retry(self, batch: dict[str, _Queued], exc: Exception) -> None:
        self._requeue(batch)
        self._failures += 1
        doublings = min(self._failures - 1, 16)  # 2**1024 would not fit in a float
        backoff = min(BASE_BACKOFF_SECONDS * 2**doublings, MAX_BACKOFF_SECONDS)
        self._retry_at = time.monotonic() + backoff
        self._metrics.redis_errors.inc()
        self._metrics.redis_pending_scores.set(len(self._pending))
        log = (
            logger.error if self._failures in (1, 10) or self._failures % 100 == 0 else logger.debug
        )
        log(
            "Redis write of %d scores failed (%d in a row, next try in %.1fs): %s",
            len(batch),
            self._failures,
            backoff,
            exc,
        )

    def _count_written(
        self, batch: dict[str, tuple[dict[str, str], float | None]], results: list[Any]
    ) -> int:
        """Count the scores Redis took; a key it refused (e.g. WRONGTYPE) is logged and dropped."""
        per_key = 2 if self._ttl_seconds else 1
        now = self._clock()
        written = 0
        for index, (customer_id, (_, produced_at)) in enumerate(batch.items()):
            reply = results[index * per_key]
            if isinstance(reply, Exception):
                self._metrics.redis_errors.inc()
                logger.error("Redis refused the score of %s: %s", customer_id, reply)
                continue
            written += 1
            if produced_at is not None:
                self._metrics.event_to_redis_seconds.observe(max(now - produced_at, 0.0))
        self._metrics.redis_scores_written.inc(written)
        return written
