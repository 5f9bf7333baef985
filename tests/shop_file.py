"""A small shop's transactions in Online Retail's layout, made up from a seed: customers who
buy at their own pace from their own corner of the catalogue, and stop at their own time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"


def write_shop_file(
    path: Path,
    *,
    customers: int = 120,
    items: int = 40,
    start: datetime = datetime(2011, 1, 1, tzinfo=UTC),
    end: datetime = datetime(2011, 12, 1, tzinfo=UTC),
    seed: int = 7,
) -> Path:
    """Write the file and return its path; rows are in time order."""
    rng = np.random.default_rng(seed)
    prices = np.round(rng.uniform(0.5, 12.0, items), 2)
    span = (end - start).total_seconds()
    rows = []
    for customer in range(customers):
        corner = rng.choice(items, size=8, replace=False)  # the items this customer likes
        per_day = rng.gamma(2.0, 0.02)  # baskets a day
        first = rng.uniform(0, 0.5 * span)
        stop = first + rng.uniform(0.1, 1.2) * span  # past the end: never stops
        when = first
        while when < min(stop, span):
            lines = rng.integers(1, 4)
            for item in rng.choice(corner, size=lines, replace=False):
                quantity = int(rng.integers(1, 13))
                rows.append((when, 10_000 + customer, int(item), quantity))
            when += rng.exponential(86_400 / per_day)
    rows.sort()
    with path.open("w") as handle:
        handle.write(HEADER)
        for invoice, (when, customer, item, quantity) in enumerate(rows):
            moment = (start + timedelta(seconds=when)).strftime("%Y-%m-%d %H:%M:%S")
            handle.write(f"{500_000 + invoice},P{item:03d},ITEM {item},{quantity},{moment},"
                         f"{prices[item]},{customer},United Kingdom\n")  # fmt: skip
    return path
