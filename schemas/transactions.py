"""Transaction rows turned into CRM events: column mappings, presets, row and line conversion."""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

from schemas.errors import CrmScorerError, EventRejected, UnknownEventType
from schemas.events import AnyEvent, parse_event_json, validate_event

__all__ = [
    "MAPPED_FIELDS",
    "PRESETS",
    "ROW_REJECT_REASONS",
    "ColumnMapping",
    "MappingError",
    "RowRejected",
    "event_from_json_line",
    "event_from_row",
    "iso_time_of",
]

logger = logging.getLogger(__name__)

#: The event fields a source column can give, in the order ``--map`` help lists them.
MAPPED_FIELDS = (
    "customer_id",
    "timestamp",
    "item_id",
    "quantity",
    "unit_price",
    "amount",
    "invoice",
    "event_id",
)
_REQUIRED_FIELDS = ("customer_id", "timestamp", "item_id", "quantity")
#: Fields of a README-format event that a mapping may rename (the others are row-only).
_RENAMED_EVENT_FIELDS = ("event_id", "customer_id", "timestamp", "item_id", "quantity", "amount")

#: Why a row did not become an event, checked in this order; a row that passes them all can
#: still be refused by :func:`schemas.events.validate_event` with one of its dead-letter reasons.
ROW_REJECT_REASONS = (
    "missing_column",
    "no_customer",
    "not_a_product",
    "bad_timestamp",
    "bad_quantity",
    "bad_price",
    "unknown_type",
)

_CENT = Decimal("0.01")
# Spreadsheets and pandas turn integer ids into floats: "17850.0" is customer "17850".
_FLOAT_ID = re.compile(r"(\d+)\.0*")


class MappingError(CrmScorerError):
    """A column mapping or preset that cannot be used; the message names the bad part."""


class RowRejected(CrmScorerError):
    """A row that cannot become an event: ``reason`` is a short code, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ColumnMapping:
    """Which source column gives each event field (None: not in the source).

    ``non_products`` are item ids (compared in upper case) that are fees or adjustments, not
    goods; ``time_formats`` are ``strptime`` formats tried when a time is not ISO-8601.
    Times without a UTC offset are read as UTC.

    >>> mapping = ColumnMapping.parse("customer_id=user, timestamp=ts, item_id=sku, quantity=qty")
    >>> mapping.customer_id, mapping.missing()
    ('user', ['unit_price or amount'])
    >>> ColumnMapping.parse("amount=total", base=mapping).missing()
    []
    """

    customer_id: str | None = None
    timestamp: str | None = None
    item_id: str | None = None
    quantity: str | None = None
    unit_price: str | None = None
    amount: str | None = None
    invoice: str | None = None
    event_id: str | None = None
    non_products: frozenset[str] = frozenset()
    time_formats: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, base: ColumnMapping | None = None) -> ColumnMapping:
        """``base`` (or an empty mapping) with the ``field=Column,...`` pairs of ``text`` applied.

        Raises :class:`MappingError` naming the bad pair. Completeness is not checked here: a
        preset or later pairs may supply the rest (see :meth:`missing`).

        >>> ColumnMapping.parse("customer_id=CustomerID,price=UnitPrice")
        Traceback (most recent call last):
        ...
        schemas.transactions.MappingError: unknown field 'price' in 'price=UnitPrice'; \
fields: customer_id, timestamp, item_id, quantity, unit_price, amount, invoice, event_id
        >>> ColumnMapping.parse("customer_id")
        Traceback (most recent call last):
        ...
        schemas.transactions.MappingError: 'customer_id' has no '=': write field=Column, \
