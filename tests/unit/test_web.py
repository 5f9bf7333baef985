"""The worker's HTTP port serves /metrics, /livez and /readyz, and no Faust view of its tables.

Faust registers views that serve any table key (``/table/customers/{id}/``) unless told not
to, and a Faust upgrade may add more: the routes the worker's app registers, initialised as
Faust's worker initialises them, must be exactly the allowed ones.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from streams.app import ScorerService
from streams.settings import ENV_PREFIX, SettingsError, load_settings
from streams.web import ALLOWED_ROUTES, Readiness, redis_check, registered_routes
from tests.support import make_certificates


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def test_the_app_registers_only_the_allowed_routes() -> None:
    service = ScorerService(load_settings())
    routes = registered_routes(service.app)
    unexpected = sorted(routes - ALLOWED_ROUTES)
    assert not unexpected, f"routes the worker must not serve: {unexpected}"
    assert routes == ALLOWED_ROUTES


def test_faust_itself_would_serve_the_tables_so_the_check_has_teeth() -> None:
    import faust

    routes = registered_routes(faust.App("crm-test-defaults", web_enabled=True))
    assert ("GET", "/table/{name}/{key}/") in routes
    assert ("GET", "/router/{name}/{key}/") in routes


def test_readiness_names_every_check_that_fails() -> None:
    async def ok() -> bool:
        return True

    async def waiting() -> str:
        return "recovering the customer table"

    async def broken() -> bool:
        raise ConnectionError("refused")

    ready, checks = asyncio.run(Readiness({"a": ok, "b": waiting, "c": broken}).report())
    assert not ready
    assert checks == {
        "a": "ok",
        "b": "recovering the customer table",
        "c": "ConnectionError: refused",
    }
    assert asyncio.run(Readiness({"a": ok}).report()) == (True, {"a": "ok"})


def test_redis_check_reports_a_server_that_does_not_answer() -> None:
    async def silent() -> None:
        await asyncio.sleep(10)

    async def refused() -> None:
        raise ConnectionRefusedError("Connection refused")

    assert asyncio.run(redis_check(silent)()) == "no answer to PING within 1s"
    assert "Connection refused" in str(asyncio.run(redis_check(refused)()))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CRM_METRICS_USERNAME": "prometheus"}, "CRM_METRICS_USERNAME and CRM_METRICS_PASSWORD"),
        ({"CRM_METRICS_PASSWORD": "s3cret"}, "CRM_METRICS_USERNAME and CRM_METRICS_PASSWORD"),
        (
            {"CRM_METRICS_USERNAME": "a:b", "CRM_METRICS_PASSWORD": "s3cret"},
            "forbids ':'",
        ),
        ({"CRM_WEB_TLS_CERT_FILE": "/etc/hostname"}, "CRM_WEB_TLS_CERT_FILE and CRM_WEB_TLS_KEY"),
    ],
)
def test_a_half_configured_web_port_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert message in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_a_certificate_that_does_not_load_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    monkeypatch.setenv("CRM_WEB_TLS_CERT_FILE", str(tmp_path / "cert.pem"))
    monkeypatch.setenv("CRM_WEB_TLS_KEY_FILE", str(tmp_path / "key.pem"))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert f"CRM_WEB_TLS_CERT_FILE={tmp_path / 'cert.pem'}" in str(caught.value)
    assert "cannot be loaded" in str(caught.value)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a test CA")
def test_a_tls_port_gets_an_ssl_context(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    make_certificates(tmp_path)
    monkeypatch.setenv("CRM_WEB_TLS_CERT_FILE", str(tmp_path / "server.crt"))
    monkeypatch.setenv("CRM_WEB_TLS_KEY_FILE", str(tmp_path / "server.key"))
    service = ScorerService(load_settings())
    assert service.app.conf.web_ssl_context is not None
