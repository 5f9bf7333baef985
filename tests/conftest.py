"""Fixtures shared by the integration and CLI tests: real Tansu and redis-server on free ports."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from streams.local_services import LocalBroker, LocalRedis, LocalServiceError

logger = logging.getLogger(__name__)


def _start(service: LocalBroker | LocalRedis) -> None:
    try:
        service.start()
    except LocalServiceError as exc:
        pytest.fail(f"cannot start {service.name} for the tests: {exc}")


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    """A Tansu broker for the whole session (topics are named per test)."""
    service = LocalBroker()
    _start(service)
    yield service
    service.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    """A redis-server for the whole session (key prefixes are chosen per test)."""
    service = LocalRedis()
    _start(service)
    yield service
    service.stop()
