"""The ``crm-scorer`` command as a user runs it."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.json_schema import wire_json_schema
from streams.commands.local_services import free_port
from tests.support import crm, handled_events, start_worker, wait_until, worker_env

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]


def test_schema_prints_the_committed_json_schema() -> None:
    result = crm("schema")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed == orjson.loads(orjson.dumps(wire_json_schema()))
    committed = json.loads((ROOT / "schemas" / "crm-scorer.schema.json").read_text())
    assert printed == committed, "regenerate with: make schema"
    assert set(printed["properties"]) == {
        "event",
        "score",
        "alert",
        "dead_letter",
        "catalogue_item",
    }


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CRM_WEB_PORT", "abc"), ("CRM_BROKER", "localhost:9092"), ("CRM_CHURN_HORIZON_DAYS", "-1")],
)
def test_a_bad_setting_stops_the_worker_naming_it(variable: str, value: str) -> None:
    result = crm("worker", env={variable: value}, timeout=60)
    assert result.returncode == 2
    assert f"invalid setting {variable}" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_without_redis_says_which_setting_to_fix() -> None:
    port = free_port()
    result = crm(
        "worker",
        "--wait",
        "1",
        env={"CRM_REDIS_URL": f"redis://:hunter2@127.0.0.1:{port}/0"},
        timeout=60,
    )
    assert result.returncode == 2
    assert "cannot reach Redis at CRM_REDIS_URL" in result.stderr
    assert "hunter2" not in result.stderr


@pytest.mark.integration
def test_lookup_of_an_unknown_customer_exits_1(redis_server: Any) -> None:
    result = crm("lookup", "nobody-here", env={"CRM_REDIS_URL": redis_server.url})
    assert result.returncode == 1
    assert "no score for customer 'nobody-here'" in result.stderr


@pytest.mark.integration
def test_produce_a_file_then_lookup_the_scores(
    broker: Any, redis_server: Any, tmp_path: Path
) -> None:
    env = worker_env(broker, redis_server.url, "cli", tmp_path)
    lines = [
        {
            "event_id": "f1",
            "customer_id": "ann",
            "type": "purchase",
            "item_id": "tea",
            "amount": 12.5,
            "quantity": 1,
            "timestamp": "2025-05-01T09:00:00+02:00",
        },
        {
            "event_id": "f2",
            "customer_id": "ann",
            "type": "feedback",
            "rating": 5,
            "text": "Lovely tea, fast delivery!",
            "timestamp": 1746090000,
        },
        {
            "event_id": "f3",
            "customer_id": "bob",
            "type": "view",
            "item_id": "tea",
            "timestamp": "2025-05-02T10:00:00Z",
        },
    ]
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n{broken\n")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        produced = crm("produce", str(events), env=env)
        assert produced.returncode == 0, produced.stderr
        assert "sent 4 events" in produced.stdout
        assert "1 of them are invalid" in produced.stdout
        wait_until(lambda: handled_events(worker) >= 4, 120, "4 handled events", worker)

        def ann_scored() -> bool:
            return crm("lookup", "ann", env=env).returncode == 0

        wait_until(ann_scored, 30, "ann's score in Redis", worker)
    finally:
        worker.stop()
    ann = json.loads(crm("lookup", "ann", env=env).stdout)
    assert ann["orders"] == 1
    assert ann["monetary"] == 12.5
    assert ann["sentiment"] > 0.5
    assert ann["event_time"] == "2025-05-01T09:00:00Z"
    bob = json.loads(crm("lookup", "bob", env=env).stdout)
    assert bob["orders"] == 0
    assert "tea" in bob["recommendations"]


@pytest.mark.integration
@pytest.mark.slow
def test_demo_runs_end_to_end_on_its_own_services(tmp_path: Path) -> None:
    """On a machine with Python alone: no redis-server on the PATH, the wheels bring it all."""
    bare = [
        entry
        for entry in os.environ.get("PATH", "").split(os.pathsep)
        if not (Path(entry) / "redis-server").exists()
    ]
    result = crm(
        "demo",
        "--events",
        "3000",
        "--customers",
        "150",
        timeout=400,
        env={"HOME": os.environ.get("HOME", str(tmp_path)), "PATH": os.pathsep.join(bare)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "started Tansu broker" in out
    assert "started valkey-server" in out
    assert "events sent" in out and "3,000" in out
    assert "customers scored in Redis" in out
    assert "crm-scorer lookup" in out
    assert '"churn_risk"' in out


@pytest.mark.integration
@pytest.mark.slow
def test_demo_with_two_workers_shows_both_on_one_model_version(tmp_path: Path) -> None:
    result = crm(
        "demo",
        "--workers",
        "2",
        "--events",
        "3000",
        "--customers",
        "150",
        timeout=400,
        env={"HOME": os.environ.get("HOME", str(tmp_path)), "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = re.findall(r"worker (\d) \(:\d+\).*?model version (\d+)", result.stdout)
    assert [worker for worker, _ in rows] == ["1", "2"], result.stdout
    versions = {int(version) for _, version in rows}
    assert len(versions) == 1 and versions.pop() > 0, result.stdout
    assert "merges the group model" in result.stdout
