"""Workers of one consumer group learn one model, kept in Kafka (the real broker).

- two workers; one killed with SIGKILL and replaced by a worker with an empty data directory:
  every worker soon scores with the same version, and new customers making the same first
  purchase get the same churn risk, segment and value whichever worker owns them;
- the merging worker killed with SIGKILL mid-stream: the other takes the role over within the
  session timeout, versions keep increasing, and every delta the broker acknowledged is in
  the group's model;
- a hostile models topic (garbage, another format, unsigned records while a key is set, a
  pickle, records of other shapes): each refused and counted, and the worker scores on.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from online_models.churn.model import ChurnShare
from online_models.group.parts import EASE, GroupPart
from schemas.model_records import ManifestHeader, PartRef
from schemas.scores import Score
from streams.commands.backtest import partition_of
from streams.commands.demo import WorkerProcess, read_metrics
from streams.model_codec import (
    MANIFEST_KEY,
    decode_delta,
    decode_manifest,
    decode_part,
    encode_manifest,
    encode_part,
    model_shapes,
)
from streams.settings import load_settings
from tests.support import handled_events, send_events, start_worker, wait_until, worker_env

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

DAY = 86_400.0
T0 = 1_735_689_600.0
PARTITIONS = 4
SYNC_SECONDS = 2.0
SESSION_TIMEOUT = 10.0


@dataclass
class Group:
    """Workers sharing one app id, topics and Redis prefix."""

    env: dict[str, str]
    bootstrap: str
    tmp: Path
    workers: list[WorkerProcess]

    def start(self, name: str) -> WorkerProcess:
        data_dir = self.tmp / name  # a new, empty data directory
        data_dir.mkdir()
        env = {**self.env, "CRM_DATA_DIR": str(data_dir)}
        env["CRM_WEB_PORT"] = str(_free_port())
        worker = start_worker(env, data_dir / "worker.log")
        self.workers.append(worker)
        return worker

    def metric(self, worker: WorkerProcess, name: str) -> float:
        return read_metrics(worker.port).get(name, 0.0)


def _free_port() -> int:
    from streams.commands.local_services import free_port

    return free_port()


@pytest.fixture
def group(broker: Any, redis_server: Any, tmp_path: Path, request: Any) -> Iterator[Group]:
    name = f"group-{request.node.name[:20].replace('_', '-')}"
    env = worker_env(broker, redis_server.url, name, tmp_path)
    env.update(
        CRM_TOPIC_PARTITIONS=str(PARTITIONS),
        CRM_MODEL_SYNC_SECONDS=str(SYNC_SECONDS),
        CRM_SESSION_TIMEOUT=str(SESSION_TIMEOUT),
        CRM_REBALANCE_TIMEOUT=str(SESSION_TIMEOUT),
        # Tansu 0.6 end offsets: a standby taking over a changelog needs one record a batch.
        CRM_PRODUCER_BATCH_BYTES="1",
        CRM_CHURN_HORIZON_DAYS="20",  # labels within a short history
    )
    running = Group(env, broker.bootstrap, tmp_path, [])
    yield running
    for worker in running.workers:
        worker.stop()


def _history(customers: int, days: int, prefix: str = "c") -> list[dict[str, Any]]:
    """Regular buyers, some of whom fall silent: labels of both kinds, every model busy."""
    import random

    rng = random.Random(11)
    events = []
    for n in range(customers):
        stop = rng.uniform(15, days)
        day = rng.uniform(0, 4)
        while day < stop:
            item, amount = f"sku-{rng.randrange(30)}", round(rng.uniform(5, 90), 2)
            customer = f"{prefix}{n}"
            events.append(
                _purchase(customer, f"{customer}-{day:.4f}", T0 + day * DAY, item, amount)
            )
            day += rng.uniform(1, 8)
    return sorted(events, key=lambda event: event["timestamp"])


def _purchase(customer: str, event_id: str, when: float, item: str, amount: float) -> dict:
    return {"event_id": event_id, "customer_id": customer, "type": "purchase",
            "timestamp": when, "item_id": item, "amount": amount, "quantity": 1}  # fmt: skip


def _handled(group: Group) -> int:
    return sum(handled_events(w) for w in group.workers if w.alive())


def _versions(workers: list[WorkerProcess]) -> list[float]:
    return [read_metrics(w.port)["crm_scorer_model_version"] for w in workers]


def _sync_state(worker: WorkerProcess) -> dict[str, float]:
    """A worker's side of the group model, for a failure message: pending deltas, whether it
    merges, and what it sent, merged and published (which worker stalls, and where)."""
    names = ("pending_deltas", "merger", "deltas_sent_total", "deltas_merged_total",
             "versions_published_total", "records_refused_total")  # fmt: skip
    metrics = read_metrics(worker.port)
    return {name: metrics.get(f"crm_scorer_model_{name}", 0.0) for name in names}


def _ready(worker: WorkerProcess) -> bool:
    return worker.ready()


def test_a_replaced_worker_scores_new_customers_as_the_group_does(group: Group) -> None:
    first, second = group.start("first"), group.start("second")
    wait_until(lambda: _ready(first) and _ready(second), 60, "both workers ready")
    history = _history(customers=80, days=90)
    send_events(group.bootstrap, group.env["CRM_EVENTS_TOPIC"], history)
    wait_until(lambda: _handled(group) >= len(history), 180, "the history", first)
    wait_until(lambda: min(_versions([first, second])) > 0, 60, "a first group version", first)

    second.kill()  # SIGKILL: no last delta, no goodbye to the group
    replacement = group.start("replacement")  # an empty data directory
    live = [first, replacement]
    wait_until(lambda: _ready(first) and _ready(replacement), 90, "the group after the kill")
    # Every worker on one version within a few sync intervals of the replacement's start.
    started = time.monotonic()
    wait_until(lambda: len(set(_versions(live))) == 1, 10 * SYNC_SECONDS, "one version", first)
    converged = time.monotonic() - started
    logger.info("Workers on one version %.1fs after the replacement was ready", converged)
    # Then quiet: the events the killed worker left unacknowledged are redelivered (those its
    # lost changelog records did not cover are applied again, and learned), and that learning
    # goes to the group too. Wait until nothing moves for a few syncs.
    quiet: list[Any] = []

    def settled() -> bool:
        now = ([handled_events(w) for w in live], _versions(live))
        quiet.append(now)
        recent = quiet[-int(3 * SYNC_SECONDS / 0.2) :]
        # On a busy machine a sync can outlast the quiet spell: every delta merged too.
        merged = all(group.metric(w, "crm_scorer_model_pending_deltas") == 0 for w in live)
        return merged and len(recent) * 0.2 >= 3 * SYNC_SECONDS and all(r == now for r in recent)

    # A readiness wait, not a sleep: it returns at the first quiet spell. Under the parallel
    # suite on 2 cores the redelivered events and their syncs took over 90 s once.
    wait_until(
        lambda: settled() and len(set(_versions(live))) == 1,
        240,
        "quiet",
        first,
        state=lambda: (
            f"last sample (handled events, versions): {quiet[-1] if quiet else None}; "
            f"model sync by worker: {[_sync_state(w) for w in live]}"
        ),
    )
    version = _versions(live)[0]

    # One new customer on each worker, the same first purchase, at no later event time than
    # any partition has seen: each is its worker's first event since, scored by the group's
    # version and nothing learned after it.
    last_seen: dict[int, float] = {}
    for event in history:
        partition = partition_of(event["customer_id"], PARTITIONS)
        last_seen[partition] = max(last_seen.get(partition, 0.0), event["timestamp"])
    when = min(last_seen.values())
    wait_until(
        lambda: all(_partitions(w) for w in live), 30, "each worker's partitions", replacement
    )
    owned = [_partitions(w) for w in live]
    newcomers = []
    n = 0
    for partitions in owned:
        while partition_of(f"newcomer-{n}", PARTITIONS) not in partitions:
            n += 1
        newcomers.append(f"newcomer-{n}")
        n += 1
    before = [handled_events(w) for w in live]
    send_events(
        group.bootstrap,
        group.env["CRM_EVENTS_TOPIC"],
        [_purchase(c, f"{c}-1", when, "sku-3", 42.0) for c in newcomers],
    )
    client = redis.Redis.from_url(group.env["CRM_REDIS_URL"])
    prefix = group.env["CRM_REDIS_PREFIX"]
    wait_until(
        lambda: all(client.exists(prefix + c) for c in newcomers),
        60,
        "the newcomers' scores",
        first,
    )
    scores = [Score.from_redis(client.hgetall(prefix + c)) for c in newcomers]
    client.close()
    scored = [handled_events(w) - b for w, b in zip(live, before, strict=True)]
    assert scored == [1, 1], f"newcomers by worker: {scored}"
    assert {s.model_version for s in scores} == {f"{scores[0].model_version}"}
    assert scores[0].model_version.endswith(f"+v{int(version)}")
    # The same model version, give or take what a worker learned since its last sync (the
    # killed worker's redelivered events, applied again by their new owner, among others).
    # Under a parallel suite's load the gap reached 2.3e-3; a worker scoring with a model of
    # its own (not the group's) misses by tens of times that.
    assert max(s.churn_risk for s in scores) - min(s.churn_risk for s in scores) <= 5e-3
    assert max(s.value for s in scores) - min(s.value for s in scores) <= 0.01
    assert {(s.segment, s.segment_name) for s in scores} == {
        (scores[0].segment, scores[0].segment_name)
    }
    assert converged <= SYNC_SECONDS * 5


def _partitions(worker: WorkerProcess) -> set[int]:
    """The partitions a worker owns (those it reports a consumer lag for)."""
    prefix = "crm_scorer_consumer_lag{partition="
    return {int(k[len(prefix) : -1]) for k in read_metrics(worker.port) if k.startswith(prefix)}


def test_the_merger_dies_and_another_worker_merges_without_losing_a_delta(group: Group) -> None:
    first, second = group.start("first"), group.start("second")
    wait_until(lambda: _ready(first) and _ready(second), 60, "both workers ready")
    topic = group.env["CRM_EVENTS_TOPIC"]
    history = _history(customers=120, days=120)
    stop = threading.Event()

    def stream() -> None:  # about 20 s of events while the merger dies
        producer = KafkaProducer(bootstrap_servers=group.bootstrap)
        for start in range(0, len(history), 100):
            if stop.is_set():
                break
            for event in history[start : start + 100]:
                producer.send(topic, key=event["customer_id"].encode(), value=orjson.dumps(event))
            producer.flush()
            time.sleep(0.5)
        producer.close()

    streamer = threading.Thread(target=stream)
    streamer.start()
    try:
        wait_until(
            lambda: sum(group.metric(w, "crm_scorer_model_merger") for w in (first, second)) == 1,
            60,
            "one merger",
        )
        merger, survivor = (
            (first, second) if group.metric(first, "crm_scorer_model_merger") else (second, first)
        )
        wait_until(lambda: _versions([survivor])[0] >= 3, 60, "a few versions", survivor)
        before = _versions([survivor])[0]
        merger.kill()
        killed = time.monotonic()
        wait_until(
            lambda: group.metric(survivor, "crm_scorer_model_merger") == 1,
            SESSION_TIMEOUT * 3,
            "the survivor to take the merger's role",
            survivor,
        )
        takeover = time.monotonic() - killed
        wait_until(lambda: _versions([survivor])[0] > before, 30, "a newer version", survivor)
    finally:
        streamer.join()
    wait_until(lambda: handled_events(survivor) >= 1, 10, "events", survivor)
    wait_until(
        lambda: group.metric(survivor, "crm_scorer_model_pending_deltas") == 0,
        60,
        "the survivor's deltas merged",
        survivor,
    )
    time.sleep(SYNC_SECONDS * 2)  # a last sync: whatever was in flight is published
    assert takeover <= SESSION_TIMEOUT * 2 + SYNC_SECONDS, f"takeover took {takeover:.1f}s"

    config = load_settings(**_settings_of(group.env)).scorer_config()
    key = None
    updates_topic = group.env["CRM_MODEL_UPDATES_TOPIC"]
    committed = _committed(group.bootstrap, group.env["CRM_APP_ID"], updates_topic)
    records_of = [(m.offset, decode_delta(m.value, config, key=key))
                  for m in _read_all(group.bootstrap, updates_topic)]  # fmt: skip
    # EASE's counts are in the model at the merger's next refit (once a day of event time);
    # until then they stay unacknowledged, never committed past, for whoever merges next to
    # read again: those at or after the committed offset are not in the model yet.
    deltas = [d for offset, d in records_of if d.key != EASE or offset < committed]
    assert committed <= len(records_of)
    assert any(d.key == EASE for d in deltas), "no EASE delta acknowledged: nothing refitted"
    records = _read_all(group.bootstrap, group.env["CRM_MODELS_TOPIC"])
    manifests = [
        decode_manifest(m.value, config, key=key) for m in records if m.key == MANIFEST_KEY
    ]
    versions = [m.version for m in manifests]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    newest = manifests[-1]
    parts = {
        p.key: p
        for p in (decode_part(m.value, config, key=key) for m in records if m.key != MANIFEST_KEY)
    }
    assert len({d.worker for d in deltas}) == 2
    lost = [
        (d.worker, d.key, d.seq) for d in deltas if parts[d.key].merged.get(d.worker, 0) < d.seq
    ]
    assert not lost, f"acknowledged deltas not in the group model: {lost[:5]}"
    assert set(newest.parts) == set(parts)


def _settings_of(env: dict[str, str]) -> dict[str, Any]:
    return {
        "churn_horizon_days": float(env["CRM_CHURN_HORIZON_DAYS"]),
        "topic_partitions": int(env["CRM_TOPIC_PARTITIONS"]),
    }


def _committed(bootstrap: str, group_id: str, topic: str) -> int:
    """The consumer group's committed offset on partition 0 of ``topic`` (0 if none)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id,
                             enable_auto_commit=False)  # fmt: skip
    try:
        return consumer.committed(TopicPartition(topic, 0)) or 0
    finally:
        consumer.close()


