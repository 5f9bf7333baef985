"""``crm-scorer replay`` as a user runs it: a transactions file onto the events topic."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.commands.local_services import free_port
from tests.support import crm, read_topic

logger = logging.getLogger(__name__)

#: Online Retail lines out of time order, with one guest row and one postage line.
RETAIL_CSV = (
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    "536370,22728,ALARM CLOCK BAKELIKE PINK,24,2010-12-01 08:45:00,3.75,12583,France\n"
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850,UK\n"
    "536414,22139,,56,2010-12-01 11:52:00,0,,UK\n"
    "C536383,35004C,SET OF 3 COLOURED  FLYING DUCKS,-1,2010-12-01 09:49:00,4.65,17850.0,UK\n"
    "536370,POST,POSTAGE,3,2010-12-01 08:45:00,18.00,12583,France\n"
)

EXPECTED = [
    ("17850", "536365-2", "purchase", "2010-12-01T08:26:00+00:00", 15.3),
    ("12583", "536370-1", "purchase", "2010-12-01T08:45:00+00:00", 90.0),
    ("17850", "C536383-4", "return", "2010-12-01T09:49:00+00:00", 4.65),
]


def table_row(out: str, first_cell: str) -> list[str]:
    """The other cells of the printed table row that starts with ``first_cell``."""
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.strip("│┃ ").split("│")]
        if cells[0] == first_cell:
            return cells[1:]
    pytest.fail(f"no table row {first_cell!r} in:\n{out}")


def replay_env(broker: Any, name: str) -> dict[str, str]:
    """Settings of a replay onto topics of its own (one partition: one total order)."""
    return {
        "CRM_BROKER": broker.url,
        "CRM_EVENTS_TOPIC": f"{name}.events",
        "CRM_ALERTS_TOPIC": f"{name}.alerts",
        "CRM_DLQ_TOPIC": f"{name}.events.dlq",
        "CRM_TOPIC_PARTITIONS": "1",
    }


@pytest.mark.integration
def test_replay_sends_the_events_in_time_order_keyed_by_customer(
    broker: Any, tmp_path: Path
) -> None:
    source = tmp_path / "retail.csv"
    source.write_text(RETAIL_CSV)
    env = replay_env(broker, "replay")
    result = crm("replay", str(source), "--preset", "online-retail", "--rate", "50/s", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    messages = read_topic(broker.bootstrap, "replay.events")
    sent = [
        (m.key.decode(), *(orjson.loads(m.value)[f] for f in ("event_id", "type", "timestamp")))
        for m in messages
    ]
    assert sent == [(c, e, t, ts) for c, e, t, ts, _ in EXPECTED]
    assert [orjson.loads(m.value)["amount"] for m in messages] == [a for *_, a in EXPECTED]
    out = result.stdout
    assert table_row(out, "events sent") == ["3 to replay.events"]
    assert table_row(out, "first event time") == ["2010-12-01T08:26:00+00:00"]
    assert table_row(out, "last event time") == ["2010-12-01T09:49:00+00:00"]
    assert table_row(out, "rows rejected") == ["2"]
    assert table_row(out, "no_customer")[:2] == ["1", "3"]  # rows, first row
    assert table_row(out, "not_a_product")[:2] == ["1", "5"]


@pytest.mark.integration
def test_replay_limit_sends_the_earliest_events_only(broker: Any, tmp_path: Path) -> None:
    source = tmp_path / "retail.csv.gz"
    source.write_bytes(gzip.compress(RETAIL_CSV.encode()))
    env = replay_env(broker, "replay-limit")
    result = crm("replay", str(source), "--preset", "online-retail", "--limit", "2", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    messages = read_topic(broker.bootstrap, "replay-limit.events")
    assert [orjson.loads(m.value)["event_id"] for m in messages] == ["536365-2", "536370-1"]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--rate", "fast", "'fast' is not a rate"),
        ("--map", "customer=CustomerID", "unknown field 'customer'"),
        ("--map", "customer_id", "'customer_id' has no '='"),
        ("--preset", "retail", "unknown preset 'retail'"),
    ],
)
def test_a_bad_option_stops_replay_before_the_broker(
    option: str, value: str, message: str, tmp_path: Path
) -> None:
    source = tmp_path / "retail.csv"
    source.write_text(RETAIL_CSV)
    nobody = f"kafka://127.0.0.1:{free_port()}"
    result = crm("replay", str(source), option, value, env={"CRM_BROKER": nobody}, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"Invalid value for '{option}'" in result.stderr
    assert message in result.stderr
    assert "Kafka" not in result.stderr + result.stdout


def test_replay_of_a_bad_file_says_what_is_wrong(tmp_path: Path) -> None:
    nobody = {"CRM_BROKER": f"kafka://127.0.0.1:{free_port()}"}
    missing = crm("replay", str(tmp_path / "absent.csv"), "--preset", "online-retail", env=nobody)
    assert missing.returncode == 2
    assert "no such file" in missing.stderr
    source = tmp_path / "sales.csv"
    source.write_text("user,when,sku\nc1,2025-01-01,a\n")
    unmapped = crm("replay", str(source), "--map", "customer_id=user", env=nobody)
    assert unmapped.returncode == 2
    assert "no column for timestamp, item_id, quantity, unit_price or amount" in unmapped.stderr
    assert "Traceback" not in missing.stderr + unmapped.stderr


def test_replay_without_a_broker_fails_naming_the_setting(tmp_path: Path) -> None:
    source = tmp_path / "retail.csv"
    source.write_text(RETAIL_CSV)
    nobody = {"CRM_BROKER": f"kafka://127.0.0.1:{free_port()}"}
    args = ("replay", str(source), "--preset", "online-retail", "--wait", "1")
    # It gives up after its --wait, not after the Kafka client's own 30 s.
    result = crm(*args, env=nobody, timeout=25)
    assert result.returncode == 2
    assert "cannot reach the Kafka broker at CRM_BROKER" in result.stderr
    assert "within 1s" in result.stderr
    assert "Traceback" not in result.stderr
