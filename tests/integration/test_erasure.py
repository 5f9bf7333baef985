"""`crm-scorer forget`: the customer's state, score and user factors go, an audit record
proves it, and a restarted worker (tables rebuilt from their changelogs) has not kept them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from schemas.audit import ErasureRecord
from streams.commands.demo import read_metrics
from streams.commands.local_services import LocalRedis
from tests.support import (
    crm,
    handled_events,
    read_topic,
    send_events,
    start_worker,
    wait_until,
    worker_env,
)

pytestmark = pytest.mark.integration

T0 = 1_735_689_600  # 2025-01-01T00:00:00Z
DAY = 86_400


def _purchases(customer: str, count: int, start: float) -> list[dict[str, Any]]:
    return [
        {"event_id": f"{customer}-{n}-{start}", "customer_id": customer, "type": "purchase",
         "timestamp": start + n * DAY, "item_id": f"sku-{n % 4}", "amount": 20.0, "quantity": 1}
        for n in range(count)
    ]  # fmt: skip


def _settled(worker: Any, events: int) -> bool:
    metrics = read_metrics(worker.port)
    return (
        metrics.get("crm_scorer_processing_seconds_count", 0) >= events
        and metrics.get("crm_scorer_redis_pending_scores", 1) == 0
    )


def test_forget_erases_the_customer_everywhere_and_records_it(
    broker: Any, redis_server: Any, tmp_path: Path
) -> None:
    env = worker_env(broker, redis_server.url, "erase", tmp_path)
    env["CRM_TOPIC_PARTITIONS"] = "1"  # one watermark: later events would re-score ann
    env["CRM_PRODUCER_BATCH_BYTES"] = "1"  # Tansu 0.6 end offsets: see test_restart.py
    prefix = env["CRM_REDIS_PREFIX"]
    client = redis.Redis.from_url(redis_server.url)
    events = [*_purchases("ann", 5, T0), *_purchases("bob", 5, T0), *_purchases("cy", 2, T0)]
    send_events(broker.bootstrap, env["CRM_EVENTS_TOPIC"], events)

    first = start_worker(env, tmp_path / "first.log")
    try:
        wait_until(lambda: _settled(first, len(events)), 120, "the first scores", first)
        assert client.exists(prefix + "ann")
        forgotten = crm("forget", "ann", "--requested-by", "dpo@example.com", "--wait", "90",
                        env=env, timeout=150)  # fmt: skip
        assert forgotten.returncode == 0, forgotten.stderr
        wait_until(lambda: _settled(first, len(events) + 1), 30, "the request", first)
        after_forget = read_metrics(first.port)
    finally:
        first.stop()

    record = ErasureRecord.model_validate_json(forgotten.stdout)
    assert (record.customer_id, record.requested_by) == ("ann", "dpo@example.com")
    assert record.removed == {
        "state": True,
        "pending_labels": record.removed["pending_labels"],
        "value_labels": record.removed["value_labels"],
        "rescore_schedule": True,
        "recommender_user_factors": True,
        "redis_score": True,
    }
    audit = [orjson.loads(r.value) for r in read_topic(broker.bootstrap, env["CRM_AUDIT_TOPIC"])]
    assert [a["request_id"] for a in audit] == [record.request_id]
    assert not client.exists(prefix + "ann") and client.exists(prefix + "bob")
    assert after_forget["crm_scorer_customers"] == 2
    assert after_forget["crm_scorer_events_total{outcome=erased,type=erasure_request}"] == 1

    # A restarted worker rebuilds the table from its changelog: ann is not in it, and event
    # time moving far past her horizon re-scores bob and cy only.
    later = _purchases("bob", 1, T0 + 200 * DAY)
    second = start_worker(env, tmp_path / "second.log")
    try:
        send_events(broker.bootstrap, env["CRM_EVENTS_TOPIC"], later)
        wait_until(lambda: handled_events(second) >= 1, 120, "the later event", second)
        wait_until(lambda: _settled(second, 1), 30, "its scores", second)
        customers = read_metrics(second.port)["crm_scorer_customers"]
    finally:
        second.stop()
        client.close()
    assert customers == 2
    assert not redis.Redis.from_url(redis_server.url).exists(prefix + "ann")
    assert "Scheduled 2 customers' re-scores" in (tmp_path / "second.log").read_text()


def test_an_erasure_redis_refuses_waits_and_is_carried_out_when_redis_takes_writes(
    broker: Any, tmp_path: Path
) -> None:
    server = LocalRedis()
    server.start()
    env = worker_env(broker, server.url, "erase-outage", tmp_path)
    prefix = env["CRM_REDIS_PREFIX"]
    admin = redis.Redis.from_url(server.url)
    events = [*_purchases("ann", 3, T0), *_purchases("bob", 3, T0)]
    send_events(broker.bootstrap, env["CRM_EVENTS_TOPIC"], events)
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        wait_until(lambda: _settled(worker, len(events)), 120, "the scores", worker)
        admin.config_set("min-replicas-to-write", 1)  # every write refused, data kept
        refused = crm("forget", "ann", "--requested-by", "dpo", "--wait", "8", env=env)
        assert refused.returncode == 1  # no audit record: not carried out yet
        assert "no audit record" in refused.stderr
        assert admin.exists(prefix + "ann")

        admin.config_set("min-replicas-to-write", 0)  # no new event: the Redis watch retries
        wait_until(lambda: not admin.exists(prefix + "ann"), 30, "the erasure", worker)
        audit = read_topic(broker.bootstrap, env["CRM_AUDIT_TOPIC"])
    finally:
        worker.stop()
        admin.close()
        server.stop()
    records = [ErasureRecord.model_validate_json(r.value) for r in audit]
    assert [(r.customer_id, r.removed["redis_score"]) for r in records] == [("ann", True)]
    assert "Erasure erasure-" in worker.log_path.read_text()  # it said what it waits for
