"""Fixtures shared by the integration and CLI tests: real Tansu and redis-server on free ports."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TypeVar

import pytest

from streams.commands.local_services import LocalBroker, LocalRedis, LocalServiceError

logger = logging.getLogger(__name__)

Service = TypeVar("Service", LocalBroker, LocalRedis)


def _running(service: Service) -> Iterator[Service]:
    """``service`` started for as long as the fixture lives, or the test fails saying why."""
    try:
        service.start()
    except LocalServiceError as exc:
        pytest.fail(f"cannot start {service.name} for the tests: {exc}")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    """A Tansu broker for the whole session (topics are named per test)."""
    yield from _running(LocalBroker())


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    """A redis-server for the whole session (key prefixes are chosen per test)."""
    yield from _running(LocalRedis())
