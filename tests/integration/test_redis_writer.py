"""The score writer against a real redis-server: batching, newest-wins, and an outage."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from functools import partial

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from schemas.scores import Score
from streams.commands.local_services import LocalRedis
from streams.metrics import ScorerMetrics
from streams.redis_sink import ScoreWriter

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration


def _score(customer_id: str, risk: float) -> dict[str, str]:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    return Score(
        customer_id=customer_id,
        churn_risk=risk,
        segment=1,
        segment_name="regulars",
        value=0.5,
        monetary=10.0,
        orders=1,
        recommendations=["a"],
        sentiment=None,
        model_version="test",
        event_time=now,
        updated_at=now,
    ).to_redis()


def test_a_batch_is_one_flush_and_the_newest_score_wins(redis_server: LocalRedis) -> None:
    registry = CollectorRegistry()

    async def scenario() -> dict[bytes, bytes]:
        client = Redis.from_url(redis_server.url)
        writer = ScoreWriter(client, prefix="batch:", metrics=ScorerMetrics(registry), batch_size=3)
        writer.put("c1", partial(_score, "c1", 0.1))
        writer.put("c2", partial(_score, "c2", 0.2))
        writer.put("c1", partial(_score, "c1", 0.9))
        assert not writer.full
        assert await writer.flush() == 2
        fields = await client.hgetall("batch:c1")
        await client.aclose()
        return fields

    fields = asyncio.run(scenario())
    assert fields[b"churn_risk"] == b"0.900000"
    assert registry.get_sample_value("crm_scorer_redis_scores_written_total") == 2
    assert registry.get_sample_value("crm_scorer_redis_write_seconds_count") == 1


def test_scores_survive_a_redis_outage() -> None:
    registry = CollectorRegistry()
    server = LocalRedis()
    server.start()
    try:

        async def scenario() -> dict[bytes, bytes]:
            client = Redis.from_url(server.url, socket_timeout=2, socket_connect_timeout=2)
            writer = ScoreWriter(client, prefix="outage:", metrics=ScorerMetrics(registry))
            writer.put("c1", partial(_score, "c1", 0.1))
            assert await writer.flush() == 1
            server.stop()
            writer.put("c1", partial(_score, "c1", 0.7))
            writer.put("c2", partial(_score, "c2", 0.3))
            assert await writer.flush() == 0
            assert len(writer) == 2
            server.start()  # same port, empty: it kept nothing on disk
            assert await writer.flush() == 0  # backing off after the failure
            await asyncio.sleep(0.15)
            assert await writer.flush() == 2
            fields = await client.hgetall("outage:c1")
            assert await client.exists("outage:c2") == 1
            await client.aclose()
            return fields

        fields = asyncio.run(scenario())
    finally:
        server.stop()
    assert fields[b"churn_risk"] == b"0.700000"
    assert registry.get_sample_value("crm_scorer_redis_errors_total") == 1
    assert registry.get_sample_value("crm_scorer_redis_pending_scores") == 0


def test_a_key_redis_refuses_is_dropped_without_blocking_the_others(
    redis_server: LocalRedis,
) -> None:
    registry = CollectorRegistry()

    async def scenario() -> tuple[int, int]:
        client = Redis.from_url(redis_server.url)
        await client.set("refuse:bad", "a string, not a hash")
        writer = ScoreWriter(client, prefix="refuse:", metrics=ScorerMetrics(registry))
        writer.put("bad", partial(_score, "bad", 0.1))
        writer.put("good", partial(_score, "good", 0.2))
        written = await writer.flush()
        exists = await client.exists("refuse:good")
        await client.aclose()
        return written, exists

    assert asyncio.run(scenario()) == (1, 1)
    assert registry.get_sample_value("crm_scorer_redis_errors_total") == 1
    assert registry.get_sample_value("crm_scorer_redis_pending_scores") == 0


def test_a_score_that_fails_to_render_is_dropped_and_counted_without_blocking_the_others(
    redis_server: LocalRedis,
) -> None:
    registry = CollectorRegistry()

    def broken() -> dict[str, str]:
        msg = "a bug while ranking recommendations"
        raise RuntimeError(msg)

    async def scenario() -> tuple[int, int, dict[str, int]]:
        client = Redis.from_url(redis_server.url)
        writer = ScoreWriter(client, prefix="render:", metrics=ScorerMetrics(registry))
        writer.put("before", partial(_score, "before", 0.1))
        writer.put("broken", broken)
        writer.put("after", partial(_score, "after", 0.3))
        written = await writer.flush()
        stored = {c: await client.exists(f"render:{c}") for c in ("before", "broken", "after")}
        await client.aclose()
        return written, len(writer), stored

    written, left, stored = asyncio.run(scenario())
    assert (written, left) == (2, 0)  # dropped, not kept for a retry that would fail again
    assert stored == {"before": 1, "broken": 0, "after": 1}
    assert registry.get_sample_value("crm_scorer_score_render_errors_total") == 1
    assert registry.get_sample_value("crm_scorer_redis_scores_written_total") == 2
    assert registry.get_sample_value("crm_scorer_redis_errors_total") == 0


def test_a_field_a_score_leaves_out_is_gone_from_the_hash(redis_server: LocalRedis) -> None:
    """A customer's outlier score becomes unknown (their segment too young to tell): the next
    write leaves the field out, and the hash must not keep the older score's value."""

    def known() -> dict[str, str]:
        return _score("c1", 0.1) | {"outlier_score": "0.998000"}

    async def scenario() -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
        client = Redis.from_url(redis_server.url)
        writer = ScoreWriter(
            client, prefix="gone:", metrics=ScorerMetrics(CollectorRegistry()), ttl_seconds=600
        )
        writer.put("c1", known)
        assert await writer.flush() == 1
        before = await client.hgetall("gone:c1")
        writer.put("c1", partial(_score, "c1", 0.2))
        assert await writer.flush() == 1
        after = await client.hgetall("gone:c1")
        assert 0 < await client.ttl("gone:c1") <= 600
        await client.aclose()
        return before, after

    before, after = asyncio.run(scenario())
    assert before[b"outlier_score"] == b"0.998000"
    assert b"outlier_score" not in after
    assert after[b"churn_risk"] == b"0.200000"
