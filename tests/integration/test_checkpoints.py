"""A restarted worker continues from its model checkpoint instead of from fresh models."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaProducer

from online_models.activity import DAY, Activity
from online_models.checkpoint import dump_checkpoint, load_checkpoint
from online_models.scorer import CustomerScorer
from schemas.scores import Score
from streams.checkpoints import CheckpointStore
from streams.commands.demo import read_metrics
from streams.settings import load_settings
from tests.support import crm, handled_events, start_worker, wait_until, worker_env

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

T0 = 1_735_689_600  # 2025-01-01T00:00:00Z


def _history(customers: int, days: int) -> list[dict[str, Any]]:
    """Weekly-ish buyers, some of whom go silent: the churn model gets labels of both kinds."""
    rng = random.Random(5)
    events = []
    for n in range(customers):
        stops = rng.randrange(10, days)
        day = rng.uniform(0, 5)
        while day < stops:
            events.append(
                {
                    "event_id": f"c{n}-{day:.3f}",
                    "customer_id": f"c{n}",
                    "type": "purchase",
                    "timestamp": T0 + day * DAY,
                    "item_id": f"sku-{rng.randrange(40)}",
                    "amount": round(rng.uniform(5, 80), 2),
                    "quantity": 1,
                }
            )
            day += rng.uniform(1, 9)
    return sorted(events, key=lambda e: e["timestamp"])


def _send(producer: KafkaProducer, topic: str, events: list[dict[str, Any]]) -> None:
    for event in events:
        producer.send(topic, key=event["customer_id"].encode(), value=orjson.dumps(event))
    producer.flush()


def test_a_restarted_worker_scores_with_the_models_it_checkpointed(
    broker: Any, redis_server: Any, tmp_path: Path
) -> None:
    env = worker_env(broker, redis_server.url, "checkpoint", tmp_path)
    env.update(
        CRM_TOPIC_PARTITIONS="1",
        CRM_PRODUCER_BATCH_BYTES="1",  # Tansu 0.6 end offsets: see test_restart.py
        CRM_CHURN_HORIZON_DAYS="20",  # labels within the short history
        CRM_CHECKPOINT_EVERY_EVENTS="200",
    )
    topic = env["CRM_EVENTS_TOPIC"]
    history = _history(customers=60, days=120)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    store = CheckpointStore(tmp_path / "checkpoints")

    first = start_worker(env, tmp_path / "first.log")
    try:
        _send(producer, topic, history)
        wait_until(lambda: handled_events(first) >= len(history), 180, "the history", first)
        # A periodic checkpoint, taken after the batch that passed 200 events, written aside.
        wait_until(
            lambda: read_metrics(first.port)["crm_scorer_checkpoints_total"] >= 1,
            60,
            "a periodic checkpoint",
            first,
        )
    finally:
        first.stop()  # SIGTERM: a last checkpoint
    assert "Checkpointed the models" in first.log_path.read_text()
    _, saved = store.load_latest()
    assert saved.positions == {0: len(history) - 1}
    assert saved.events_learned == len(history)
    learned = saved.models["churn"]
    assert learned.labels_learned > 50

    # What the first worker would have scored a new customer with, at the last event time.
    newcomer = {
        "event_id": "newcomer-1",
        "customer_id": "newcomer",
        "type": "purchase",
        "timestamp": history[-1]["timestamp"],
        "item_id": "sku-1",
        "amount": 42.0,
        "quantity": 1,
    }
    config = load_settings(churn_horizon_days=20).scorer_config()
    expected_scorer = CustomerScorer(config)
    saved.restore_into(expected_scorer)
    activity = Activity("purchase", newcomer["timestamp"], item_id="sku-1", amount=42.0, quantity=1)
    expected = expected_scorer.score("newcomer", None, activity, 0).score

    second = start_worker(env, tmp_path / "second.log")
    try:
        wait_until(lambda: "Restored the models" in second.log_path.read_text(), 60, "restore")
        _send(producer, topic, [newcomer])
        client = redis.Redis.from_url(redis_server.url)
        key = env["CRM_REDIS_PREFIX"] + "newcomer"
        wait_until(lambda: client.exists(key), 120, "the newcomer's score", second)
    finally:
        second.stop()
    producer.close()

    served = Score.from_redis(client.hgetall(key)).to_redis()
    assert served["churn_risk"] == f"{expected.churn_risk:.6f}"
    assert served["value"] == f"{expected.value:.6f}"
    assert (served["segment"], served["segment_name"]) == (
        str(expected.segment),
        expected.segment_name,
    )
    assert served["model_version"] == expected.model_version
    _, after = store.load_latest()
    assert after.events_learned == saved.events_learned + 1
    # No label came due after the restart: the churn weights are the checkpoint's, unchanged.
    assert after.models["churn"].weights() == learned.weights()
    assert after.positions == {0: len(history)}


def test_a_checkpoint_of_another_format_stops_start_up_with_a_clear_message(
    tmp_path: Path,
) -> None:
    scorer_bytes = _incompatible_checkpoint()
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    (directory / "models-000000000000001.ckpt").write_bytes(scorer_bytes)

    result = crm(
        "worker",
        "--wait",
        "1",
        env={"CRM_CHECKPOINT_DIR": str(directory), "CRM_BROKER": "kafka://127.0.0.1:1"},
    )

    assert result.returncode != 0
    assert "models-000000000000001.ckpt" in result.stderr
    assert "format 0" in result.stderr
    assert "Move it out of CRM_CHECKPOINT_DIR" in result.stderr


def _incompatible_checkpoint() -> bytes:
    raw = dump_checkpoint(CustomerScorer(), {}, created_at=0.0)
    header, payload = raw.split(b"\n", 1)
    old = orjson.loads(header) | {"format": 0, "scorer_version": "0.0.1"}
    assert load_checkpoint(raw).format == 1
    return orjson.dumps(old) + b"\n" + payload
