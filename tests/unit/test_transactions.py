"""Unit tests of reading transactions files into events: what ``crm-scorer replay`` would send.

Every row either becomes an event in the README's format or is counted under a reason; the
events come out in event-time order with ids that a second replay repeats.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from schemas.events import validate_event
from schemas.transaction_columns import events_from_columns, events_from_rows
from schemas.transactions import ColumnMapping, MappingError
from streams.commands import csv_blocks
from streams.commands.transactions import (
    TransactionFileError,
    Transactions,
    load_transactions,
    loaded_events,
    read_transactions,
    resolve_mapping,
)

RETAIL_HEADER = (
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
)

#: Online Retail lines covering every rule of the preset, in file order (data rows 1..10).
RETAIL_ROWS = (
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,"
    "United Kingdom\n"
    "C536379,D,Discount,-1,2010-12-01 09:41:00,27.50,14527,United Kingdom\n"
    "C536383,35004C,SET OF 3 COLOURED  FLYING DUCKS,-1,2010-12-01 09:49:00,4.65,15311,"
    "United Kingdom\n"
    "536414,22139,,56,2010-12-01 11:52:00,0,,United Kingdom\n"
    "536365,POST,POSTAGE,1,2010-12-01 08:26:00,18.00,17850,United Kingdom\n"
    "536366,22633,HAND WARMER UNION JACK,6,yesterday,1.85,17850,United Kingdom\n"
    "536367,84879,ASSORTED COLOUR BIRD ORNAMENT,0,2010-12-01 08:34:00,1.69,13047,"
    "United Kingdom\n"
    "A563186,22423,REGENCY CAKESTAND 3 TIER,1,2011-08-12 14:51:00,-11062.06,13047,"
    "United Kingdom\n"
    '536367,22745,"POPPY\'S PLAYHOUSE, BEDROOM",6,2010-12-01 08:34:00,2.10,13047,'
    "United Kingdom\n"
    "536368,22960,JAM MAKING SET WITH JARS,-2,2010-12-01 08:34:00,4.25,13047.0,United Kingdom\n"
)

#: What those lines become, in event-time order (rows 9 and 10 share a time: file order).
RETAIL_EVENTS = [
    {
        "event_id": "536365-1",
        "customer_id": "17850",
        "type": "purchase",
        "timestamp": "2010-12-01T08:26:00+00:00",
        "item_id": "85123A",
        "amount": 15.3,
        "quantity": 6,
    },
    {
        "event_id": "536367-9",
        "customer_id": "13047",
        "type": "purchase",
        "timestamp": "2010-12-01T08:34:00+00:00",
        "item_id": "22745",
        "amount": 12.6,
        "quantity": 6,
    },
    {
        "event_id": "536368-10",
        "customer_id": "13047",
        "type": "return",
        "timestamp": "2010-12-01T08:34:00+00:00",
        "item_id": "22960",
        "amount": 8.5,
        "quantity": 2,
    },
    {
        "event_id": "C536383-3",
        "customer_id": "15311",
        "type": "return",
        "timestamp": "2010-12-01T09:49:00+00:00",
        "item_id": "35004C",
        "amount": 4.65,
        "quantity": 1,
    },
]

RETAIL_REJECTS = {
    "not_a_product": 2,
    "no_customer": 1,
    "bad_timestamp": 1,
    "bad_quantity": 1,
    "bad_price": 1,
}

REAL_FILE = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "datasets"
    / "online_retail"
    / "online_retail.csv.gz"
)


def write(path: Path, text: str) -> Path:
    """``text`` written to ``path`` (gzipped when the name ends in .gz)."""
    data = text.encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def documents(transactions: Transactions) -> list[dict[str, Any]]:
    """The event dicts a replay would send, in order."""
    return [loaded.document for loaded in transactions.events]


def event_ids(source: Path, *maps: str) -> list[str]:
    """The event ids of ``source`` read with the Online Retail preset and ``maps``."""
    loaded = load_transactions(source, preset="online-retail", maps=maps)
    return [event.document["event_id"] for event in loaded.events]


def jsonl(*lines: Any) -> str:
    """JSON lines: dicts serialised, strings kept as written."""
    return "".join(
        (line if isinstance(line, str) else orjson.dumps(line).decode()) + "\n" for line in lines
    )


# --- mappings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("customer=CustomerID", "unknown field 'customer' in 'customer=CustomerID'"),
        ("customer_id=CustomerID,timestamp", "'timestamp' has no '='"),
        ("customer_id=", "no column name in 'customer_id='"),
        ("item_id=A,item_id=B", "item_id is mapped twice: to 'A' and to 'B'"),
    ],
)
def test_a_bad_mapping_names_the_bad_part(text: str, message: str) -> None:
    with pytest.raises(MappingError) as caught:
        ColumnMapping.parse(text)
    assert message in str(caught.value)


def test_maps_apply_over_a_preset_in_order(tmp_path: Path) -> None:
    renamed = RETAIL_HEADER.replace("CustomerID", "Client").replace("UnitPrice", "Price")
    source = write(tmp_path / "renamed.csv", renamed + RETAIL_ROWS)
    loaded = load_transactions(
        source, preset="online-retail", maps=["customer_id=Client", "unit_price=Price"]
    )
    assert documents(loaded) == RETAIL_EVENTS


def test_a_csv_mapping_without_a_needed_field_says_which(tmp_path: Path) -> None:
    source = write(tmp_path / "sales.csv", "user,when,sku,qty,price\nc1,2025-01-01,a,1,2\n")
    with pytest.raises(MappingError) as caught:
        load_transactions(source, maps=["customer_id=user,timestamp=when,item_id=sku"])
    assert "no column for quantity, unit_price or amount" in str(caught.value)
    assert "user, when, sku, qty, price" in str(caught.value)


def test_a_mapped_column_missing_from_the_header_is_named(tmp_path: Path) -> None:
    source = write(tmp_path / "retail.csv", RETAIL_HEADER + RETAIL_ROWS)
    with pytest.raises(MappingError) as caught:
        load_transactions(source, preset="online-retail", maps=["customer_id=Client"])
    assert "has no column Client (customer_id)" in str(caught.value)


def test_a_csv_named_like_the_event_fields_needs_no_flags(tmp_path: Path) -> None:
    source = write(
        tmp_path / "sales.csv",
        "customer_id,timestamp,item_id,quantity,amount,note\n"
        "c-1,2025-03-01T10:00:00Z,sku-1,2,25.00,x\n"
        "c-2,1740823200,sku-2,-1,-9.5,y\n",
    )
    assert documents(load_transactions(source)) == [
        {
            "event_id": "row-1",
            "customer_id": "c-1",
            "type": "purchase",
            "timestamp": "2025-03-01T10:00:00+00:00",
            "item_id": "sku-1",
            "amount": 25.0,
            "quantity": 2,
        },
        {
            "event_id": "row-2",
            "customer_id": "c-2",
            "type": "return",
            "timestamp": "2025-03-01T10:00:00+00:00",
            "item_id": "sku-2",
            "amount": 9.5,
            "quantity": 1,
        },
    ]


# --- the Online Retail preset ----------------------------------------------------------------


def test_online_retail_rows_become_events_or_are_counted_by_reason(tmp_path: Path) -> None:
    loaded = load_transactions(
        write(tmp_path / "retail.csv", RETAIL_HEADER + RETAIL_ROWS), preset="online-retail"
    )
    assert documents(loaded) == RETAIL_EVENTS
    report = loaded.report
    assert dict(report.reasons) == RETAIL_REJECTS
    assert (report.rows, report.accepted, report.rejected) == (10, 4, 6)
    assert {reason: example.row for reason, example in report.examples.items()} == {
        "not_a_product": 2,
        "no_customer": 4,
        "bad_timestamp": 6,
        "bad_quantity": 7,
        "bad_price": 8,
    }
    assert "'yesterday'" in report.examples["bad_timestamp"].message
    for loaded_event in loaded.events:
        assert loaded_event.event == validate_event(loaded_event.document)
        assert loaded_event.time == loaded_event.event.timestamp.timestamp()


def test_events_come_out_in_event_time_order(tmp_path: Path) -> None:
    rows = [
        "3,sku-c,1,2011-01-03 00:00:00,1.00,c1",
        "1,sku-a,1,2011-01-01 00:00:00,1.00,c1",
        "2,sku-b1,1,2011-01-02 00:00:00,1.00,c2",
        "2,sku-b2,1,2011-01-02 00:00:00,1.00,c1",
    ]
    source = write(
        tmp_path / "shuffled.csv",
        "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID\n" + "\n".join(rows),
    )
    loaded = load_transactions(source, preset="online-retail")
    assert [e.document["item_id"] for e in loaded.events] == ["sku-a", "sku-b1", "sku-b2", "sku-c"]
    assert [e.row for e in loaded.events] == [2, 3, 4, 1]


def test_a_gzipped_file_reads_like_the_plain_one(tmp_path: Path) -> None:
    plain = load_transactions(
        write(tmp_path / "retail.csv", RETAIL_HEADER + RETAIL_ROWS), preset="online-retail"
    )
    zipped = load_transactions(
        write(tmp_path / "retail.csv.gz", RETAIL_HEADER + RETAIL_ROWS), preset="online-retail"
    )
    assert documents(zipped) == documents(plain) == RETAIL_EVENTS
    assert zipped.report == plain.report


def test_a_replay_of_the_same_file_repeats_the_event_ids(tmp_path: Path) -> None:
    source = write(tmp_path / "retail.csv", RETAIL_HEADER + RETAIL_ROWS)
    first = event_ids(source)
    assert first == ["536365-1", "536367-9", "536368-10", "C536383-3"]
    assert event_ids(source) == first
    assert event_ids(source, "invoice=Country")[0] == "United Kingdom-1"
    assert event_ids(source, "event_id=Description")[0] == "WHITE HANGING HEART T-LIGHT HOLDER"


def test_a_short_row_counts_as_a_missing_column(tmp_path: Path) -> None:
    source = write(
        tmp_path / "short.csv",
        "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID\n"
        "1,sku-a,1,2011-01-01 00:00:00,1.00,c1\n"
        "2,sku-b,1,2011-01-01 00:00:00\n",
    )
    loaded = load_transactions(source, preset="online-retail")
    assert len(loaded.events) == 1
    assert dict(loaded.report.reasons) == {"missing_column": 1}
    assert "CustomerID" in loaded.report.examples["missing_column"].message


def test_the_spreadsheet_time_layout_of_online_retail_is_read(tmp_path: Path) -> None:
    source = write(
        tmp_path / "export.csv",
        "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID\n"
        "536365,85123A,6,12/1/2010 8:26,2.55,17850\n",
    )
    (event,) = load_transactions(source, preset="online-retail").events
    assert event.document["timestamp"] == "2010-12-01T08:26:00+00:00"


# --- JSON lines ------------------------------------------------------------------------------


def test_json_lines_of_readme_events_need_no_flags(tmp_path: Path) -> None:
    purchase = {**RETAIL_EVENTS[0], "campaign": "spring"}  # extra fields are kept
    view = {"event_id": "evt-0", "customer_id": "c-7", "type": "view", "item_id": "sku-17"}
    view["timestamp"] = 1291000000  # epoch seconds, earlier than the purchase
    source = write(
        tmp_path / "events.jsonl",
        jsonl(
            purchase,
            "",
            view,
            {**purchase, "event_id": "evt-2", "amount": "25.0"},
            {**view, "event_id": "evt-3", "type": "wishlist_add"},
            "{not json",
            [1, 2],
        ),
    )
    loaded = load_transactions(source)
    assert documents(loaded) == [view, purchase]
    assert [e.row for e in loaded.events] == [3, 1]
    assert dict(loaded.report.reasons) == {
        "wrong_type": 1,
        "unknown_type": 1,
        "not_json": 1,
        "not_an_object": 1,
    }
    assert loaded.report.rows == 6
    assert loaded.report.examples["wrong_type"].row == 4
    assert loaded.report.examples["wrong_type"].message.startswith("amount:")


def test_maps_rename_the_fields_of_json_events(tmp_path: Path) -> None:
    written = {"id": "e1", "user": "c1", "type": "view", "at": 1740823200, "item_id": "sku-1"}
    source = write(tmp_path / "events.ndjson.gz", jsonl(written))
    loaded = load_transactions(source, maps=["event_id=id,customer_id=user", "timestamp=at"])
    renamed = {"type": "view", "item_id": "sku-1", "event_id": "e1", "customer_id": "c1"}
    assert documents(loaded) == [{**renamed, "timestamp": 1740823200}]


def test_json_rows_in_the_online_retail_layout_read_like_csv(tmp_path: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(RETAIL_HEADER + RETAIL_ROWS)))
    rows[0]["CustomerID"] = 17850.0  # as pandas writes an id column with gaps
    rows[0]["Quantity"] = 6
    source = write(tmp_path / "retail.jsonl", jsonl(*rows))
    loaded = load_transactions(source, preset="online-retail")
    assert documents(loaded) == RETAIL_EVENTS
    assert dict(loaded.report.reasons) == RETAIL_REJECTS


# --- files that cannot be read ---------------------------------------------------------------


def test_unreadable_files_raise_errors_that_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(TransactionFileError, match="no such file"):
        load_transactions(tmp_path / "absent.csv", preset="online-retail")
    with pytest.raises(TransactionFileError, match="pass --format csv or --format jsonl"):
        load_transactions(write(tmp_path / "sales.txt", RETAIL_HEADER), preset="online-retail")
    truncated = gzip.compress((RETAIL_HEADER + RETAIL_ROWS).encode())[:-20]
    (tmp_path / "cut.csv.gz").write_bytes(truncated)
    with pytest.raises(TransactionFileError, match=r"cannot read .*cut\.csv\.gz"):
        load_transactions(tmp_path / "cut.csv.gz", preset="online-retail")
    (tmp_path / "latin1.csv").write_bytes((RETAIL_HEADER + "1,£,1,x,1,1,1,UK\n").encode("latin-1"))
    with pytest.raises(TransactionFileError, match="after row 0: invalid start byte"):
        load_transactions(tmp_path / "latin1.csv", preset="online-retail")
    with pytest.raises(TransactionFileError, match="is empty"):
        load_transactions(write(tmp_path / "empty.csv", ""), preset="online-retail")
    with pytest.raises(MappingError, match="unknown preset 'retail'"):
        load_transactions(tmp_path / "empty.csv", preset="retail")


def test_format_can_be_forced(tmp_path: Path) -> None:
    source = write(tmp_path / "export.txt", RETAIL_HEADER + RETAIL_ROWS)
    loaded = load_transactions(source, preset="online-retail", file_format="csv")
    assert documents(loaded) == RETAIL_EVENTS


# --- the real Online Retail file -------------------------------------------------------------


@pytest.mark.skipif(
    not REAL_FILE.is_file(), reason=f"the Online Retail data set is not at {REAL_FILE}"
)
def test_the_first_rows_of_the_real_online_retail_file(tmp_path: Path) -> None:
    with gzip.open(REAL_FILE, "rt", encoding="utf-8", newline="") as handle:
        lines = [line for _, line in zip(range(5_001), handle, strict=False)]
    source = write(tmp_path / "head.csv", "".join(lines))
    source_rows = list(csv.DictReader(io.StringIO("".join(lines))))
    loaded = load_transactions(source, preset="online-retail")
    report = loaded.report
    assert report.rows == len(source_rows) == 5_000
    assert len(loaded.events) + report.rejected == report.rows
    assert report.reasons["no_customer"] == sum(1 for row in source_rows if not row["CustomerID"])
    assert set(report.reasons) <= {"no_customer", "not_a_product"}
    times = [e.time for e in loaded.events]
    assert times == sorted(times)
    for event in loaded.events:
        assert validate_event(event.document) == event.event
        row = source_rows[event.row - 1]
        assert event.document["customer_id"] == row["CustomerID"]
        assert (event.document["type"] == "return") == row["InvoiceNo"].startswith("C")
        assert event.document["quantity"] == abs(int(row["Quantity"]))


# --- by column, a block at a time ------------------------------------------------------------

#: Texts each column draws from: plain values and every kind the columns hand to the per-row
#: rules (spaces, non-ASCII, control characters, unusual numbers, out-of-range values).
TRICKY = {
    "CustomerID": ["17850", "17850.0", " 12583 ", "", "  ", "١٢٣.0", "c\x1f", "x" * 257, ".0"],
    "StockCode": ["85123A", "POST", "post", " D ", "gift_0001_10", "", "ß", "x" * 257, "22139"],
    "InvoiceDate": ["2010-12-01 08:26:00", "12/1/2010 8:26", "2011-01-03T10:00:00+01:00",
                    "yesterday", "1291191960.5", "1989-12-31 23:00:00", " 2011-02-03 04:05:06 ",
                    "nan", "2100-01-01", ""],
    "Quantity": ["6", "-3", "0", "+5", "6.0", "1e3", "", "1000001", "-1000000", " 7 ", "007", "-0",
                 "9999999999", "1_000", "٣"],
    "UnitPrice": ["2.55", "0", "0.001", "-1", "", "1e12", "999999999999", "18", " 3.5 ", "1.005",
                  "nan", ".5", "10000000000.00", "0.1"],
    "InvoiceNo": ["536365", "C536379", "", "c123", " C99 ", "x" * 260],
}  # fmt: skip


def tricky_rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {column: rng.choice(values) if rng.random() < 0.3 else values[0]
         for column, values in TRICKY.items()}
        for _ in range(n)
    ]  # fmt: skip


@pytest.mark.parametrize("maps", [(), ("amount=UnitPrice", "event_id=InvoiceNo")])
def test_rows_converted_by_column_are_the_rows_converted_one_at_a_time(maps: tuple[str]) -> None:
    mapping = resolve_mapping("online-retail", maps)
    rows = tricky_rows(3_000, seed=len(maps))
    numbers = np.arange(1, len(rows) + 1)
    columns = {
        f: pa.array([row[column] for row in rows]) for f, column in mapping.columns().items()
    }

    events, refused = events_from_columns(columns, numbers, mapping)
    one_by_one, refused_one_by_one = events_from_rows(
        list(zip(numbers.tolist(), rows, strict=True)), mapping
    )

    assert len(events) > 300 and len(refused) > 10
    assert events.documents() == one_by_one.documents()
    assert events.times.tolist() == one_by_one.times.tolist()
    counts: Counter[str] = Counter()
    for rejection in refused:
        counts[rejection.reason] += rejection.count
    assert counts == Counter(rejection.reason for rejection in refused_one_by_one)
    firsts = {r.reason: (r.row, r.message) for r in reversed(refused)}
    assert firsts == {r.reason: (r.row, r.message) for r in reversed(refused_one_by_one)}


def test_blocks_and_uneven_rows_keep_their_row_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Short and long rows, blank lines and quoted line breaks across many small blocks: every
    event keeps the id of its row, as the csv module numbers rows."""
    monkeypatch.setattr(csv_blocks, "BLOCK_BYTES", 512)
    lines = []
    for n in range(1, 301):
        lines.append(f"{n},sku-{n % 9},1,2011-01-01 00:{n % 60:02d}:00,1.00,c{n % 13}")
        if n % 17 == 0:
            lines[-1] = f"{n},sku-short,1"  # a short row
        if n % 23 == 0:
            lines[-1] += ",an extra field"
        if n % 29 == 0:
            lines.append("")  # blank lines are not rows
        if n % 31 == 0:
            lines[-1] = f'{n},"sku\nwith a break",1,2011-01-01 00:00:00,1.00,c1'
    source = write(
        tmp_path / "ragged.csv",
        "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID\n" + "\n".join(lines),
    )
    expected = list(csv.DictReader(io.StringIO(source.read_text())))

    loaded = load_transactions(source, preset="online-retail")

    assert loaded.report.rows == len(expected) == 300
    assert loaded.report.reasons["missing_column"] == 300 // 17
    for event in loaded.events:
        assert event.document["event_id"] == f"{expected[event.row - 1]['InvoiceNo']}-{event.row}"
        assert event.document["item_id"] == expected[event.row - 1]["StockCode"]


def test_a_file_in_time_order_is_streamed_and_another_is_sorted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_blocks, "BLOCK_BYTES", 256)
    header = "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID\n"
    rows = [
        f"{n},sku-{n % 5},1,2011-01-{1 + n // 10:02d} 00:00:00,1.00,c{n % 7}" for n in range(60)
    ]
    ordered = write(tmp_path / "ordered.csv", header + "\n".join(rows))
    shuffled = write(tmp_path / "shuffled.csv", header + "\n".join(reversed(rows)))

    for path, in_order in ((ordered, True), (shuffled, False)):
        stream = read_transactions(
            path, preset="online-retail", before=datetime(2011, 1, 3, tzinfo=UTC).timestamp()
        )
        chunks = list(stream)
        loaded = load_transactions(path, preset="online-retail")

        assert stream.in_file_order is in_order
        assert len(chunks) > 3 if in_order else len(chunks) == 1  # streamed, or sorted whole
        assert [e.document for chunk in chunks for e in loaded_events(chunk)] == documents(loaded)
        assert stream.events == len(loaded.events) == 60
        assert stream.events_before == 20  # the rows of January 1 and 2
        assert stream.report == loaded.report
