"""deploy/kubernetes/, checked without a cluster: every manifest (each base file, and each
overlay as kustomize renders it) validates against the Kubernetes API's schemas and KEDA's CRDs
(the Prometheus Operator's for the optional ServiceMonitor), and agrees with the settings, the
web port's routes and the throughput benchmark's sizing.

The security scan (checkov) runs in ``make lint`` (``make k8s-scan``).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from streams.settings import Settings, load_settings
from streams.web import ALLOWED_ROUTES

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("small", "large")
# KEDA's and the Prometheus Operator's CRD schemas (sources named in the file).
CRD_SCHEMAS = ROOT / "tests" / "fixtures" / "kubernetes" / "crd-schemas.json"
CUSTOM_GROUPS = ("keda.sh/", "monitoring.coreos.com/")
# The newest API the validator bundles, and the oldest still served by the major clouds.
KUBERNETES_VERSIONS = ("1.37.0", "1.30.0")
# KEDA's names of the SASL mechanisms CRM_BROKER_SASL_MECHANISM names.
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
SECRET_SETTINGS = {"broker_password", "redis_url", "checkpoint_key", "pseudonym_key"}

sys.path.insert(0, str(ROOT / "benchmarks"))

from kubernetes_sizing import SHOPS, plan  # noqa: E402


def render(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl, "kustomize", str(directory)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def base_documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((KUBERNETES / "base" / "kustomization.yaml").read_text())
    return [
        yaml.safe_load((KUBERNETES / "base" / name).read_text())
        for name in kustomization["resources"]
    ]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each overlay as ``kubectl kustomize`` renders it."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (its kustomize) is not on the PATH: the overlays are not rendered")
    return {overlay: render(kubectl, KUBERNETES / "overlays" / overlay) for overlay in OVERLAYS}


def crd_schema(document: dict[str, Any]) -> dict[str, Any]:
    """The CRD schema of the document's kind, strict: unknown fields are errors (the API
    server would drop them silently)."""
    schemas = json.loads(CRD_SCHEMAS.read_text())["schemas"]
    return _strict(copy.deepcopy(schemas[f"{document['apiVersion']}/{document['kind']}"]))


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        schema.setdefault("additionalProperties", False)
    for value in schema.get("properties", {}).values():
        _strict(value)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _strict(schema[key])
    return schema


def validate(document: dict[str, Any], version: str) -> None:
    """Raise when the document does not fit its kind's schema."""
    if document["apiVersion"].startswith(CUSTOM_GROUPS):
        jsonschema.validate(document, crd_schema(document))
    else:
        kubernetes_validate.validate(document, version, strict=True)


def of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (document,) = [d for d in documents if d["kind"] == kind]
    return document