def _read_all(bootstrap: str, topic: str) -> list[Any]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    consumer.assign([TopicPartition(topic, 0)])
    try:
        return list(consumer)
    finally:
        consumer.close()


def test_a_hostile_models_topic_is_refused_and_counted(group: Group) -> None:
    key = "group-model-key-for-the-test"
    group.env["CRM_CHECKPOINT_KEY"] = key
    worker = group.start("only")
    wait_until(lambda: _ready(worker), 60, "the worker ready")
    events = _history(customers=30, days=40)
    send_events(group.bootstrap, group.env["CRM_EVENTS_TOPIC"], events)
    wait_until(lambda: _versions([worker])[0] > 0, 60, "a first version", worker)

    config = load_settings(**_settings_of(group.env)).scorer_config()
    signed = key.encode()
    good = GroupPart("churn", ChurnShare.zero(), 999, {})
    format_two = bytearray(encode_part(good, key=None))
    format_two[4] = 2
    wrong_shapes = ManifestHeader(
        version=1000,
        parts={"churn": PartRef(version=999, offset=0)},
        shapes={**model_shapes(config), "factors": 64},
        merger="intruder",
        published_at=T0,
    )
    hostile = [
        (b"churn", b"\xde\xad\xbe\xef not a model"),
        (b"churn", bytes(format_two)),
        (b"churn", encode_part(good, key=None)),  # unsigned while the key is set
        (b"churn", pickle.dumps({"__reduce__": "os.system"})),
        (MANIFEST_KEY, encode_manifest(wrong_shapes, key=signed)),
    ]
    producer = KafkaProducer(bootstrap_servers=group.bootstrap)
    for record_key, value in hostile:
        producer.send(group.env["CRM_MODELS_TOPIC"], key=record_key, value=value)
    producer.send(group.env["CRM_MODEL_UPDATES_TOPIC"], key=b"x", value=encode_part(good, key=None))
    producer.flush()
    producer.close()

    def refused(reason: str) -> float:
        return group.metric(worker, f"crm_scorer_model_records_refused_total{{reason={reason}}}")

    wait_until(
        lambda: (
            refused("not_a_model_record") >= 2
            and refused("format") >= 1
            and refused("unsigned") >= 2  # the part above and the update
            and refused("shape") >= 1
        ),
        30,
        "every hostile record refused",
        worker,
    )
    version = _versions([worker])[0]
    assert version < 999
    more = _history(customers=10, days=20, prefix="later")
    before = handled_events(worker)
    send_events(group.bootstrap, group.env["CRM_EVENTS_TOPIC"], more)
    wait_until(lambda: handled_events(worker) >= before + len(more), 60, "scoring on", worker)
    wait_until(lambda: _versions([worker])[0] > version, 30, "newer versions", worker)
    assert "Refused the record" in worker.log_path.read_text()
