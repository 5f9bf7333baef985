"""The worker's logging: quiet levels must not make every library debug call build a record."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import faust
import pytest

from streams.worker import faust_worker


@pytest.fixture
def restored_logging() -> Iterator[None]:
    # The worker's logging set-up also redirects stdout and stderr into the log.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stdout, stderr = sys.stdout, sys.stderr
    yield
    sys.stdout, sys.stderr = stdout, stderr
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("level", ["warning", "error", "info"])
def test_a_worker_at_a_quiet_level_leaves_library_debug_calls_disabled(
    level: str, restored_logging: None
) -> None:
    app = faust.App("logging-test", broker="kafka://127.0.0.1:1")
    worker = faust_worker(app, level)

    worker._setup_logging()  # what the worker does first when it runs

    for name in ("aiokafka.producer.producer", "aiokafka.conn", "faust.topics", "streams.app"):
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    assert logging.getLogger("streams.app").isEnabledFor(getattr(logging, level.upper()))
