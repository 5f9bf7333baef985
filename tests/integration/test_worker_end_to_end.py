"""A running worker, fed by a plain kafka-python producer that knows only the README."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from schemas import Alert, DeadLetter, EventRejected, Score, UnknownEventType, decode_event
from streams.commands.demo import read_metrics
from streams.commands.simulator import SimulationConfig, generate_messages
from tests.support import handled_events, read_topic, start_worker, wait_until, worker_env

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

T0 = datetime(2025, 2, 1, tzinfo=UTC)
NAME = "e2e"


def _event(customer: str, n: int, kind: str, when: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"{customer}-{n}",
        "customer_id": customer,
        "type": kind,
        "timestamp": when.isoformat(),
        **fields,
    }


def _vip_and_leaver() -> list[dict[str, Any]]:
    """A top spender who then complains, and a customer who cancels."""
    events = [
        _event(
            "vip-1",
            n,
            "purchase",
            T0 + timedelta(days=2 * n),
            item_id=f"sku-{n % 7:04d}",
            amount=2_000.0,
            quantity=1,
        )
        for n in range(30)
    ]
    events.append(
        _event(
            "vip-1",
            99,
            "feedback",
            T0 + timedelta(days=60, hours=1),
            rating=1,
            text="Terrible service. The parcel arrived broken, nobody answers. Very disappointed.",
        )
    )
    events += [
        _event(
            "leaver-1",
            n,
            "purchase",
            T0 + timedelta(days=10 * n),
            item_id="sku-0001",
            amount=30.0,
            quantity=1,
        )
        for n in range(3)
    ]
    events.append(_event("leaver-1", 9, "subscription_cancel", T0 + timedelta(days=31)))
    return events


def _bad_messages() -> list[tuple[bytes | None, bytes, str, str | None]]:
    """(key, value, expected reason, expected field) of hand-made bad messages."""
    when = T0.isoformat()
    good = _event("mismatch-1", 1, "view", T0, item_id="sku-0001")
    return [
        (b"bad-1", b"this is not json", "not_json", None),
        (b"bad-2", b"\xff\xfe\x00\x81 not utf-8", "invalid_utf8", None),
        (b"bad-3", b"[1, 2, 3]", "not_an_object", None),
        (
            b"bad-4",
            orjson.dumps({"event_id": "b4", "type": "view", "timestamp": when, "item_id": "x"}),
            "missing_field",
            "customer_id",
        ),
        (
            b"bad-5",
            orjson.dumps(
                {
                    "event_id": "b5",
                    "customer_id": 5,
                    "type": "view",
                    "timestamp": when,
                    "item_id": "x",
                }
            ),
            "wrong_type",
            "customer_id",
        ),
        (
            b"bad-6",
            orjson.dumps(
                {
                    "event_id": "b6",
                    "customer_id": "bad-6",
                    "type": "purchase",
                    "timestamp": when,
                    "item_id": "x",
                    "amount": -5,
                    "quantity": 1,
                }
            ),
            "invalid_value",
            "amount",
        ),
        (
            b"bad-7",
            orjson.dumps(
                {
                    "event_id": "b7",
                    "customer_id": "bad-7",
                    "type": "view",
                    "timestamp": "2025-03-01T10:00:00",
                    "item_id": "x",
                }
            ),
            "bad_timestamp",
            "timestamp",
        ),
        (b"someone-else", orjson.dumps(good), "key_mismatch", "key"),
        (
            b"bad-8",
            orjson.dumps(
                {
                    "event_id": "b8",
                    "customer_id": "bad-8",
                    "type": "view",
                    "timestamp": "2091-01-01T00:00:00Z",
                    "item_id": "x",
                }
            ),
            "bad_timestamp",
            "timestamp",
        ),
    ]


@dataclass
class Expected:
    """What the stream should leave behind, computed from the input alone."""

    valid_by_customer: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    dead_reasons: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    sent: int = 0


@dataclass
class Run:
    """The finished run: where to look and what to expect."""

    env: dict[str, str]
    port: int
    bootstrap: str
    redis: redis.Redis
    metrics: dict[str, float]
    expected: Expected
    bad: list[tuple[bytes | None, bytes, str, str | None]]


def _messages() -> tuple[list[tuple[bytes | None, bytes]], Expected]:
    simulated = list(
        generate_messages(
            SimulationConfig(customers=120, seed=11, bad_event_ratio=0.03), limit=3000
        )
    )
    crafted = [(e["customer_id"].encode(), orjson.dumps(e)) for e in _vip_and_leaver()]
    unknown = _event("newtype-1", 1, "loyalty_points_earned", T0, points=10)
    crafted.append((b"newtype-1", orjson.dumps(unknown)))
    bad = [(key, value) for key, value, _, _ in _bad_messages()]
    messages = simulated + crafted + bad
    expected = Expected(sent=len(messages))
    not_after = datetime.now(UTC) + timedelta(hours=1)  # the worker's default tolerance
    for key, value in messages:
        try:
            event = decode_event(value, not_after=not_after)
        except EventRejected as exc:
            expected.dead_reasons[exc.reason] += 1
            continue
        except UnknownEventType:
            expected.skipped += 1
            continue
        if key != event.customer_id.encode():
            expected.dead_reasons["key_mismatch"] += 1
            continue
        expected.valid_by_customer[event.customer_id].append(event)
    return messages, expected


@pytest.fixture(scope="module")
def run(broker: Any, redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    data_dir = tmp_path_factory.mktemp("worker")
    env = worker_env(broker, redis_server.url, NAME, data_dir)
    worker = start_worker(env, data_dir / "worker.log")
    try:
        messages, expected = _messages()
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        for key, value in messages:
            producer.send(env["CRM_EVENTS_TOPIC"], key=key, value=value)
        producer.flush()
        producer.close()
        wait_until(
            lambda: handled_events(worker) >= expected.sent,
            240,
            f"the worker to handle {expected.sent} messages",
            worker,
        )
        wait_until(
            lambda: read_metrics(worker.port)["crm_scorer_redis_pending_scores"] == 0,
            30,
            "pending scores to reach Redis",
            worker,
        )
        client = redis.Redis.from_url(redis_server.url, decode_responses=False)
        yield Run(
            env,
            worker.port,
            broker.bootstrap,
            client,
            read_metrics(worker.port),
            expected,
            _bad_messages(),
        )
        client.close()
    finally:
        worker.stop()


def _score(run: Run, customer_id: str) -> Score:
    fields = run.redis.hgetall(run.env["CRM_REDIS_PREFIX"] + customer_id)
    assert fields, f"no score hash for {customer_id}"
    return Score.from_redis(fields)


def test_every_customer_with_a_valid_event_has_a_complete_score(run: Run) -> None:
    customers = run.expected.valid_by_customer
    assert len(customers) > 80
    keys = {k.decode() for k in run.redis.scan_iter(match=run.env["CRM_REDIS_PREFIX"] + "*")}
    assert keys == {run.env["CRM_REDIS_PREFIX"] + c for c in customers}
    for customer_id, events in customers.items():
        score = _score(run, customer_id)
        assert 0.0 <= score.churn_risk <= 1.0
        assert 0.0 <= score.value <= 1.0
        assert score.segment_name
        assert len(score.recommendations) <= 10
        assert score.event_time == max(e.timestamp for e in events)
        assert score.as_of is not None and score.as_of >= score.event_time
        wrote_text = any(e.type in ("feedback", "support_ticket") for e in events)
        assert (score.sentiment is not None) == wrote_text, customer_id
        bought = {e.item_id for e in events if e.type == "purchase"}
        assert not bought & set(score.recommendations), customer_id
        spent = sum(e.amount for e in events if e.type == "purchase")
        refunded = sum(e.amount for e in events if e.type == "return")
        assert score.monetary == pytest.approx(max(spent - refunded, 0.0), abs=0.01)


def test_raw_hash_fields_are_the_documented_strings(run: Run) -> None:
    raw = run.redis.hgetall(run.env["CRM_REDIS_PREFIX"] + "vip-1")
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    for name in (
        "churn_risk",
        "segment",
        "value",
        "recommendations",
        "sentiment",
        "model_version",
        "event_time",
        "as_of",
        "updated_at",
        "p_alive",
        "expected_orders",
        "predicted_clv",
        "next_order_expected",
        "churn_reasons",
        "segment_outlier",
    ):
        assert name in fields, name
    # Absent while the customer's segment is too young to tell (unknown); an unknown score
    # flags no one.
    if "outlier_score" in fields:
        assert 0.0 <= float(fields["outlier_score"]) <= 1.0
    else:
        assert fields["segment_outlier"] == "false"
    assert isinstance(json.loads(fields["recommendations"]), list)
    assert -1.0 <= float(fields["sentiment"]) < 0.0
    datetime.fromisoformat(fields["updated_at"])
    # A big spender who bought every two days, then fell silent while the simulated customers
    # went on for weeks: re-scored as of their partition's watermark, BG/NBD judges them gone.
    as_of = datetime.fromisoformat(fields["as_of"])
    silent_days = (as_of - (T0 + timedelta(days=58))).total_seconds() / 86_400
    assert silent_days > 20, "the premise: the stream went on long after the vip's last order"
    assert 0.0 <= float(fields["p_alive"]) < 0.5
    assert float(fields["predicted_clv"]) >= 0 and float(fields["expected_orders"]) >= 0
    assert datetime.fromisoformat(fields["next_order_expected"]) > datetime.fromisoformat(
        fields["as_of"]
    )
    reasons = json.loads(fields["churn_reasons"])
    assert isinstance(reasons, list) and len(reasons) <= 3
    assert all(set(r) == {"factor", "contribution", "reason"} for r in reasons)


def test_alerts_reach_the_topic_for_the_vip_complaint_and_the_cancellation(run: Run) -> None:
    messages = read_topic(run.bootstrap, run.env["CRM_ALERTS_TOPIC"])
    alerts = [Alert.model_validate_json(m.value) for m in messages]
    for message, alert in zip(messages, alerts, strict=True):
        assert message.key == alert.customer_id.encode()
    by_customer = defaultdict(list)
    for alert in alerts:
        by_customer[alert.customer_id].append(alert)
    complaint = [a for a in by_customer["vip-1"] if a.type == "negative_feedback"]
    assert len(complaint) == 1
    assert complaint[0].details["score"] <= -0.3
    assert complaint[0].details["value"] >= 0.8
    assert complaint[0].event_id == "vip-1-99"
    cancel = [a for a in by_customer["leaver-1"] if a.type == "churn_risk"]
    assert len(cancel) == 1
    assert cancel[0].details["score"] == 1.0
    assert [r["factor"] for r in cancel[0].details["reasons"]] == ["subscription_cancel"]
    assert cancel[0].severity == "critical"
    assert _score(run, "leaver-1").churn_risk == 1.0
    counted = Counter(a.type for a in alerts)
    published = read_metrics(run.port)  # counted on the broker's acknowledgement
    for alert_type in ("churn_risk", "segment_change", "negative_feedback", "unusual_customer"):
        metric = published.get(f"crm_scorer_alerts_total{{type={alert_type}}}", 0.0)
        assert metric == counted[alert_type], alert_type


def test_bad_events_are_dead_lettered_with_reason_and_source(run: Run) -> None:
    topic = run.env["CRM_EVENTS_TOPIC"]
    letters = [
        DeadLetter.model_validate_json(m.value)
        for m in read_topic(run.bootstrap, run.env["CRM_DLQ_TOPIC"])
    ]
    assert Counter(letter.reason for letter in letters) == run.expected.dead_reasons
    by_original = {letter.original(): letter for letter in letters}
    consumer = KafkaConsumer(bootstrap_servers=run.bootstrap, enable_auto_commit=False)
    try:
        for _key, value, reason, field_name in run.bad:
            letter = by_original[value]
            assert letter.reason == reason
            assert letter.field == field_name
            assert letter.source.topic == topic
            partition = TopicPartition(topic, letter.source.partition)
            consumer.assign([partition])
            consumer.seek(partition, letter.source.offset)
            original = next(iter(consumer.poll(timeout_ms=5000, max_records=1).values()))[0]
            assert original.value == value
            assert base64.b64decode(letter.original_base64) == value
    finally:
        consumer.close()


def test_metrics_count_what_happened(run: Run) -> None:
    metrics = run.metrics
    scored = sum(len(events) for events in run.expected.valid_by_customer.values())
    assert (
        sum(
            v
            for k, v in metrics.items()
            if k.startswith("crm_scorer_events_total{") and "outcome=scored" in k
        )
        == scored
    )
    assert metrics["crm_scorer_events_total{outcome=skipped,type=other}"] == run.expected.skipped
    for reason, count in run.expected.dead_reasons.items():
        assert metrics[f"crm_scorer_dead_letters_total{{reason={reason}}}"] == count, reason
    assert metrics["crm_scorer_processing_seconds_count"] == run.expected.sent
    assert metrics["crm_scorer_customers"] == len(run.expected.valid_by_customer)
    assert metrics["crm_scorer_redis_scores_written_total"] >= len(run.expected.valid_by_customer)
    assert metrics["crm_scorer_redis_write_seconds_count"] > 0
    assert metrics["crm_scorer_event_to_redis_seconds_count"] > 0
    assert metrics["crm_scorer_redis_errors_total"] == 0
    assert metrics["crm_scorer_churn_labels_total{label=stayed}"] > 0
    assert metrics["crm_scorer_model_events_learned"] == scored
    # A year of event time: silent customers were re-scored, and every score rendered.
    assert metrics["crm_scorer_rescores_total"] > 0
    assert metrics["crm_scorer_rescores_scheduled"] > 0
    assert metrics["crm_scorer_score_render_errors_total"] == 0
    assert 0.0 <= metrics["crm_scorer_recommendation_hit_rate"] <= 1.0
    # Set when the worker got its partitions, during this test run.
    assert 0 < time.time() - metrics["crm_scorer_last_rebalance_timestamp_seconds"] < 600


def test_lookup_prints_the_score_as_json(run: Run) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams.commands.cli", "lookup", "vip-1"],
        env=run.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["customer_id"] == "vip-1"
    assert printed["orders"] == 30
    assert printed["monetary"] == pytest.approx(60_000.0)