e.g. customer_id=CustomerID
        """
        changes: dict[str, Any] = {}
        for part in (piece.strip() for piece in text.split(",")):
            if not part:
                continue
            field, equals, column = part.partition("=")
            field, column = field.strip(), column.strip()
            if not equals:
                msg = f"{part!r} has no '=': write field=Column, e.g. customer_id=CustomerID"
                raise MappingError(msg)
            if field not in MAPPED_FIELDS:
                msg = f"unknown field {field!r} in {part!r}; fields: {', '.join(MAPPED_FIELDS)}"
                raise MappingError(msg)
            if not column:
                msg = f"no column name in {part!r}: write {field}=Column"
                raise MappingError(msg)
            if field in changes:
                msg = f"{field} is mapped twice: to {changes[field]!r} and to {column!r}"
                raise MappingError(msg)
            changes[field] = column
        return dataclasses.replace(base or cls(), **changes)

    def columns(self) -> dict[str, str]:
        """``{field: column}`` of the mapped fields.

        >>> PRESETS["online-retail"].columns()["customer_id"]
        'CustomerID'
        """
        return dict(self._column_pairs)

    @functools.cached_property
    def _column_pairs(self) -> tuple[tuple[str, str], ...]:
        # Computed once: every row of a file is read through the same mapping.
        return tuple(
            (field, column)
            for field in MAPPED_FIELDS
            if (column := getattr(self, field)) is not None
        )

    def missing(self) -> list[str]:
        """The fields a transaction row needs that this mapping has no column for."""
        absent = [field for field in _REQUIRED_FIELDS if getattr(self, field) is None]
        if self.unit_price is None and self.amount is None:
            absent.append("unit_price or amount")
        return absent

    def with_defaults(self, columns: Iterable[str]) -> ColumnMapping:
        """Unmapped fields read from the column of the same name, where ``columns`` has one.

        >>> ColumnMapping(customer_id="user").with_defaults(["user", "timestamp", "x"]).columns()
        {'customer_id': 'user', 'timestamp': 'timestamp'}
        """
        present = set(columns)
        defaults: dict[str, Any] = {
            field: field
            for field in MAPPED_FIELDS
            if getattr(self, field) is None and field in present
        }
        return dataclasses.replace(self, **defaults)

    def rename(self, document: dict[str, Any]) -> dict[str, Any]:
        """A README-format event with mapped source names renamed to the event's field names.

        >>> ColumnMapping(customer_id="user").rename({"user": "c-1", "type": "view"})
        {'type': 'view', 'customer_id': 'c-1'}
        """
        renamed = dict(document)
        for field in _RENAMED_EVENT_FIELDS:
            column = getattr(self, field)
            if column is not None and column != field and column in renamed:
                renamed[field] = renamed.pop(column)
        return renamed


#: Named layouts: ``online-retail`` is the UCI Online Retail file (one line per invoice item).
PRESETS: Mapping[str, ColumnMapping] = MappingProxyType(
    {
        "online-retail": ColumnMapping(
            customer_id="CustomerID",
            timestamp="InvoiceDate",
            item_id="StockCode",
            quantity="Quantity",
            unit_price="UnitPrice",
            invoice="InvoiceNo",
            # Postage, carriage, manual entries, discounts, fees, commissions, samples, bad-debt
            # adjustments and gift vouchers: money lines, not goods a customer chose.
            non_products=frozenset(
                {
                    "POST",
                    "DOT",
                    "C2",
                    "M",
                    "D",
                    "S",
                    "B",
                    "BANK CHARGES",
                    "AMAZONFEE",
                    "CRUK",
                    "PADS",
                    "GIFT_0001_10",
                    "GIFT_0001_20",
                    "GIFT_0001_30",
                    "GIFT_0001_40",
                    "GIFT_0001_50",
                }
            ),
            # The UCI spreadsheet exported to CSV writes 12/1/2010 8:26.
            time_formats=("%m/%d/%Y %H:%M",),
        )
    }
)


def event_from_row(
    row: Mapping[str, object], row_number: int, mapping: ColumnMapping
) -> tuple[dict[str, Any], AnyEvent]:
    """The event a transaction row stands for, as a README-format dict and validated.

    ``row_number`` (1-based) makes the event id when no ``event_id`` column is mapped:
    ``{invoice}-{row}``, or ``row-{row}`` without an invoice, so a replay repeats its ids.
    An invoice starting with ``C`` or a negative quantity is a ``return``. Raises
    :class:`RowRejected` with a reason from :data:`ROW_REJECT_REASONS` or a dead-letter reason.

    >>> row = {"InvoiceNo": "C536379", "StockCode": "22556", "Quantity": "-3",
    ...        "InvoiceDate": "2010-12-01 09:41:00", "UnitPrice": "1.65", "CustomerID": "14527.0"}
    >>> document, event = event_from_row(row, 7, PRESETS["online-retail"])
    >>> document
    {'event_id': 'C536379-7', 'customer_id': '14527', 'type': 'return', \
'timestamp': '2010-12-01T09:41:00+00:00', 'item_id': '22556', 'amount': 4.95, 'quantity': 3}
    >>> event_from_row({**row, "CustomerID": ""}, 8, PRESETS["online-retail"])
    Traceback (most recent call last):
    ...
    schemas.transactions.RowRejected: no customer id in column 'CustomerID'
    """
    values = _mapped_values(row, mapping)
    customer_id = values["customer_id"]
    if not customer_id:
        msg = f"no customer id in column {mapping.customer_id!r}"
        raise RowRejected("no_customer", msg)
    if "." in customer_id and (match := _FLOAT_ID.fullmatch(customer_id)) is not None:
        customer_id = match.group(1)
    item_id = values["item_id"]
    if item_id.upper() in mapping.non_products:
        raise RowRejected("not_a_product", f"item {item_id!r} is not a product")
    timestamp = iso_time_of(values["timestamp"], mapping.time_formats)
    quantity = _quantity(values["quantity"])
    is_return = quantity < 0 or values.get("invoice", "").startswith("C")
    document = {
        "event_id": _event_id(values, row_number),
        # A file repeats each customer and item thousands of times: keep one copy of each.
        "customer_id": sys.intern(customer_id),
        "type": "return" if is_return else "purchase",
        "timestamp": timestamp,
        "item_id": sys.intern(item_id),
        "amount": _amount(values, abs(quantity), is_return),
        "quantity": abs(quantity),
    }
    return document, _validated(document)


def event_from_json_line(
    line: bytes, row_number: int = 0, mapping: ColumnMapping | None = None
) -> tuple[dict[str, Any], AnyEvent]:
    """The event of one JSON line: a README-format event, or a row for a complete ``mapping``.

    A line with a ``type`` (or any line when ``mapping`` lacks columns a row needs) is an event,
    validated as is after ``mapping`` renamed its fields; other objects go through
    :func:`event_from_row` with ``row_number``. Raises :class:`RowRejected`.

    >>> document, event = event_from_json_line(b'{"event_id": "e1", "customer_id": "c1",'
    ...     b' "type": "view", "timestamp": "2025-03-01T10:00:00Z", "item_id": "sku-1"}')
    >>> event.customer_id, document["timestamp"]
    ('c1', '2025-03-01T10:00:00Z')
    >>> event_from_json_line(b'{"event_id": "e2", "customer_id": "c1", "type": "like",'
    ...                      b' "timestamp": 1700000000}')
    Traceback (most recent call last):
    ...
    schemas.transactions.RowRejected: unknown event type 'like'
    """
    try:
        document = parse_event_json(line)
    except EventRejected as exc:
        raise RowRejected(exc.reason, exc.message) from None
    if isinstance(document, dict) and mapping is not None:
        if "type" not in document and not mapping.missing():
            return event_from_row(document, row_number, mapping)
        document = mapping.rename(document)
    return document, _validated(document)


def _validated(document: dict[str, Any]) -> AnyEvent:
    """``document`` validated as an event; a refusal becomes a :class:`RowRejected`."""
    try:
        return validate_event(document)
    except EventRejected as exc:
        raise RowRejected(exc.reason, exc.message) from None
    except UnknownEventType as exc:
        raise RowRejected("unknown_type", str(exc)) from None


def _mapped_values(row: Mapping[str, object], mapping: ColumnMapping) -> dict[str, str]:
    """``{field: text}`` of every mapped field, stripped; a column the row lacks rejects it."""
    values = {}
    for field, column in mapping._column_pairs:
        if column not in row:
            raise RowRejected("missing_column", f"no column {column!r} ({field}) in the row")
        value = row[column]
        values[field] = "" if value is None else str(value).strip()
    return values


def _event_id(values: dict[str, str], row_number: int) -> str:
    if "event_id" in values:
        return values["event_id"]
    if values.get("invoice"):
        return f"{values['invoice']}-{row_number}"
    return f"row-{row_number}"


@functools.lru_cache(maxsize=4096)
def iso_time_of(text: str, formats: tuple[str, ...]) -> str:
    """ISO-8601 UTC of a source time: ISO-8601, epoch seconds or one of ``formats``; raises
    :class:`RowRejected` (``bad_timestamp``) for any other text.

    >>> iso_time_of("12/1/2010 8:26", ("%m/%d/%Y %H:%M",))
    '2010-12-01T08:26:00+00:00'
    """
    try:
        moment = datetime.fromtimestamp(float(text), tz=UTC)
    except (ValueError, OverflowError, OSError):
        moment = _parse_time(text, formats)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC).isoformat()
    except OverflowError:
        raise RowRejected("bad_timestamp", f"time {text[:64]!r} is out of range") from None


def _parse_time(text: str, formats: tuple[str, ...]) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    for time_format in formats:
        try:
            return datetime.strptime(text, time_format)
        except ValueError:
            continue
    raise RowRejected("bad_timestamp", f"time {text[:64]!r} is not ISO-8601 or epoch seconds")


def _decimal(text: str) -> Decimal | None:
    """A finite decimal number, or None."""
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _quantity(text: str) -> int:
    """A non-zero integer quantity ("6" or "6.0"); negative means goods came back."""
    try:
        quantity = int(text)
    except ValueError:
        number = _decimal(text)
        if number is None or number != number.to_integral_value():
            raise RowRejected("bad_quantity", f"quantity {text[:64]!r} is not an integer") from None
        quantity = int(number)
    if quantity == 0:
        raise RowRejected("bad_quantity", "quantity is 0")
    return quantity


def _amount(values: dict[str, str], units: int, is_return: bool) -> float:
    """What the line cost: the amount column (its size, for a return), else units x unit price."""
    field = "amount" if "amount" in values else "unit_price"
    number = _decimal(values[field])
    if number is not None and is_return and field == "amount":
        number = abs(number)
    if number is None or number < 0:
        raise RowRejected("bad_price", f"{field} {values[field][:64]!r} is not a price >= 0")
    if field == "amount":
        return float(number)
    return float((number * units).quantize(_CENT, rounding=ROUND_HALF_UP))
