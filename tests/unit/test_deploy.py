"""The deploy stack, checked without a Docker engine: services, ports, settings and volumes of
``deploy/docker-compose.yml`` agree with the settings, the Prometheus config and Grafana."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry

from streams.metrics import ScorerMetrics
from streams.settings import Settings, load_settings
from streams.web import ALLOWED_ROUTES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
WORKERS = ("worker-1", "worker-2")
METRIC = re.compile(r"\bcrm_scorer_[a-z_]+")


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())


def dashboard() -> dict[str, Any]:
    return orjson.loads((DEPLOY / "grafana" / "dashboards" / "crm-scorer.json").read_bytes())


def worker_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"CRM_{name.upper()}", raising=False)
    for name, value in compose()["services"][service]["environment"].items():
        monkeypatch.setenv(name, str(value))
    return load_settings()


def test_the_stack_has_kafka_in_kraft_mode_redis_two_workers_prometheus_and_grafana():
    services = compose()["services"]

    assert {"kafka", "topics", "redis", *WORKERS, "prometheus", "grafana"} <= set(services)
    assert not any("zookeeper" in name for name in services)
    kafka = services["kafka"]["environment"]
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    # The log directory is the mounted volume: topics and offsets outlive the container.
    data = {v.split(":")[1]: v.split(":")[0] for v in services["kafka"]["volumes"]}
    assert data[kafka["KAFKA_LOG_DIRS"]] in compose()["volumes"]
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{kafka['KAFKA_NODE_ID']}@kafka:")


@pytest.mark.parametrize("service", WORKERS)
def test_every_worker_variable_is_a_valid_setting(service, monkeypatch):
    env = compose()["services"][service]["environment"]
    known = {f"CRM_{name.upper()}" for name in Settings.model_fields}

    assert set(env) <= known, set(env) - known
    settings = worker_settings(service, monkeypatch)
    assert settings.broker_hosts == ["kafka:9092"]
    assert settings.redis_url.get_secret_value().startswith("redis://redis:6379/")


def test_the_workers_share_a_consumer_group_but_not_a_data_volume(monkeypatch):
    services = compose()["services"]
    settings = {service: worker_settings(service, monkeypatch) for service in WORKERS}

    assert len({s.app_id for s in settings.values()}) == 1
    mounts = {}
    for service, each in settings.items():
        volumes = services[service]["volumes"]
        mounted = {v.split(":")[1]: v.split(":")[0] for v in volumes}
        assert str(each.data_dir) in mounted, f"{service} keeps its table store on a volume"
        mounts[service] = mounted[str(each.data_dir)]
    assert len(set(mounts.values())) == len(WORKERS)
    assert set(mounts.values()) <= set(compose()["volumes"])


def test_kafka_advertises_the_address_the_workers_use(monkeypatch):
    kafka = compose()["services"]["kafka"]["environment"]
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")

    assert "PLAINTEXT://kafka:9092" in advertised
    assert worker_settings("worker-1", monkeypatch).broker == "kafka://kafka:9092"


def test_topics_are_created_with_the_recommended_partitions(monkeypatch):
    settings = worker_settings("worker-1", monkeypatch)
    script = "\n".join(compose()["services"]["topics"]["command"])
    readme = (ROOT / "README.md").read_text()

    for topic in settings.topics.values():
        assert topic in script
    assert f"--partitions {settings.topic_partitions}" in script
    # The group model's topics: one partition each (it elects the merger), models compacted.
    for topic in settings.model_topics.values():
        assert f"--topic {topic} --partitions 1" in script
    models = script[script.index(f"--topic {settings.models_topic} ") :]
    assert "--config cleanup.policy=compact" in models
    items = script[script.index(f"--topic {settings.items_topic} ") :]
    assert f"--partitions {settings.topic_partitions}" in items
    assert "--config cleanup.policy=compact" in items
    assert compose()["services"]["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"] == str(
        settings.topic_partitions
    )
    assert f"{settings.topic_partitions} partitions" in readme


def test_every_published_port_is_on_localhost_only():
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_prometheus_scrapes_every_worker_on_its_metrics_port(monkeypatch):
    services = compose()["services"]
    (job,) = prometheus_config()["scrape_configs"]
    targets = {t for group in job["static_configs"] for t in group["targets"]}

    assert job["metrics_path"] == "/metrics"
    for service in WORKERS:
        port = worker_settings(service, monkeypatch).web_port
        assert f"{services[service]['hostname']}:{port}" in targets


def test_mounted_files_exist_and_prometheus_finds_its_rules():
    services = compose()["services"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source
    mounted = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"] if v.startswith("."))
    config_dir = Path(mounted["./prometheus/prometheus.yml"]).parent
    for rule_file in prometheus_config()["rule_files"]:
        assert str(config_dir / rule_file) in mounted.values()
        assert (DEPLOY / "prometheus" / rule_file).exists()


def test_grafana_provisions_the_datasource_the_dashboard_uses():
    grafana = DEPLOY / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((grafana / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    (provider,) = yaml.safe_load((grafana / "dashboards" / "crm-scorer.yml").read_text())[
        "providers"
    ]
    mounts = dict(v.split(":")[:2] for v in compose()["services"]["grafana"]["volumes"])

    assert datasource["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in compose()["services"]["prometheus"]["ports"]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    uids = {
        target["datasource"]["uid"]
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    }
    assert uids == {datasource["uid"]}


def test_every_dashboard_metric_is_one_the_worker_exports():
    registry = CollectorRegistry()
    ScorerMetrics(registry)
    exported = set()
    for family in registry.collect():
        exported.add(family.name)
        exported.update(sample.name for sample in family.samples)
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    rules = (DEPLOY / "prometheus" / "rules.yml").read_text()

    used = {name for expr in [*exprs, rules] for name in METRIC.findall(expr)}
    assert used - exported == set()


def test_workers_are_healthy_when_ready_to_score():
    services = compose()["services"]
    for name in ("worker-1", "worker-2"):
        probe = " ".join(services[name]["healthcheck"]["test"])
        port = services[name]["environment"]["CRM_WEB_PORT"]
        assert f"127.0.0.1:{port}/readyz" in probe
    assert services["prometheus"]["depends_on"]["worker-1"]["condition"] == "service_healthy"


def test_the_image_runs_as_a_non_root_user_with_a_healthcheck():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    final_stage = dockerfile.split("\nFROM ")[-1]

    assert re.search(r"^USER (?!root)\S+", final_stage, re.MULTILINE)
    healthcheck = final_stage[final_stage.index("HEALTHCHECK") :].split("\nENTRYPOINT")[0]
    assert "/readyz" in healthcheck and ("GET", "/readyz") in ALLOWED_ROUTES
    assert f"EXPOSE {Settings.model_fields['web_port'].default}" in final_stage
    assert 'ENTRYPOINT ["crm-scorer"]' in final_stage
    assert final_stage.startswith("python:3.11-slim")
