"""The deploy/ Prometheus config, rules and Grafana dashboard, proven against real Prometheus.

``promtool`` checks the config and rules and runs the rules' unit tests; a real Prometheus
(Debian's ``prometheus`` package, which ``.ci/run`` installs) then scrapes a running worker,
and every PromQL expression of every dashboard panel must return data.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import subprocess
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from kafka import KafkaProducer

from streams.commands.local_services import ManagedProcess
from tests.support import (
    handled_events,
    make_certificates,
    start_worker,
    wait_until,
    worker_env,
)

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
T0 = 1_735_689_600


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian: apt-get install prometheus; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_binary("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=PROMETHEUS_DIR,
    )


class LocalPrometheus(ManagedProcess):
    """A Prometheus server on a free port, with its data in a temporary directory."""

    name = "prometheus"

    def __init__(self, config: Path, data: Path) -> None:
        super().__init__(log_path=data / "prometheus.log")
        self.config, self.data = config, data

    def _command(self) -> list[str]:
        return [
            _binary("prometheus"),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.data / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 503:  # Prometheus is still starting (its TSDB not open yet)
                return []
            raise
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as reply:
            return orjson.loads(reply.read())["data"]


def test_promtool_accepts_the_config_and_the_rules() -> None:
    for args in (
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "rules.yml"),
        ("test", "rules", "rules.test.yml"),
    ):
        result = _promtool(*args)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    assert "SUCCESS" in _promtool("test", "rules", "rules.test.yml").stdout


def test_every_dashboard_panel_returns_data_from_a_real_prometheus(
    broker: Any, redis_server: Any, tmp_path: Path
) -> None:
    env = worker_env(broker, redis_server.url, "dashboard", tmp_path)
    env["CRM_MODEL_SYNC_SECONDS"] = "1"  # versions within the run: the model panel has data
    worker = start_worker(env, tmp_path / "worker.log")
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{worker.port}"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = LocalPrometheus(tmp_path / "prometheus.yml", tmp_path)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    try:
        prometheus.start(timeout=60)
        _stream(producer, env["CRM_EVENTS_TOPIC"], n=3_000)
        wait_until(lambda: handled_events(worker) >= 3_000, 180, "the events", worker)
        time.sleep(5)  # a few scrapes after the last event, so every rate() has two samples
        panels = orjson.loads((DEPLOY / "grafana" / "dashboards" / "crm-scorer.json").read_bytes())
        empty = []
        for panel in panels["panels"]:
            for target in panel.get("targets", []):
                if not prometheus.query(target["expr"]):
                    empty.append(f"{panel['title']}: {target['expr']}")
        groups = prometheus.get("/api/v1/rules")["groups"]
        targets = prometheus.get("/api/v1/targets")["activeTargets"]
    finally:
        producer.close()
        prometheus.stop()
        worker.stop()
    assert [t["health"] for t in targets] == ["up"]
    assert not empty, "panels without data:\n" + "\n".join(empty)
    rules = [rule for group in groups for rule in group["rules"]]
    assert rules and all(rule["health"] == "ok" for rule in rules), rules


def _protected_job() -> dict[str, Any]:
    """The scrape job of prometheus.yml with its documented ``protected`` block uncommented."""
    text = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    block = text[text.index("# protected:begin") : text.index("# protected:end")]
    uncommented = "\n".join(
        line.replace("# ", "", 1) for line in block.splitlines()[1:] if line.strip()
    )
    job = yaml.safe_load(text)["scrape_configs"][0]
    job.update(yaml.safe_load(textwrap.dedent(uncommented)))
    return dict(job)


def test_prometheus_scrapes_a_protected_worker_with_the_documented_config(
    broker: Any, redis_server: Any, tmp_path: Path
) -> None:
    make_certificates(tmp_path)
    password = "scrape-Pa55word"
    env = worker_env(broker, redis_server.url, "protected-scrape", tmp_path)
    env.update(
        CRM_WEB_TLS_CERT_FILE=str(tmp_path / "server.crt"),
        CRM_WEB_TLS_KEY_FILE=str(tmp_path / "server.key"),
        CRM_METRICS_USERNAME="prometheus",
        CRM_METRICS_PASSWORD=password,
    )
    worker = start_worker(env, tmp_path / "worker.log")
    (tmp_path / "password").write_text(password)
    protected = _protected_job()
    protected["tls_config"]["ca_file"] = str(tmp_path / "ca.crt")
    protected["basic_auth"]["password_file"] = str(tmp_path / "password")
    protected["static_configs"] = [{"targets": [f"127.0.0.1:{worker.port}"]}]
    anonymous = {k: v for k, v in protected.items() if k != "basic_auth"}
    anonymous["job_name"] = "anonymous"
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [protected, anonymous],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = LocalPrometheus(tmp_path / "prometheus.yml", tmp_path)
    try:
        prometheus.start(timeout=60)
        wait_until(
            lambda: len(prometheus.query('up{job="crm-scorer"} == 1')) == 1,
            60,
            "Prometheus to scrape the protected worker",
            worker,
        )
        assert prometheus.query("crm_scorer_customers")
        targets = {
            t["labels"]["job"]: t for t in prometheus.get("/api/v1/targets")["activeTargets"]
        }
        wait_until(
            lambda: "401" in _target(prometheus, "anonymous").get("lastError", ""),
            30,
            "the scrape without credentials to be refused",
        )
    finally:
        prometheus.stop()
        worker.stop()
    assert targets["crm-scorer"]["health"] == "up"


def _target(prometheus: LocalPrometheus, job: str) -> dict[str, Any]:
    targets = prometheus.get("/api/v1/targets")["activeTargets"]
    return next((t for t in targets if t["labels"]["job"] == job), {})


def _stream(producer: KafkaProducer, topic: str, n: int) -> None:
    """Every event type, some bad messages, customers who cancel or complain."""
    rng = random.Random(8)
    kinds = ["purchase", "purchase", "view", "cart_add", "feedback", "support_ticket", "return"]
    for i in range(n):
        customer = f"c{rng.randrange(200)}"
        kind = rng.choice(kinds) if i % 97 else "subscription_cancel"
        event: dict[str, Any] = {
            "event_id": f"e{i}",
            "customer_id": customer,
            "type": kind,
            "timestamp": T0 + i * 1_800,
        }
        if kind in {"purchase", "return"}:
            event.update(item_id=f"sku-{rng.randrange(50)}", amount=rng.uniform(5, 90), quantity=1)
        elif kind in {"view", "cart_add"}:
            event["item_id"] = f"sku-{rng.randrange(50)}"
        elif kind in {"feedback", "support_ticket"}:
            event["text"] = rng.choice(["terrible, broken again", "love it", "slow delivery"])
        value = orjson.dumps(event) if i % 50 else b"not json"
        producer.send(topic, key=customer.encode(), value=value)
    producer.flush()
