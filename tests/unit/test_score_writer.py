"""The score writer's retry behaviour against a Redis that always fails, and its packing."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from schemas.scores import Score
from streams.metrics import ScorerMetrics
from streams.redis_sink import MAX_BACKOFF_SECONDS, ScoreWriter, pack_command, pack_hset


class _DownPool:
    async def get_connection(self) -> Any:
        raise RedisConnectionError("Redis is down")


class _DownRedis:
    connection_pool = _DownPool()


def _score() -> dict[str, str]:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    return Score(
        customer_id="c1",
        churn_risk=0.5,
        segment=0,
        segment_name="regulars",
        value=0.5,
        monetary=1.0,
        orders=1,
        recommendations=[],
        sentiment=None,
        model_version="test",
        event_time=now,
        updated_at=now,
    ).to_redis()


def test_a_long_outage_keeps_the_scores_and_caps_the_backoff() -> None:
    registry = CollectorRegistry()
    writer = ScoreWriter(
        _DownRedis(),
        prefix="p:",
        metrics=ScorerMetrics(registry),  # type: ignore[arg-type]
        batch_size=1,
    )
    writer.put("c1", _score)

    async def outage() -> None:
        for _ in range(1_100):  # past 2**1024, which no float holds
            assert await writer.flush(force=True) == 0

    asyncio.run(outage())
    assert len(writer) == 1
    assert not writer.full  # backing off: the agent does not wait on Redis per event
    assert registry.get_sample_value("crm_scorer_redis_errors_total") == 1_100
    assert writer._retry_at - time.monotonic() <= MAX_BACKOFF_SECONDS


@given(
    key=st.text(min_size=1),
    fields=st.dictionaries(st.text(min_size=1), st.text(), min_size=1, max_size=20),
)
def test_hset_is_packed_byte_for_byte_as_redis_py_packs_it(key: str, fields: dict) -> None:
    args = ["HSET", key]
    for name, value in fields.items():
        args += [name, value]
    expected = b"".join(Connection().pack_command(*args))

    assert pack_hset(key.encode(), fields) == expected
    assert pack_command([arg.encode() for arg in args]) == expected
