"""Transaction rows turned into events a block at a time, by column (pyarrow arrays in).

A block's rows are checked and converted column by column: times once per distinct text,
amounts in whole cents, ids by string kernels. A row the columns cannot vouch for (non-ASCII
or control characters, a number in an unusual form, anything the per-row rules would refuse
for a reason other than a missing customer or a non-product) goes through
:func:`schemas.transactions.event_from_row`, so every row becomes the same event, or is refused
for the same reason with the same message, as it would one at a time.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.events import EARLIEST_EVENT_TIME, LATEST_EVENT_TIME
from schemas.transactions import ColumnMapping, RowRejected, event_from_row, iso_time_of

__all__ = ["EventColumns", "Rejection", "events_from_columns"]

logger = logging.getLogger(__name__)

_PRINTABLE = r"^[\x20-\x7e]*$"  # ASCII without control characters: strip() and upper() agree
_FLOAT_ID = r"^([0-9]+)\.0*$"  # "17850.0" is customer "17850"
_QUANTITY = r"^-?[0-9]{1,9}$"
_PRICE = r"^[0-9]{1,10}(\.[0-9]{1,2})?$"  # whole cents: units x price is exact
_AMOUNT = r"^-?[0-9]{1,12}(\.[0-9]{1,6})?$"
_MAX_ID = 256  # an event's identifiers are at most this long (schemas.events.Identifier)
_MAX_QUANTITY = 1_000_000
_MAX_MONEY = 1e12
_EXACT = 2**53  # cents up to here convert to a float exactly


@dataclass(frozen=True, slots=True)
class EventColumns:
    """Purchase and return events made from rows, one entry per event in each column.

    >>> one = EventColumns.of([(4, "536365-4", "17850", False, "2010-12-01T08:26:00+00:00",
    ...                         "85123A", 15.3, 6)])
    >>> one.documents()[0]["event_id"], one.times.tolist(), len(one)
    ('536365-4', [1291191960.0], 1)
    """

    rows: np.ndarray  #: data row (1-based) each event came from
    times: np.ndarray  #: event time, epoch seconds
    timestamps: list[str]  #: the same time, ISO-8601 UTC as the event's document writes it
    event_ids: list[str]
    customer_ids: list[str]
    item_ids: list[str]
    returns: np.ndarray  #: True for a return, False for a purchase
    amounts: np.ndarray
    quantities: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def of(cls, events: Sequence[tuple[int, str, str, bool, str, str, float, int]]) -> EventColumns:
        """Columns of ``(row, event_id, customer_id, is_return, timestamp, item_id, amount,
        quantity)`` tuples."""
        columns = list(zip(*events, strict=True)) or [() for _ in range(8)]
        rows, event_ids, customers, returns, stamps, items, amounts, quantities = columns
        times = [datetime.fromisoformat(stamp).timestamp() for stamp in stamps]
        return cls(
            np.array(rows, dtype=np.int64), np.array(times, dtype=float), list(stamps),
            list(event_ids), list(customers), list(items), np.array(returns, dtype=bool),
            np.array(amounts, dtype=float), np.array(quantities, dtype=np.int64),
        )  # fmt: skip

    @classmethod
    def concat(cls, parts: Sequence[EventColumns]) -> EventColumns:
        """One set of columns holding ``parts``' events in order."""
        if not parts:
            return cls.of([])
        return cls(
            np.concatenate([p.rows for p in parts]),
            np.concatenate([p.times for p in parts]),
            [t for p in parts for t in p.timestamps],
            [e for p in parts for e in p.event_ids],
            [c for p in parts for c in p.customer_ids],
            [i for p in parts for i in p.item_ids],
            np.concatenate([p.returns for p in parts]),
            np.concatenate([p.amounts for p in parts]),
            np.concatenate([p.quantities for p in parts]),
        )

    def take(self, order: np.ndarray) -> EventColumns:
        """The events at positions ``order``."""
        at = order.tolist()
        return EventColumns(
            self.rows[order], self.times[order], [self.timestamps[i] for i in at],
            [self.event_ids[i] for i in at], [self.customer_ids[i] for i in at],
            [self.item_ids[i] for i in at], self.returns[order], self.amounts[order],
            self.quantities[order],
        )  # fmt: skip

    def in_time_order(self) -> EventColumns:
        """The events sorted by event time, rows of the same time in file order."""
        return self._sorted(np.lexsort((self.rows, self.times)))

    def in_row_order(self) -> EventColumns:
        """The events sorted by the row they came from."""
        return self._sorted(np.argsort(self.rows, kind="stable"))

    def _sorted(self, order: np.ndarray) -> EventColumns:
        if (order == np.arange(len(order))).all():
            return self
        return self.take(order)

    def documents(self) -> list[dict[str, Any]]:
        """The events in the README's format (what a replay sends)."""
        return [
            {
                "event_id": event_id,
                "customer_id": customer_id,
                "type": "return" if is_return else "purchase",
                "timestamp": timestamp,
                "item_id": item_id,
                "amount": amount,
                "quantity": quantity,
            }
            for event_id, customer_id, is_return, timestamp, item_id, amount, quantity in zip(
                self.event_ids,
                self.customer_ids,
                self.returns.tolist(),
                self.timestamps,
                self.item_ids,
                self.amounts.tolist(),
                self.quantities.tolist(),
                strict=True,
            )
        ]


