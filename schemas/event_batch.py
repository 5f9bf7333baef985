"""A fetch of event messages decoded in one pass into columns, and the reasons for its rejects.

:func:`decode_events` turns the message values of one Kafka fetch into :class:`EventColumns`
(one list or array per field, one entry per valid event) without building a pydantic object
per event: msgspec decodes each value into a plain ``Struct`` of its ``type``, which checks
the types and bounds of :mod:`schemas.events`, and the timestamp becomes epoch seconds as
:func:`~schemas.events.parse_event_time` reads it (``datetime.fromisoformat``, or epoch
seconds rounded to the microsecond), compared with its window as floats.

A message the fast decoder does not accept goes, on its own, through
:func:`~schemas.events.decode_event`, the one-event path: a bad event gets exactly the reason,
message and field it always had, and the rare valid event the fast decoder is stricter about
is taken from there. So the fast decoder may refuse more than the models do, never less.

Where msgspec reads bytes that orjson (the one-event path's parser) refuses, it is not asked:
it skips unknown fields without checking their UTF-8 or whether their numbers fit a double,
so it decodes with unknown fields forbidden, and a message with extra fields is parsed by
orjson before msgspec reads it again with them allowed; a message long enough to hold a huge
integer or deep nesting (whose limit follows the interpreter's recursion limit in msgspec) is
looked at first. ``tests/unit/test_event_batch.py`` pins the two ways to the same outcome,
field by field.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import new_class
from typing import Annotated, Any, ClassVar, Union

import msgspec
import numpy as np
import numpy.typing as npt
import orjson

from schemas.errors import EventRejected, UnknownEventType
from schemas.events import (
    EARLIEST_EVENT_TIME,
    LATEST_EVENT_TIME,
    MAX_EVENT_BYTES,
    AnyEvent,
    CartAddEvent,
    ErasureRequestEvent,
    FeedbackEvent,
    PurchaseEvent,
    ReturnEvent,
    SupportTicketEvent,
    ViewEvent,
    decode_event,
)

__all__ = ["EventBatch", "EventColumns", "decode_events"]

logger = logging.getLogger(__name__)

# The bounds of schemas.events, as msgspec constraints (a test keeps the two equal).
_Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
_Money = Annotated[float, msgspec.Meta(ge=0, le=1e12)]
_Quantity = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
_Rating = Annotated[int, msgspec.Meta(ge=1, le=5)]
_Text = Annotated[str, msgspec.Meta(max_length=20_000)]

#: What a row holds beyond the common fields: item_id, amount, quantity, text, rating,
#: requested_by.
_Details = tuple[str | None, float, int, str | None, int | None, str | None]


class _Event(
    msgspec.Struct,
    tag_field="type",
    kw_only=True,
    gc=False,
    forbid_unknown_fields=True,
):
    """The fields every event carries. An unknown field fails the decode: see
    :data:`_WITH_EXTRAS` for events that have some."""

    event_id: _Identifier
    customer_id: _Identifier
    # JSON gives a string or a number; _epoch_seconds reads it as the models' validator does.
    timestamp: str | int | float
    properties: dict[str, Any] | None = None
    type: ClassVar[str]

    def details(self) -> _Details:
        return None, 0.0, 0, None, None, None


class _Purchase(_Event, tag="purchase"):
    type: ClassVar[str] = "purchase"
    item_id: _Identifier
    amount: _Money
    quantity: _Quantity

    def details(self) -> _Details:
        return self.item_id, self.amount, self.quantity, None, None, None


class _View(_Event, tag="view"):
    type: ClassVar[str] = "view"
    item_id: _Identifier

    def details(self) -> _Details:
        return self.item_id, 0.0, 0, None, None, None


class _CartAdd(_Event, tag="cart_add"):
    type: ClassVar[str] = "cart_add"
    item_id: _Identifier

    def details(self) -> _Details:
        return self.item_id, 0.0, 0, None, None, None


class _SupportTicket(_Event, tag="support_ticket"):
    type: ClassVar[str] = "support_ticket"
    text: _Text

    def details(self) -> _Details:
        return None, 0.0, 0, self.text, None, None


class _Feedback(_Event, tag="feedback"):
    type: ClassVar[str] = "feedback"
    text: _Text
    rating: _Rating | None = None

    def details(self) -> _Details:
        return None, 0.0, 0, self.text, self.rating, None


class _SubscriptionCancel(_Event, tag="subscription_cancel"):
    type: ClassVar[str] = "subscription_cancel"


class _Return(_Event, tag="return"):
    type: ClassVar[str] = "return"
    item_id: _Identifier
    amount: _Money
    quantity: _Quantity = 1

    def details(self) -> _Details:
        return self.item_id, self.amount, self.quantity, None, None, None


class _ErasureRequest(_Event, tag="erasure_request"):
    type: ClassVar[str] = "erasure_request"
    requested_by: _Identifier

    def details(self) -> _Details:
        return None, 0.0, 0, None, None, self.requested_by


_EVENTS: tuple[type[_Event], ...] = (
    _Purchase,
    _View,
    _CartAdd,
    _SupportTicket,
    _Feedback,
    _SubscriptionCancel,
    _Return,
    _ErasureRequest,
)
#: The same events with unknown fields allowed (and skipped unread: see the module's doc).
_WITH_EXTRAS = tuple(
    new_class(f"{event.__name__}WithExtras", (event,), {"forbid_unknown_fields": False})
    for event in _EVENTS
)
_DECODE = msgspec.json.Decoder(Union[_EVENTS]).decode  # noqa: UP007 - a union of a tuple
_DECODE_WITH_EXTRAS = msgspec.json.Decoder(Union[_WITH_EXTRAS]).decode  # noqa: UP007
_DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError)

# Where msgspec reads what orjson refuses, apart from the skipped fields: an integer of 309
# digits may not fit a double (msgspec keeps it, in ``properties``), and msgspec's depth limit
# follows the interpreter's recursion limit, orjson's is 1024. A shorter message holds neither;
# a longer one with either goes the slow way.
_LONG_DIGITS = re.compile(rb"[0-9]{309}")
_MAX_BRACKETS = 512
_ODD_LENGTH = 309


# The event-time window of parse_event_time in epoch seconds: timestamp() keeps the order of
# datetimes (a microsecond is more than two steps of a double up to 2100), so comparing these
# decides as comparing the models' datetimes does.
_EARLIEST_SECONDS = EARLIEST_EVENT_TIME.timestamp()
_LATEST_SECONDS = LATEST_EVENT_TIME.timestamp()


@dataclass(frozen=True, slots=True)
class EventColumns:
    """The valid events of a fetch, in fetch order: entry ``i`` of every column is event ``i``.

    ``positions`` are the events' indexes among the fetch's messages; ``times`` are epoch
    seconds (as ``event.timestamp.timestamp()`` of the models); ``amounts`` and
    ``quantities`` are 0 for types that have none, as in ``Activity``; the other columns
    hold ``None`` there.
    """

    positions: list[int]
    event_ids: list[str]
    customer_ids: list[str]
    types: list[str]
    times: npt.NDArray[np.float64]
    item_ids: list[str | None]
    amounts: npt.NDArray[np.float64]
    quantities: npt.NDArray[np.int64]
    texts: list[str | None]
    ratings: list[int | None]
    requested_by: list[str | None]

    def __len__(self) -> int:
        return len(self.positions)


@dataclass(frozen=True, slots=True)
class EventBatch:
    """A decoded fetch: its valid events as columns, and what became of the other messages.

    ``rows[p]`` is the row in :attr:`columns` of message ``p``, or -1 when it was rejected
    (:attr:`rejected`, to be dead-lettered), is of an unknown type (:attr:`skipped`) or made
    the one-event path raise something else (:attr:`failed`: a bug, which fails that message
    alone). ``validated_slowly`` counts the messages the one-event path decided.
    """

    columns: EventColumns
    rows: list[int]
    rejected: dict[int, EventRejected] = field(default_factory=dict)
    skipped: dict[int, UnknownEventType] = field(default_factory=dict)
    failed: dict[int, Exception] = field(default_factory=dict)
    validated_slowly: int = 0


def decode_events(
    values: Sequence[bytes | None], *, not_after: datetime | None = None
) -> EventBatch:
    """Decode the message values of one fetch (see :func:`schemas.events.decode_event`).

    Never raises: a message :func:`~schemas.events.decode_event` would reject is in
    ``rejected`` with the same :class:`EventRejected`, one of an unknown type in ``skipped``.
    ``not_after`` rejects events from the future.

    >>> batch = decode_events([
    ...     b'{"event_id": "e1", "customer_id": "c1", "type": "purchase", "item_id": "sku-1",'
    ...     b' "timestamp": "2025-03-01T10:00:00Z", "amount": 5.0, "quantity": 2}',
    ...     b'{"event_id": "e2", "customer_id": "c1", "type": "view", "timestamp": 0}',
    ...     b'{"event_id": "e3", "customer_id": "c2", "type": "view", "item_id": "sku-1",'
    ...     b' "timestamp": 1740823200.5}',
    ... ])
    >>> batch.columns.customer_ids, batch.columns.times.tolist(), batch.rows
    (['c1', 'c2'], [1740823200.0, 1740823200.5], [0, -1, 1])
    >>> batch.columns.amounts.tolist(), batch.columns.item_ids
    ([5.0, 0.0], ['sku-1', 'sku-1'])
    >>> batch.rejected[1].reason, str(batch.rejected[1])
    ('bad_timestamp', 'timestamp: Value error, 1970-01-01T00:00:00+00:00 is outside 1990..2099')
    """
    positions: list[int] = []
    event_ids: list[str] = []
    customer_ids: list[str] = []
    types: list[str] = []
    times: list[float] = []
    details: list[_Details] = []
    rows = [-1] * len(values)
    rejected: dict[int, EventRejected] = {}
    skipped: dict[int, UnknownEventType] = {}
    failed: dict[int, Exception] = {}
    slowly = 0
    latest = math.inf if not_after is None else not_after.timestamp()
    for position, raw in enumerate(values):
        event: Any = _decode_fast(raw)
        time = None if event is None else _epoch_seconds(event.timestamp, latest)
        if time is not None:
            details.append(event.details())
        else:
            slowly += 1
            try:
                event = decode_event(raw, not_after=not_after)
            except EventRejected as exc:
                rejected[position] = exc
                continue
            except UnknownEventType as exc:
                skipped[position] = exc
                continue
            except Exception as exc:
                failed[position] = exc
                continue
            time = event.timestamp.timestamp()
            details.append(_details_of(event))
        rows[position] = len(positions)
        positions.append(position)
        event_ids.append(event.event_id)
        customer_ids.append(event.customer_id)
        types.append(event.type)
        times.append(time)
    columns = _columns(positions, event_ids, customer_ids, types, times, details)
    return EventBatch(columns, rows, rejected, skipped, failed, slowly)


def _decode_fast(raw: bytes | None) -> _Event | None:
    """The event in ``raw`` if msgspec accepts it where orjson would; None: ask the models."""
    if raw is None or len(raw) > MAX_EVENT_BYTES:
        return None
    if len(raw) >= _ODD_LENGTH and (
        raw.count(b"{") + raw.count(b"[") > _MAX_BRACKETS or _LONG_DIGITS.search(raw)
    ):
        return None
    try:
        return _DECODE(raw)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        if "unknown field" not in str(exc):
            return None  # a bad event, or an unknown type
    except msgspec.DecodeError:
        return None  # not JSON
    try:
        orjson.loads(raw)  # what msgspec skips unread in the extra fields
        return _DECODE_WITH_EXTRAS(raw)  # type: ignore[no-any-return]
    except (orjson.JSONDecodeError, *_DECODE_ERRORS):
        return None


def _epoch_seconds(value: str | int | float, not_after: float) -> float | None:
    """``parse_event_time(value).timestamp()`` when the models accept it and it is not after
    ``not_after``; None: ask the models (they accept no more, and say why)."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None or moment.utcoffset() is None:
                return None
            seconds = moment.timestamp()  # of the instant, as of the same instant in UTC
        except (ValueError, OverflowError):
            return None
    elif not _EARLIEST_SECONDS <= value < _LATEST_SECONDS:
        return None  # the models' bounds apply after rounding: they decide near them
    elif isinstance(value, int) or value.is_integer():
        seconds = float(value)
    else:  # rounded to the microsecond, as the models' datetime is
        seconds = datetime.fromtimestamp(value, tz=UTC).timestamp()
    if _EARLIEST_SECONDS <= seconds < _LATEST_SECONDS and seconds <= not_after:
        return seconds
    return None


