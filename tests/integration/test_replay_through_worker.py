"""A transactions file replayed through a running worker: every buyer ends up scored in Redis."""

from __future__ import annotations

import csv
import gzip
import io
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from schemas.scores import Score
from schemas.transactions import PRESETS
from streams.commands.demo import read_metrics
from streams.commands.transactions import load_transactions
from tests.support import crm, handled_events, start_worker, wait_until, worker_env

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "datasets" / "online_retail" / "online_retail.csv.gz"
HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
ROWS = 4_000


def retail_slice() -> str:
    """The first rows of the real Online Retail file, or rows in its layout when it is absent."""
    if DATA.is_file():
        with gzip.open(DATA, "rt", encoding="utf-8") as handle:
            return "".join(line for _, line in zip(range(ROWS + 1), handle, strict=False))
    lines = [HEADER]
    start = datetime(2010, 12, 1, 8, 0)
    for n in range(ROWS):
        customer = 12000 + n % 97
        when = start + timedelta(hours=n // 7)
        invoice = f"C{500000 + n // 7}" if n % 53 == 0 else str(500000 + n // 7)
        quantity = -1 if invoice.startswith("C") else 1 + n % 5
        lines.append(
            f"{invoice},SKU{n % 41},ITEM,{quantity},{when:%Y-%m-%d %H:%M:%S},2.5,{customer},UK"
        )
    return "\n".join(lines) + "\n"


def baskets_per_buyer(text: str) -> dict[str, int]:
    """The oracle: distinct purchase times of each customer with a purchase."""
    times: dict[str, set[str]] = defaultdict(set)
    fees = PRESETS["online-retail"].non_products
    for row in csv.DictReader(io.StringIO(text)):
        customer = row["CustomerID"].removesuffix(".0")
        bought = not row["InvoiceNo"].startswith("C") and int(row["Quantity"]) > 0
        if customer and bought and row["StockCode"].upper() not in fees:
            times[customer].add(row["InvoiceDate"])
    return {customer: len(stamps) for customer, stamps in times.items()}


@pytest.mark.integration
def test_every_customer_with_a_purchase_has_a_score_after_a_replay(
    broker: Any, redis_server: Any, tmp_path: Path
) -> None:
    text = retail_slice()
    source = tmp_path / "retail.csv"
    source.write_text(text)
    env = worker_env(broker, redis_server.url, "replayed", tmp_path)
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        result = crm("replay", str(source), "--preset", "online-retail", env=env, timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        sent = len(load_transactions(source, preset="online-retail").events)
        wait_until(lambda: handled_events(worker) >= sent, 240, f"{sent} events handled", worker)
        wait_until(
            lambda: read_metrics(worker.port)["crm_scorer_redis_pending_scores"] == 0,
            30,
            "pending scores to reach Redis",
            worker,
        )
        client = redis.Redis.from_url(redis_server.url)
        expected = baskets_per_buyer(text)
        for customer, baskets in expected.items():
            fields = client.hgetall(env["CRM_REDIS_PREFIX"] + customer)
            assert fields, f"customer {customer} bought but has no score"
            score = Score.from_redis(fields)
            assert score.orders == baskets, customer
            assert 0.0 <= score.churn_risk <= 1.0
        metrics = read_metrics(worker.port)
        assert metrics.get("crm_scorer_dead_letters_total", 0.0) == 0.0
    finally:
        worker.stop()