@dataclass(frozen=True, slots=True)
class Rejection:
    """``count`` rows refused for ``reason``; ``row`` is the first of them, ``message`` why."""

    reason: str
    row: int
    message: str
    count: int = 1


def events_from_columns(
    columns: Mapping[str, pa.StringArray], rows: np.ndarray, mapping: ColumnMapping
) -> tuple[EventColumns, list[Rejection]]:
    """The events of a block of rows, and the rows refused (first row first).

    ``columns`` holds the text of every field ``mapping`` maps (by field name, each row's
    value as the file has it) and ``rows`` each row's number; the events come out in row order.

    >>> block = {"customer_id": pa.array(["17850.0", "", "13047"]),
    ...          "timestamp": pa.array(["2010-12-01 08:26:00"] * 3),
    ...          "item_id": pa.array(["85123A", "22139", "POST"]),
    ...          "quantity": pa.array(["6", "56", "1"]),
    ...          "unit_price": pa.array(["2.55", "0", "18"]),
    ...          "invoice": pa.array(["536365", "536414", "536365"])}
    >>> from schemas.transactions import PRESETS
    >>> retail = PRESETS["online-retail"]
    >>> events, refused = events_from_columns(block, np.arange(1, 4), retail)
    >>> events.documents()
    [{'event_id': '536365-1', 'customer_id': '17850', 'type': 'purchase', \
'timestamp': '2010-12-01T08:26:00+00:00', 'item_id': '85123A', 'amount': 15.3, 'quantity': 6}]
    >>> [(r.reason, r.row, r.count) for r in refused]
    [('no_customer', 2, 1), ('not_a_product', 3, 1)]
    """
    text = {field: pc.ascii_trim(column, " ") for field, column in columns.items()}
    eligible = np.ones(len(rows), dtype=bool)
    for column in columns.values():
        eligible &= _array(pc.match_substring_regex(column, _PRINTABLE))
    customers = pc.replace_substring_regex(text["customer_id"], _FLOAT_ID, r"\1")
    customer_length = _array(pc.utf8_length(customers))
    no_customer = eligible & (customer_length == 0)
    non_products = pa.array(sorted(mapping.non_products), pa.string())
    not_a_product = eligible & ~no_customer
    not_a_product &= _array(pc.is_in(pc.ascii_upper(text["item_id"]), non_products))
    times, stamps, time_ok = _times(text["timestamp"], mapping.time_formats)
    quantities, quantity_ok = _quantities(text["quantity"])
    is_return = quantities < 0
    if "invoice" in text:
        is_return |= _array(pc.starts_with(text["invoice"], "C"))
    amounts, amount_ok = _amounts(text, np.abs(quantities), is_return)
    item_length = _array(pc.utf8_length(text["item_id"]))
    good = eligible & ~no_customer & ~not_a_product & time_ok & quantity_ok & amount_ok
    good &= _event_ids_fit(text, rows) & (customer_length <= _MAX_ID)
    good &= (item_length > 0) & (item_length <= _MAX_ID)
    at = np.flatnonzero(good)
    events = EventColumns(
        rows[at], times[at], _strings(stamps, at), _event_ids(text, rows, at),
        _interned(customers, at), _interned(text["item_id"], at), is_return[at], amounts[at],
        np.abs(quantities[at]),
    )  # fmt: skip
    rejections = []
    if no_customer.any():
        first = int(np.argmax(no_customer))
        message = f"no customer id in column {mapping.customer_id!r}"
        rejections.append(
            Rejection("no_customer", int(rows[first]), message, int(no_customer.sum()))
        )
    if not_a_product.any():
        first = int(np.argmax(not_a_product))
        message = f"item {text['item_id'][first].as_py()!r} is not a product"
        count = int(not_a_product.sum())
        rejections.append(Rejection("not_a_product", int(rows[first]), message, count))
    one_by_one = np.flatnonzero(~good & ~no_customer & ~not_a_product)
    if len(one_by_one):
        by_column = {
            field: column.take(one_by_one).to_pylist() for field, column in columns.items()
        }
        source = mapping.columns()
        records = [
            (int(rows[at]), {source[field]: values[k] for field, values in by_column.items()})
            for k, at in enumerate(one_by_one.tolist())
        ]
        extra, refused = events_from_rows(records, mapping)
        events = EventColumns.concat([events, extra]).in_row_order()
        rejections.extend(refused)
    rejections.sort(key=lambda rejection: rejection.row)
    return events, rejections


