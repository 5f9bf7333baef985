"""With CRM_PSEUDONYM_KEY set, no raw customer id leaves the events topic.

Scores, alerts, the customer table's changelog, metrics and the worker's log carry the
keyed hash instead; ``crm-scorer lookup`` applies the same hash, so the CRM still finds a
customer by the id it knows.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from streams.commands.demo import read_metrics
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

KEY = "a-pseudonym-key-for-tests-only"
VIP, LEAVER = "alice.smith@example.com", "bob.jones@example.com"
T0 = datetime(2025, 3, 1, tzinfo=UTC)


def _events() -> list[dict[str, Any]]:
    """A top spender who complains, and a customer who cancels (a churn alert)."""
    events: list[dict[str, Any]] = []

    def add(customer: str, when: datetime, kind: str, **fields: Any) -> None:
        events.append({"event_id": f"e{len(events)}", "customer_id": customer, "type": kind,
                       "timestamp": when.isoformat(), **fields})  # fmt: skip

    for n in range(30):
        add(VIP, T0 + timedelta(days=2 * n), "purchase", item_id=f"sku-{n % 7}", amount=2_000.0,
            quantity=1)  # fmt: skip
    text = "Terrible service. The parcel arrived broken, nobody answers. Very disappointed."
    add(VIP, T0 + timedelta(days=60, hours=1), "feedback", rating=1, text=text)
    for n in range(3):
        add(LEAVER, T0 + timedelta(days=10 * n), "purchase", item_id="sku-1", amount=30.0,
            quantity=1)  # fmt: skip
    add(LEAVER, T0 + timedelta(days=31), "subscription_cancel")
    return events


def _pseudonym(customer_id: str) -> str:
    """What the README tells the CRM to compute: hex HMAC-SHA256 of the id under the key."""
    return hmac.new(KEY.encode(), customer_id.encode(), hashlib.sha256).hexdigest()


def _raw_ids_in(data: bytes | str) -> list[str]:
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    return [raw for raw in (VIP, LEAVER, "alice", "bob") if raw in text]


def test_no_raw_customer_id_reaches_redis_alerts_changelog_metrics_or_logs(
    broker: Any, redis_server: Any, tmp_path: Path
) -> None:
    env = worker_env(broker, redis_server.url, "pseudo", tmp_path)
    env.update(CRM_PSEUDONYM_KEY=KEY, CRM_LOG_FORMAT="json")
    events = _events()
    send_events(broker.bootstrap, env["CRM_EVENTS_TOPIC"], events)
    client = redis.Redis.from_url(redis_server.url)
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        wait_until(lambda: handled_events(worker) >= len(events), 120, "the events", worker)
        wait_until(lambda: read_metrics(worker.port)["crm_scorer_redis_pending_scores"] == 0,
                   30, "the scores")  # fmt: skip
        keys = sorted(client.scan_iter(match=f"{env['CRM_REDIS_PREFIX']}*"))
        hashes = [client.hgetall(key) for key in keys]
        lookup = crm("lookup", VIP, env=env)
        metrics = read_metrics(worker.port)
    finally:
        worker.stop()
        client.close()
    alerts = read_topic(broker.bootstrap, env["CRM_ALERTS_TOPIC"])
    changelog = read_topic(broker.bootstrap, f"{env['CRM_APP_ID']}-customers-changelog")
    log = (tmp_path / "worker.log").read_text(errors="replace")

    prefix = env["CRM_REDIS_PREFIX"].encode()
    assert sorted(keys) == sorted(prefix + _pseudonym(c).encode() for c in (VIP, LEAVER))
    assert all(not _raw_ids_in(value) for fields in hashes for value in fields.values())
    assert "churn_risk" in {orjson.loads(a.value)["type"] for a in alerts}
    assert all(not _raw_ids_in(a.key or b"") and not _raw_ids_in(a.value) for a in alerts)
    assert changelog and all(not _raw_ids_in(r.key) and not _raw_ids_in(r.value) for r in changelog)
    assert not _raw_ids_in(" ".join(metrics))
    assert not _raw_ids_in(log)
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines and all(isinstance(orjson.loads(line), dict) for line in lines), lines[:3]
    # The CRM finds its customer by the id it knows.
    assert lookup.returncode == 0, lookup.stderr
    assert orjson.loads(lookup.stdout)["customer_id"] == _pseudonym(VIP)