def _details_of(event: AnyEvent) -> _Details:
    """The details of an event the one-event path decoded (by type: an extra field is an
    attribute of the model too)."""
    if isinstance(event, PurchaseEvent | ReturnEvent):
        return event.item_id, event.amount, event.quantity, None, None, None
    if isinstance(event, ViewEvent | CartAddEvent):
        return event.item_id, 0.0, 0, None, None, None
    if isinstance(event, FeedbackEvent):
        return None, 0.0, 0, event.text, event.rating, None
    if isinstance(event, SupportTicketEvent):
        return None, 0.0, 0, event.text, None, None
    if isinstance(event, ErasureRequestEvent):
        return None, 0.0, 0, None, None, event.requested_by
    return None, 0.0, 0, None, None, None


def _columns(
    positions: list[int],
    event_ids: list[str],
    customer_ids: list[str],
    types: list[str],
    times: list[float],
    details: list[_Details],
) -> EventColumns:
    item_ids, amounts, quantities, texts, ratings, requested_by = (
        (list(column) for column in zip(*details, strict=True))
        if details
        else ([], [], [], [], [], [])
    )
    return EventColumns(
        positions=positions,
        event_ids=event_ids,
        customer_ids=customer_ids,
        types=types,
        times=np.array(times, dtype=np.float64),
        item_ids=item_ids,
        amounts=np.array(amounts, dtype=np.float64),
        quantities=np.array(quantities, dtype=np.int64),
        texts=texts,
        ratings=ratings,
        requested_by=requested_by,
    )
