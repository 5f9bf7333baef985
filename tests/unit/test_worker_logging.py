"""The worker's logging: quiet levels must not make every library debug call build a record."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

import faust
import orjson
import pytest

from streams.worker import faust_worker


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def set_up_logging(worker: Any) -> None:
    """What the worker does first when it runs, without redirecting stdout and stderr into
    the log: that redirect is a context the worker leaves when it stops, and a test's worker
    never stops (the context, collected later, would put back a stale stdout mid-test)."""
    worker.redirect_stdouts = False
    worker._setup_logging()


@pytest.mark.parametrize("level", ["warning", "error", "info"])
def test_a_worker_at_a_quiet_level_leaves_library_debug_calls_disabled(
    level: str, restored_logging: None
) -> None:
    app = faust.App("logging-test", broker="kafka://127.0.0.1:1")
    worker = faust_worker(app, level)

    set_up_logging(worker)

    for name in ("aiokafka.producer.producer", "aiokafka.conn", "faust.topics", "streams.app"):
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    assert logging.getLogger("streams.app").isEnabledFor(getattr(logging, level.upper()))


def test_json_logs_are_one_object_per_line_with_level_logger_and_message(
    restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    app = faust.App("logging-json-test", broker="kafka://127.0.0.1:1")
    worker = faust_worker(app, "info", log_format="json")
    set_up_logging(worker)

    logging.getLogger("streams.app").info("Scored %d events", 3)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("streams.app").exception("Handling failed")
    sys.stdout.flush()

    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    records = [orjson.loads(line) for line in lines]
    assert records[-2]["message"] == "Scored 3 events"
    assert records[-2]["level"] == "INFO" and records[-2]["logger"] == "streams.app"
    assert "timestamp" in records[-2]
    assert records[-1]["level"] == "ERROR"
    assert "ValueError: boom" in records[-1]["exception"]
