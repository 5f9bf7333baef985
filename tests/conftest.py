"""Fixtures shared by the integration and CLI tests: real Tansu and redis-server on free ports.

The suite runs in parallel (pytest-xdist, ``make test``): each test process starts its own
broker and Redis once. :func:`pytest_collection_modifyitems` keeps the tests that share an
expensive fixture on one process and hands out the longest tests first.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from typing import TypeVar

import pytest

from streams.commands.local_services import LocalBroker, LocalRedis, LocalServiceError

logger = logging.getLogger(__name__)

Service = TypeVar("Service", LocalBroker, LocalRedis)

#: Session fixtures every test process starts for itself (cheap next to a test's own work).
PER_PROCESS_FIXTURES = frozenset({"broker", "redis_server", "tmp_path_factory"})


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


def _tier(item: pytest.Item) -> int:
    """How early a test starts: crash and rebalance runs, then tests of real services and the
    CLI, then unit tests, then doctests. A parallel run ends when its longest tests do, so
    they start first and the short ones fill the gaps."""
    if item.get_closest_marker("slow"):
        return 0
    if item.get_closest_marker("integration") or "/e2e/" in item.nodeid.replace("\\", "/"):
        return 1
    if isinstance(item, pytest.Function):
        return 2
    return 3


def _module(item: pytest.Item) -> str:
    """The path of the module ``item`` belongs to, as in its node id."""
    return item.nodeid.split("::", 1)[0]


def _shared_fixtures(item: pytest.Item) -> list[str]:
    """The expensive fixtures ``item`` shares with other tests, sorted: a module's own, named
    by its module, and session-wide ones other than the per-process services."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    shared = set()
    for name, definitions in info.name2fixturedefs.items():
        scope = definitions[-1].scope
        if scope == "module":
            shared.add(f"module:{_module(item)}")
        elif scope == "session" and name not in PER_PROCESS_FIXTURES:
            shared.add(f"session:{name}")
    return sorted(shared)


def _groups(shared: list[list[str]]) -> list[str | None]:
    """Per test, its xdist group: one per set of tests linked by a shared fixture
    (union-find over ``shared``, each test's sorted shared fixtures); None for a test that
    shares none."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for keys in shared:
        for key in keys:
            parent[root(key)] = root(keys[0])
    return [root(keys[0]) if keys else None for keys in shared]


@pytest.hookimpl(wrapper=True)  # around xdist's own, which reads the groups
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Generator[None, None, None]:
    """Order the tests longest tier first, and group those that share an expensive fixture,
    so that ``--dist loadgroup`` builds it once instead of once per test process."""
    # A module's tests stay together (its module fixtures are built once), at its longest
    # test's tier; within a tier, modules and their tests keep their order.
    module_tier: dict[str, int] = {}
    for item in items:
        module = _module(item)
        module_tier[module] = min(module_tier.get(module, 3), _tier(item))
    items.sort(key=lambda item: module_tier[_module(item)])
    if config.pluginmanager.hasplugin("xdist"):
        groups = _groups([_shared_fixtures(item) for item in items])
        for item, group in zip(items, groups, strict=True):
            if group is not None:
                item.add_marker(pytest.mark.xdist_group(group.replace("@", "_")))
    return (yield)
