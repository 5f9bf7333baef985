"""The catalogue on the real broker: a new item recommended at once, an unavailable one gone."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaProducer

from schemas import DeadLetter, Score
from streams.commands.demo import read_metrics
from tests.support import crm, read_topic, send_events, start_worker, wait_until, worker_env

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

NAME = "catalogue"
T0 = datetime(2025, 3, 1, tzinfo=UTC)
LAMPS = {
    "lamp-red": "Red table lamp",
    "lamp-green": "Green table lamp",
    "lamp-white": "White table lamp",
}
KITCHEN = {"mug-blue": "Blue coffee mug", "mug-pink": "Pink coffee mug", "teapot": "Teapot"}


def _item(item_id: str, name: str, **fields: Any) -> dict[str, Any]:
    category = "home/lighting" if item_id.startswith("lamp") else "home/kitchen"
    return {"item_id": item_id, "name": name, "category": category, "brand": "Lumo", **fields}


def _purchase(customer: str, n: int, item: str, when: datetime) -> dict[str, Any]:
    return {
        "event_id": f"{customer}-{n}",
        "customer_id": customer,
        "type": "purchase",
        "timestamp": when.isoformat(),
        "item_id": item,
        "amount": 20.0,
        "quantity": 1,
    }


class Shop:
    def __init__(self, env: dict[str, str], client: redis.Redis, bootstrap: str) -> None:
        self.env, self.redis, self.bootstrap = env, client, bootstrap
        self.worker: Any = None
        self.sent = 0

    def records_read(self) -> float:
        return read_metrics(self.worker.port).get("crm_scorer_catalogue_records_total", 0.0)

    def send_items(self, items: list[dict[str, Any]]) -> None:
        """``crm-scorer items`` with a JSON-lines file; then the worker has read them."""
        before = self.records_read() if self.worker is not None else 0.0
        self.sent += 1
        path = Path(self.env["CRM_DATA_DIR"]) / f"items-{self.sent}.jsonl"
        path.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in items))
        result = crm("items", str(path), env=self.env)
        assert result.returncode == 0, result.stderr
        assert f"sent {len(items)} items" in result.stdout
        if self.worker is not None:
            wait_until(lambda: self.records_read() >= before + len(items), 60,
                       "the worker to read the catalogue records", self.worker)  # fmt: skip

    def send(self, customer: str, item: str, day: float, kind: str = "purchase") -> None:
        self.sent += 1
        event = _purchase(customer, self.sent, item, T0 + timedelta(days=day))
        if kind != "purchase":
            event = {k: v for k, v in event.items() if k not in ("amount", "quantity")}
            event["type"] = kind
        send_events(self.bootstrap, self.env["CRM_EVENTS_TOPIC"], [event])

    def recommendations(self, customer: str) -> list[str]:
        fields = self.redis.hgetall(self.env["CRM_REDIS_PREFIX"] + customer)
        return Score.from_redis(fields).recommendations if fields else []


@pytest.fixture(scope="module")
def shop(
    broker: Any, redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shop]:
    data_dir = tmp_path_factory.mktemp("catalogue")
    env = worker_env(broker, redis_server.url, NAME, data_dir)
    env["CRM_TOP_K"] = "3"
    client = redis.Redis.from_url(redis_server.url)
    shop = Shop(env, client, broker.bootstrap)
    # The catalogue first, with one record that fails its checks, then the worker.
    shop.send_items([_item(i, n) for i, n in {**LAMPS, **KITCHEN}.items()])
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    producer.send(env["CRM_ITEMS_TOPIC"], key=b"broken", value=b'{"item_id": "broken"}')
    producer.flush()
    producer.close()
    shop.worker = start_worker(env, data_dir / "worker.log")
    try:
        wait_until(lambda: shop.records_read() >= 7, 120, "the worker to read the catalogue",
                   shop.worker)  # fmt: skip
        for n in range(20):  # kitchen shoppers make the kitchen items the popular ones
            for k, item in enumerate(KITCHEN):
                shop.send(f"kitchen-{n}", item, n * 0.1 + k * 0.01)
        yield shop
    finally:
        shop.worker.stop()
        client.close()


def test_a_brand_new_item_is_recommended_to_customers_buying_similar_items(shop: Shop) -> None:
    shop.send_items([_item("lamp-amber", "Amber table lamp")])  # nobody ever bought it
    shop.send("ann", "lamp-red", 3.0)

    wait_until(
        lambda: "lamp-amber" in shop.recommendations("ann"),
        60,
        "ann's recommendations to hold the new lamp",
        shop.worker,
    )
    assert "lamp-red" not in shop.recommendations("ann")  # she owns it


def test_an_item_marked_unavailable_disappears_from_the_next_recommendations(shop: Shop) -> None:
    shop.send("bob", "lamp-white", 3.5)
    wait_until(lambda: len(shop.recommendations("bob")) == 3, 60, "bob's list", shop.worker)
    top = shop.recommendations("bob")[0]
    item = {**LAMPS, **KITCHEN, "lamp-amber": "Amber table lamp"}[top]

    shop.send_items([_item(top, item, available=False)])
    shop.send("bob", "lamp-white", 3.6, kind="view")

    wait_until(lambda: top not in shop.recommendations("bob"), 60,
               f"{top} to leave bob's list", shop.worker)  # fmt: skip
    assert len(shop.recommendations("bob")) == 3  # refilled from what is available


def test_a_bad_catalogue_record_is_dead_lettered_once_and_counted(shop: Shop) -> None:
    letters = [
        DeadLetter.model_validate_json(m.value)
        for m in read_topic(shop.bootstrap, shop.env["CRM_DLQ_TOPIC"])
    ]

    assert [(letter.reason, letter.field, letter.source.topic) for letter in letters] == [
        ("missing_field", "name", shop.env["CRM_ITEMS_TOPIC"])
    ]
    metrics = read_metrics(shop.worker.port)
    assert metrics["crm_scorer_catalogue_records_total{outcome=refused}"] == 1.0
    assert metrics["crm_scorer_catalogue_items{available=false}"] == 1.0
