"""The worker's HTTP port: ``/metrics``, liveness and readiness, and nothing else.

Faust's built-in views (``/table/…`` serves any table key, ``/router/…`` says which worker
holds a key, ``/graph/``, ``/stats/``, the index) would serve customer state to anyone who
can reach the port: every one of them is off, and :data:`ALLOWED_ROUTES` is what stays.
``/metrics`` may ask for HTTP basic credentials (``CRM_METRICS_USERNAME`` and
``CRM_METRICS_PASSWORD``) and the whole port may speak TLS (``CRM_WEB_TLS_CERT_FILE`` and
``CRM_WEB_TLS_KEY_FILE``), in the spirit of Prometheus' exporter-toolkit web config.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
from faust.web.base import BlueprintManager
from prometheus_client import CollectorRegistry, generate_latest

from streams.settings import Settings

__all__ = [
    "ALLOWED_ROUTES",
    "FAUST_VIEW_SETTINGS",
    "Readiness",
    "install_routes",
    "registered_routes",
    "web_ssl_context",
]

logger = logging.getLogger(__name__)

#: Every (method, path) the worker's web server answers; anything else is a 404.
ALLOWED_ROUTES = frozenset(
    (method, path) for path in ("/metrics", "/livez", "/readyz") for method in ("GET", "HEAD")
)
#: Faust settings that turn its built-in views off (faust-streaming 0.11-0.15).
FAUST_VIEW_SETTINGS = {
    "web_tables_enabled": False,
    "web_router_enabled": False,
    "web_graph_enabled": False,
    "web_stats_enabled": False,
    "web_metrics_enabled": False,
}
# Prometheus' text format; aiohttp adds the charset itself and refuses one in content_type.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"
# The longest a readiness probe waits for Redis to answer a PING.
REDIS_PING_SECONDS = 1.0

#: A named readiness check: True when ready, else False or a reason.
Check = Callable[[], Awaitable[bool | str]]


class Readiness:
    """What ``/readyz`` checks, in order; each check answers True or why it is not ready."""

    def __init__(self, checks: Mapping[str, Check]) -> None:
        self.checks = dict(checks)

    async def report(self) -> tuple[bool, dict[str, Any]]:
        """Whether every check passes, and each check's answer (``"ok"`` or its reason)."""
        answers: dict[str, Any] = {}
        ready = True
        for name, check in self.checks.items():
            try:
                answer: bool | str = await check()
            except Exception as exc:  # a check that fails to run is a check that fails
                answer = f"{type(exc).__name__}: {exc}"
            if answer is True:
                answers[name] = "ok"
            else:
                ready = False
                answers[name] = answer or "not yet"
        return ready, answers


def redis_check(ping: Callable[[], Awaitable[Any]]) -> Check:
    """A readiness check that Redis answers ``ping`` within :data:`REDIS_PING_SECONDS`."""

    async def redis_reachable() -> bool | str:
        try:
            await asyncio.wait_for(ping(), REDIS_PING_SECONDS)
        except TimeoutError:
            return f"no answer to PING within {REDIS_PING_SECONDS:.0f}s"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return True

    return redis_reachable


def install_routes(
    app: faust.App,
    settings: Settings,
    *,
    registry: CollectorRegistry,
    before_scrape: Callable[[], None],
    readiness: Readiness,
) -> None:
    """Serve ``/metrics``, ``/livez`` and ``/readyz`` on ``app``'s web server, and no
    built-in Faust view (whatever its settings say, the blueprints are dropped)."""
    app.web.blueprints = BlueprintManager()
    expected = _expected_authorization(settings)

    async def metrics_page(web: Any, request: Any) -> Any:
        if expected is not None and not _authorized(request, expected):
            return web.text(
                "401 Unauthorized\n",
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="crm-scorer metrics", charset="UTF-8"'},
            )
        before_scrape()
        return web.bytes(generate_latest(registry), content_type=METRICS_CONTENT_TYPE)

    async def liveness(web: Any, request: Any) -> Any:
        # Answering at all is the check: the event loop runs the worker's every task.
        return web.json({"status": "alive"})

    async def readiness_page(web: Any, request: Any) -> Any:
        ready, checks = await readiness.report()
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        return web.json(body, status=200 if ready else 503)

    app.page("/metrics")(metrics_page)
    app.page("/livez")(liveness)
    app.page("/readyz")(readiness_page)


def registered_routes(app: faust.App) -> set[tuple[str, str]]:
    """(method, path) of every route ``app``'s aiohttp server has, once initialised as Faust's
    worker does it (:meth:`faust.App.worker_init_post_autodiscover`)."""
    web: Any = app.web  # the aiohttp driver
    web.init_server()
    routes = set()
    for route in web.web_app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix") or "?"
        routes.add((route.method, path))
    return routes


def web_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the web port, when ``CRM_WEB_TLS_CERT_FILE`` is set."""
    if settings.web_tls_cert_file is None or settings.web_tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.web_tls_cert_file, settings.web_tls_key_file)
    return context


def _expected_authorization(settings: Settings) -> bytes | None:
    if not settings.metrics_username:
        return None
    password = settings.metrics_password.get_secret_value()
    token = base64.b64encode(f"{settings.metrics_username}:{password}".encode())
    return b"Basic " + token


def _authorized(request: Any, expected: bytes) -> bool:
    given = request.headers.get("Authorization", "").encode("utf-8", "replace")
    return hmac.compare_digest(given, expected)