def worker_container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = of_kind(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def settings_of(
    documents: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Settings:
    """The settings a worker of these manifests starts with: the ConfigMap's variables, and
    the Secret's keys as files where the Deployment mounts them (test values)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"CRM_{name.upper()}", raising=False)
    data = of_kind(documents, "ConfigMap")["data"]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for key in ("CRM_BROKER_USERNAME", "CRM_BROKER_PASSWORD", "CRM_CHECKPOINT_KEY"):
        (secrets / key).write_text(f"test-{key.lower()}\n")
    (secrets / "CRM_REDIS_URL").write_text("rediss://scorer:test@redis.crm:6379/0\n")
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CRM_SECRETS_DIR", str(secrets))
    return load_settings()


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_base_manifest_validates_against_the_api_schemas(version):
    documents = base_documents()

    assert {d["kind"] for d in documents} >= {
        "Deployment",
        "ConfigMap",
        "Service",
        "PodDisruptionBudget",
        "ScaledObject",
        "TriggerAuthentication",
    }
    for document in documents:
        validate(document, version)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_overlay_validates_against_the_api_schemas(rendered, overlay, version):
    for document in rendered[overlay]:
        validate(document, version)
        assert document["metadata"]["namespace"] == "crm-scorer"


def test_the_validation_catches_a_misspelt_field():
    documents = base_documents()
    deployment = copy.deepcopy(of_kind(documents, "Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenessProbes"] = container.pop("livenessProbe")
    scaled = copy.deepcopy(of_kind(documents, "ScaledObject"))
    scaled["spec"]["maxReplicas"] = scaled["spec"].pop("maxReplicaCount")

    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, KUBERNETES_VERSIONS[0])
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled, KUBERNETES_VERSIONS[0])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_worker_starts_with_the_configmap_and_the_mounted_secret(
    rendered, overlay, monkeypatch, tmp_path
):
    documents = rendered[overlay]
    data = of_kind(documents, "ConfigMap")["data"]
    container = worker_container(documents)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {
        v["name"]: v
        for v in of_kind(documents, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }

    assert set(data) <= {f"CRM_{name.upper()}" for name in Settings.model_fields}
    settings = settings_of(documents, monkeypatch, tmp_path)
    assert settings.broker_password.get_secret_value() == "test-crm_broker_password"
    assert settings.signing_key is not None  # the group model's records are signed
    secret_volume = volumes[mounts[data["CRM_SECRETS_DIR"]]]
    assert secret_volume["secret"]["secretName"] == "crm-scorer-secrets"
    assert "emptyDir" in volumes[mounts[str(settings.data_dir)]]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert [e["configMapRef"]["name"] for e in container["envFrom"]] == ["crm-scorer-settings"]


def test_no_secret_value_is_in_the_manifests():
    documents = base_documents()
    secret_names = {f"CRM_{name.upper()}" for name in SECRET_SETTINGS}

    assert "Secret" not in {d["kind"] for d in documents}
    assert not secret_names & set(of_kind(documents, "ConfigMap")["data"])
    assert "env" not in worker_container(documents)
    references = of_kind(documents, "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert {r["name"] for r in references} == {"crm-scorer-secrets"}
    assert {r["key"] for r in references} == {"CRM_BROKER_USERNAME", "CRM_BROKER_PASSWORD"}


def test_probes_and_scrapes_are_the_worker_s_routes_on_its_web_port():
    documents = base_documents()
    container = worker_container(documents)
    web_port = int(of_kind(documents, "ConfigMap")["data"]["CRM_WEB_PORT"])
    service = of_kind(documents, "Service")
    annotations = service["metadata"]["annotations"]

    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"web": web_port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "web"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "web"}
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == web_port
    assert ("GET", annotations["prometheus.io/path"]) in ALLOWED_ROUTES
    assert ("GET", "/livez") in ALLOWED_ROUTES and ("GET", "/readyz") in ALLOWED_ROUTES
    template_labels = of_kind(documents, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= template_labels.items()
    budget = of_kind(documents, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    assert budget.items() <= template_labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_on_the_events_topic_lag_up_to_its_partitions(
    rendered, overlay, monkeypatch, tmp_path
):
    documents = rendered[overlay]
    settings = settings_of(documents, monkeypatch, tmp_path)
    scaled = of_kind(documents, "ScaledObject")["spec"]
    (trigger,) = scaled["triggers"]
    metadata = trigger["metadata"]

    assert trigger["type"] == "kafka"
    assert metadata["bootstrapServers"] == ",".join(settings.broker_hosts)
    assert metadata["consumerGroup"] == settings.app_id  # Faust's group id is the app id
    assert metadata["topic"] == settings.events_topic
    assert metadata["sasl"] == KEDA_SASL[settings.broker_sasl_mechanism]
    assert metadata["tls"] == "enable"
    assert scaled["maxReplicaCount"] == settings.topic_partitions
    assert scaled["scaleTargetRef"]["name"] == of_kind(documents, "Deployment")["metadata"]["name"]
    assert (
        trigger["authenticationRef"]["name"]
        == (of_kind(documents, "TriggerAuthentication")["metadata"]["name"])
    )
    assert "replicas" not in of_kind(documents, "Deployment")["spec"]  # KEDA owns the count


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlays_carry_the_sizing_of_the_throughput_benchmark(rendered, overlay):
    throughput = json.loads((ROOT / "benchmarks/results/throughput-100k.json").read_text())
    expected = plan(overlay, throughput)
    documents = rendered[overlay]
    resources = worker_container(documents)["resources"]
    scaled = of_kind(documents, "ScaledObject")["spec"]
    data = of_kind(documents, "ConfigMap")["data"]

    assert overlay in SHOPS
    assert resources["requests"]["memory"] == f"{expected.memory_request_mib}Mi"
    assert resources["limits"]["memory"] == f"{expected.memory_limit_mib}Mi"
    assert scaled["minReplicaCount"] == expected.min_replicas
    assert scaled["maxReplicaCount"] == expected.max_replicas
    assert int(data["CRM_TOPIC_PARTITIONS"]) == expected.partitions
    assert int(scaled["triggers"][0]["metadata"]["lagThreshold"]) == expected.lag_threshold
    assert of_kind(documents, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert expected.min_replicas >= 2  # a drain never stops the last worker


def test_the_sizing_is_the_one_the_readme_and_results_show():
    result = json.loads((ROOT / "benchmarks/results/kubernetes-sizing.json").read_text())
    throughput = json.loads((ROOT / "benchmarks/results/throughput-100k.json").read_text())
    readme = (ROOT / "README.md").read_text()

    for row in result["plans"]:
        expected = plan(row["shop"], throughput)
        assert row == {**expected.__dict__}
        assert f"{expected.memory_request_mib}Mi" in readme


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_image_is_the_release_in_pyproject(rendered, overlay):
    release = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

    image = worker_container(rendered[overlay])["image"]
    assert image.endswith(f"/crm-scorer:{release}")
    assert worker_container(base_documents())["image"] == f"crm-scorer:{release}"


def test_the_servicemonitor_component_scrapes_the_metrics_service(tmp_path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (its kustomize) is not on the PATH: the component is not rendered")
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "crm-scorer",
                # kustomize takes relative paths only
                "resources": [os.path.relpath(KUBERNETES / "overlays" / "small", tmp_path)],
                "components": [
                    os.path.relpath(KUBERNETES / "components" / "servicemonitor", tmp_path)
                ],
            }
        )
    )
    documents = render(kubectl, tmp_path)
    monitor = of_kind(documents, "ServiceMonitor")
    service = of_kind(documents, "Service")
    (endpoint,) = monitor["spec"]["endpoints"]

    for document in documents:
        validate(document, KUBERNETES_VERSIONS[0])
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert ("GET", endpoint["path"]) in ALLOWED_ROUTES