def events_from_rows(
    records: Sequence[tuple[int, Mapping[str, object]]], mapping: ColumnMapping
) -> tuple[EventColumns, list[Rejection]]:
    """The events of ``(row, {column: text})`` records converted one at a time
    (:func:`~schemas.transactions.event_from_row`), and the rows refused, in row order."""
    accepted, rejections = [], []
    for row, record in records:
        try:
            document, _ = event_from_row(record, row, mapping)
        except RowRejected as exc:
            rejections.append(Rejection(exc.reason, row, exc.message))
            continue
        accepted.append(
            (row, document["event_id"], document["customer_id"], document["type"] == "return",
             document["timestamp"], document["item_id"], document["amount"], document["quantity"])
        )  # fmt: skip
    return EventColumns.of(accepted), rejections


def _array(values: pa.Array) -> np.ndarray:
    """A boolean or numeric arrow array (no nulls) as numpy."""
    return values.to_numpy(zero_copy_only=False)


def _times(
    text: pa.StringArray, formats: tuple[str, ...]
) -> tuple[np.ndarray, tuple[list[str], np.ndarray], np.ndarray]:
    """Epoch seconds of each row's time, its ISO-8601 text (distinct texts, index of each
    row's) and whether it is one an event may have; every distinct text is parsed once."""
    encoded = pc.dictionary_encode(text)
    distinct = encoded.dictionary.to_pylist()
    stamps = [""] * len(distinct)
    epochs = np.full(len(distinct), np.nan)
    valid = np.zeros(len(distinct), dtype=bool)
    for i, value in enumerate(distinct):
        try:
            stamp = iso_time_of(value, formats)
        except RowRejected:
            continue
        moment = datetime.fromisoformat(stamp)
        stamps[i], epochs[i] = stamp, moment.timestamp()
        valid[i] = EARLIEST_EVENT_TIME <= moment < LATEST_EVENT_TIME
    index = _array(encoded.indices)
    return epochs[index], (stamps, index), valid[index]


