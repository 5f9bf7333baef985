"""A running worker's HTTP port: TLS, /metrics behind basic auth, health, and no customer data.

The worker is started as an operator who protects the port would start it (a certificate from
a test CA, ``CRM_METRICS_USERNAME``/``CRM_METRICS_PASSWORD``), scores a customer, and is then
asked over HTTPS for what Faust would serve by default: the customer's table entry, the table
listing, the router, the graph and statistics pages. Every one is a 404 that holds no data.
"""

from __future__ import annotations

import base64
import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis

from streams.commands.demo import WorkerProcess
from streams.commands.local_services import LocalRedis
from tests.support import make_certificates, send_events, start_worker, wait_until, worker_env

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

USER, PASSWORD = "prometheus", "scrape-Pa55word"
CUSTOMER = "alice-web-7"
WHEN = datetime(2025, 3, 1, 10, tzinfo=UTC).isoformat()


@dataclass
class Protected:
    worker: WorkerProcess
    redis: LocalRedis
    context: ssl.SSLContext
    prefix: str

    def get(self, path: str, *, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
        """Status and body of ``GET path`` over HTTPS (a 4xx/5xx is returned, not raised)."""
        request = urllib.request.Request(f"https://127.0.0.1:{self.worker.port}{path}")
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=5, context=self.context) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


@pytest.fixture(scope="module")
def protected(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Protected]:
    data_dir = tmp_path_factory.mktemp("web")
    ca = make_certificates(data_dir)
    context = ssl.create_default_context(cafile=str(ca))
    own_redis = LocalRedis()
    own_redis.start()
    env = worker_env(broker, own_redis.url, "webport", data_dir)
    env.update(
        CRM_WEB_TLS_CERT_FILE=str(data_dir / "server.crt"),
        CRM_WEB_TLS_KEY_FILE=str(data_dir / "server.key"),
        CRM_METRICS_USERNAME=USER,
        CRM_METRICS_PASSWORD=PASSWORD,
    )
    worker = start_worker(env, data_dir / "worker.log")
    run = Protected(worker, own_redis, context, env["CRM_REDIS_PREFIX"])
    try:
        purchase = {"event_id": "w1", "customer_id": CUSTOMER, "type": "purchase"}
        purchase.update(timestamp=WHEN, item_id="sku-secret-41", amount=42.5, quantity=1)
        feedback = {"event_id": "w2", "customer_id": CUSTOMER, "type": "feedback"}
        feedback.update(timestamp=WHEN, text="Lovely lamp", rating=5)
        send_events(broker.bootstrap, env["CRM_EVENTS_TOPIC"], [purchase, feedback])
        client = redis.Redis.from_url(own_redis.url)
        wait_until(
            lambda: client.hget(run.prefix + CUSTOMER, "orders") == b"1",
            120,
            "the customer's score in Redis",
            worker,
        )
        client.close()
        yield run
    finally:
        worker.stop()
        own_redis.stop()


def test_readiness_reports_every_check_once_the_worker_scores(protected: Protected) -> None:
    wait_until(lambda: protected.get("/readyz")[0] == 200, 60, "/readyz", protected.worker)
    assert orjson.loads(protected.get("/readyz")[1]) == {
        "status": "ready",
        "checks": {
            "partitions_assigned": "ok",
            "tables_recovered": "ok",
            "models_loaded": "ok",
            "catalogue_loaded": "ok",
            "redis_reachable": "ok",
        },
    }
    assert protected.get("/livez") == (200, b'{"status":"alive"}')


def test_metrics_need_the_configured_credentials(protected: Protected) -> None:
    status, body = protected.get("/metrics")
    assert status == 401 and b"crm_scorer" not in body
    assert protected.get("/metrics", auth=(USER, "wrong"))[0] == 401
    status, body = protected.get("/metrics", auth=(USER, PASSWORD))
    assert status == 200
    assert b'crm_scorer_events_total{outcome="scored",type="purchase"} 1.0' in body


@pytest.mark.parametrize(
    "path",
    [
        f"/table/customers/{CUSTOMER}/",
        "/table/customers/",
        "/table/",
        f"/router/customers/{CUSTOMER}/",
        "/router/",
        "/graph/",
        "/stats/",
        "/performance/",
        "/",
    ],
)
def test_faust_views_serve_nothing(protected: Protected, path: str) -> None:
    for auth in (None, (USER, PASSWORD)):
        status, body = protected.get(path, auth=auth)
        assert status == 404, f"GET {path} answered {status}: {body[:200]!r}"
        assert CUSTOMER.encode() not in body and b"sku-secret-41" not in body


def test_readiness_fails_naming_redis_while_liveness_holds(protected: Protected) -> None:
    protected.redis.stop()
    wait_until(lambda: protected.get("/readyz")[0] == 503, 30, "/readyz to fail")
    checks = orjson.loads(protected.get("/readyz")[1])["checks"]
    assert checks["redis_reachable"] != "ok"
    assert checks["tables_recovered"] == "ok"
    assert protected.get("/livez")[0] == 200


def test_plain_http_on_the_tls_port_gets_no_metrics(protected: Protected) -> None:
    url = f"http://127.0.0.1:{protected.worker.port}/metrics"
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(url, timeout=5).read()
