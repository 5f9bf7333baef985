"""Writes scores to Redis in batches: one pipeline per batch, the latest score per customer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from schemas.score_hash import OPTIONAL_FIELDS
from streams.metrics import ScorerMetrics

__all__ = ["RenderMany", "ScoreWriter", "pack_command", "pack_hset"]

logger = logging.getLogger(__name__)

BASE_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 5.0

# A queued score: what renders it, and the Kafka timestamp of the event behind it.
_Queued = tuple[Any, float | None]
#: Renders a flush's queued scores at once, in order, into their hash fields (see
#: :class:`ScoreWriter`).
RenderMany = Callable[[Sequence[Any]], list[dict[str, str]]]


def _call_each(pending: Sequence[Any]) -> list[dict[str, str]]:
    return [render() for render in pending]


class ScoreWriter:
    """Buffers scores and writes them with one non-transactional pipeline per flush.

    A score is queued unrendered and rendered at the flush: a customer scored twice before a
    flush is rendered and written once, with the newer score, and a flush's scores are
    rendered together by ``render_many`` (the worker ranks their recommendations in one
    go) into the hash's fields. Without ``render_many``, what is queued is a function that
    returns them. A failed flush keeps its scores (newer ones win) and is retried by the next
    flush, so an outage delays scores but never drops them.
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
        render_many: RenderMany = _call_each,
    ) -> None:
        self._redis = redis
        self._render_many = render_many
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
        metrics.redis_pending_scores.set_function(self.__len__)

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

    def put(self, customer_id: str, unrendered: Any, produced_at: float | None = None) -> None:
        """Queue a customer's score (replacing one not yet written), as ``render_many``
        takes it."""
        self._pending.pop(customer_id, None)
        self._pending[customer_id] = (unrendered, produced_at)

    async def delete(self, customer_id: str) -> bool:
        """Delete a customer's score hash now, dropping a queued score of theirs first;
        True if Redis had one. Raises what Redis raises: an erasure is retried, never lost.

        Under the flush lock: no write of an older score can land after the delete.
        """
        async with self._lock:
            self._pending.pop(customer_id, None)
            return bool(await self._redis.delete(self._prefix + customer_id))

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
            return written

    def _render(self, batch: dict[str, _Queued]) -> dict[str, tuple[dict[str, str], float | None]]:
        """The hash fields of each queued score; one that fails to render is logged and dropped.

        The batch is rendered at once; if that fails, each score on its own, to find which.
        """
        queued = list(batch.values())
        try:
            scores = self._render_many([unrendered for unrendered, _ in queued])
            return {
                customer_id: (fields, produced_at)
                for customer_id, fields, (_, produced_at) in zip(batch, scores, queued, strict=True)
            }
        except Exception:
            logger.debug("Rendering %d scores together failed: one at a time", len(batch))
        rendered = {}
        for customer_id, (unrendered, produced_at) in batch.items():
            try:
                (fields,) = self._render_many([unrendered])
                rendered[customer_id] = (fields, produced_at)
            except Exception:
                self._metrics.score_render_errors.inc()
                logger.exception("Could not render the score of %s", customer_id)
        return rendered

    async def _write(self, batch: dict[str, tuple[dict[str, str], float | None]]) -> list[Any]:
        """One pipeline: the batch's commands packed into one buffer, sent in one write, and
        each reply read back; returns each score's ``HSET`` reply (a refused command's reply
        is its ``ResponseError``). A field the score leaves out (unknown now, such as an
        ``outlier_score`` whose segment is too young) is deleted in the same pipeline, so the
        hash never keeps an older score's value of it.

        redis-py's own pipeline packs every argument in Python, about 100 µs per 13-field
        HSET on the benchmark machine: more than scoring the event behind it.
        """
        ttl = str(self._ttl_seconds).encode() if self._ttl_seconds else None
        commands: list[bytes] = []
        scores = []
        for customer_id, (fields, _) in batch.items():
            key = (self._prefix + customer_id).encode()
            scores.append(len(commands))
            commands.append(pack_hset(key, fields))
            absent = [name.encode() for name in OPTIONAL_FIELDS if name not in fields]
            if absent:
                commands.append(pack_command((b"HDEL", key, *absent)))
            if ttl is not None:
                commands.append(pack_command((b"EXPIRE", key, ttl)))
        pool = self._redis.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(b"".join(commands))
            replies = [await _reply(connection) for _ in commands]
            return [replies[index] for index in scores]
        except BaseException:
            # Replies may still be unread: the connection is in no state to be reused.
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)

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
        now = self._clock()
        written = 0
        for index, (customer_id, (_, produced_at)) in enumerate(batch.items()):
            reply = results[index]
            if isinstance(reply, Exception):
                self._metrics.redis_errors.inc()
                logger.error("Redis refused the score of %s: %s", customer_id, reply)
                continue
            written += 1
            if produced_at is not None:
                self._metrics.event_to_redis_seconds.observe(max(now - produced_at, 0.0))
        self._metrics.redis_scores_written.inc(written)
        return written


async def _reply(connection: Any) -> Any:
    try:
        return await connection.read_response()
    except ResponseError as exc:  # this command was refused; the connection reads on
        return exc


def pack_command(args: Sequence[bytes]) -> bytes:
    """One command in the Redis protocol (RESP2 array of bulk strings).

    >>> pack_command((b"EXPIRE", b"k", b"60"))
    b'*3\\r\\n$6\\r\\nEXPIRE\\r\\n$1\\r\\nk\\r\\n$2\\r\\n60\\r\\n'
    """
    parts = [b"*%d\r\n" % len(args)]
    parts.extend(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args)
    return b"".join(parts)


def pack_hset(key: bytes, fields: dict[str, str]) -> bytes:
    """``HSET key field value ...`` in the Redis protocol.

    >>> pack_hset(b"k", {"a": "1"}) == pack_command((b"HSET", b"k", b"a", b"1"))
    True
    """
    parts = [b"*%d\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n" % (2 + 2 * len(fields), len(key), key)]
    for name, value in fields.items():
        name_bytes, value_bytes = name.encode(), value.encode()
        parts.append(
            b"$%d\r\n%s\r\n$%d\r\n%s\r\n"
            % (len(name_bytes), name_bytes, len(value_bytes), value_bytes)
        )
    return b"".join(parts)