def _quantities(text: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's quantity (0 where it is not a plain integer), and whether it is one an event
    may have (not 0, at most a million units)."""
    plain = _array(pc.match_substring_regex(text, _QUANTITY))
    quantities = np.zeros(len(text), dtype=np.int64)
    quantities[plain] = _array(pc.cast(text.filter(pa.array(plain)), pa.int64()))
    units = np.abs(quantities)
    return quantities, plain & (units > 0) & (units <= _MAX_QUANTITY)


def _amounts(
    text: Mapping[str, pa.StringArray], units: np.ndarray, is_return: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """What each line cost, as :func:`~schemas.transactions.event_from_row` reckons it, and
    whether the columns could tell: the amount column (its size, for a return), else units
    x unit price in whole cents."""
    if "amount" in text:
        plain = _array(pc.match_substring_regex(text["amount"], _AMOUNT))
        amounts = np.zeros(len(units))
        amounts[plain] = _array(pc.cast(text["amount"].filter(pa.array(plain)), pa.float64()))
        amounts = np.where(is_return, np.abs(amounts), amounts)
        return amounts, plain & (amounts >= 0) & (amounts <= _MAX_MONEY)
    plain = _array(pc.match_substring_regex(text["unit_price"], _PRICE))
    prices = np.zeros(len(units))
    prices[plain] = _array(pc.cast(text["unit_price"].filter(pa.array(plain)), pa.float64()))
    cents = np.rint(prices * 100.0).astype(np.int64) * units
    amounts = cents / 100.0  # correctly rounded, as float(Decimal) of the exact amount is
    return amounts, plain & (cents <= _EXACT) & (amounts <= _MAX_MONEY)


def _event_ids_fit(text: Mapping[str, pa.StringArray], rows: np.ndarray) -> np.ndarray:
    """Whether each row's event id (see :func:`_event_ids`) is one an event may have."""
    if "event_id" in text:
        length = _array(pc.utf8_length(text["event_id"]))
        return (length > 0) & (length <= _MAX_ID)
    digits = np.searchsorted(10 ** np.arange(1, 19), rows, side="right") + 1
    prefix = np.full(len(rows), len("row"))
    if "invoice" in text:
        invoice = _array(pc.utf8_length(text["invoice"]))
        prefix = np.where(invoice > 0, invoice, prefix)
    return prefix + 1 + digits <= _MAX_ID


def _event_ids(text: Mapping[str, pa.StringArray], rows: np.ndarray, at: np.ndarray) -> list[str]:
    """The event ids of the rows at ``at``: the event_id column, else ``{invoice}-{row}``,
    else ``row-{row}``."""
    if "event_id" in text:
        return text["event_id"].take(pa.array(at)).to_pylist()
    numbers = rows[at].tolist()
    if "invoice" not in text:
        return [f"row-{row}" for row in numbers]
    invoices = text["invoice"].take(pa.array(at)).to_pylist()
    return [
        f"{invoice}-{row}" if invoice else f"row-{row}"
        for invoice, row in zip(invoices, numbers, strict=True)
    ]


def _strings(values: tuple[list[str], np.ndarray], at: np.ndarray) -> list[str]:
    distinct, index = values
    return [distinct[i] for i in index[at].tolist()]


def _interned(text: pa.StringArray, at: np.ndarray) -> list[str]:
    """The texts at ``at``, one string object per distinct text: a file repeats each customer
    and item thousands of times."""
    encoded = pc.dictionary_encode(text.take(pa.array(at)))
    distinct = [sys.intern(value) for value in encoded.dictionary.to_pylist()]
    return [distinct[i] for i in _array(encoded.indices).tolist()]
