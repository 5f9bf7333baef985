"""Customer events as CRM producers send them: the models, their validation and decoding."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)

from schemas.errors import EventRejected, UnknownEventType

__all__ = [
    "DEAD_LETTER_REASONS",
    "EARLIEST_EVENT_TIME",
    "EVENT_FIELDS",
    "LATEST_EVENT_TIME",
    "MAX_EVENT_BYTES",
    "AnyEvent",
    "CartAddEvent",
    "CustomerEvent",
    "EventType",
    "FeedbackEvent",
    "PurchaseEvent",
    "ReturnEvent",
    "SubscriptionCancelEvent",
    "SupportTicketEvent",
    "ViewEvent",
    "decode_event",
    "parse_event_json",
    "parse_event_time",
    "validate_event",
    "validation_rejection",
]

logger = logging.getLogger(__name__)

#: Larger messages are dead-lettered unread: no CRM event needs a megabyte.
MAX_EVENT_BYTES = 1_000_000

#: Every dead-letter reason code; each is a label value of the dead-letter metric.
DEAD_LETTER_REASONS = (
    "oversized",
    "invalid_utf8",
    "not_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "bad_timestamp",
    "key_mismatch",
    "processing_error",
)

#: Event time outside this window is a producer bug (milliseconds sent as seconds, a zero
#: date): the first moment allowed, and the first refused.
EARLIEST_EVENT_TIME = datetime(1990, 1, 1, tzinfo=UTC)
LATEST_EVENT_TIME = datetime(2100, 1, 1, tzinfo=UTC)
_YEARS = f"{EARLIEST_EVENT_TIME.year}..{LATEST_EVENT_TIME.year - 1}"


class EventType(StrEnum):
    """The event types this version scores; any other ``type`` is counted and skipped."""

    PURCHASE = "purchase"
    VIEW = "view"
    CART_ADD = "cart_add"
    SUPPORT_TICKET = "support_ticket"
    FEEDBACK = "feedback"
    SUBSCRIPTION_CANCEL = "subscription_cancel"
    RETURN = "return"
    ERASURE_REQUEST = "erasure_request"


def parse_event_time(value: Any) -> datetime:
    """Event time from ISO-8601 with an offset, or from epoch seconds, as an aware UTC datetime.

    >>> parse_event_time("2011-12-09T12:50:00+01:00").isoformat()
    '2011-12-09T11:50:00+00:00'
    >>> parse_event_time(1323435000).isoformat()
    '2011-12-09T12:50:00+00:00'
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, bool):
        msg = "must be an ISO-8601 string with an offset or epoch seconds, not a boolean"
        raise ValueError(msg)
    elif isinstance(value, int | float):
        if not math.isfinite(value):
            msg = "epoch seconds must be a finite number"
            raise ValueError(msg)
        try:
            moment = datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            msg = f"epoch seconds {value!r} are out of range"
            raise ValueError(msg) from exc
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            msg = f"{value[:64]!r} is not an ISO-8601 timestamp"
            raise ValueError(msg) from exc
    else:
        kind = type(value).__name__
        msg = f"must be an ISO-8601 string with an offset or epoch seconds, not {kind}"
        raise ValueError(msg)
    if moment.tzinfo is None or moment.utcoffset() is None:
        msg = "ISO-8601 timestamp needs a UTC offset (e.g. +00:00 or Z)"
        raise ValueError(msg)
    try:
        moment = moment.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+05:00 is before year 1 in UTC
        msg = f"{moment.isoformat()} is outside {_YEARS}"
        raise ValueError(msg) from exc
    if not EARLIEST_EVENT_TIME <= moment < LATEST_EVENT_TIME:
        msg = f"{moment.isoformat()} is outside {_YEARS}"
        raise ValueError(msg)
    return moment


EventTime = Annotated[
    datetime,
    BeforeValidator(parse_event_time),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time", "description": "ISO-8601 with offset"},
                {"type": "number", "description": "epoch seconds"},
            ]
        }
    ),
]
Identifier = Annotated[str, Field(min_length=1, max_length=256)]
Money = Annotated[float, Field(ge=0, allow_inf_nan=False, le=1e12)]
Text = Annotated[str, Field(max_length=20_000)]


class _EventBase(BaseModel):
    """Fields every event carries; fields this version does not know are kept, not fatal."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    event_id: Identifier = Field(description="Unique id of the event, chosen by the producer.")
    customer_id: Identifier = Field(description="The customer; also the Kafka message key.")
    timestamp: EventTime = Field(description="Event time: ISO-8601 with offset, or epoch seconds.")
    properties: dict[str, Any] | None = Field(
        default=None, description="Free-form producer data, kept but not scored."
    )


class PurchaseEvent(_EventBase):
    """A purchased line: ``amount`` is what the customer paid for the line (quantity included)."""

    type: Literal["purchase"]
    item_id: Identifier
    amount: Money
    quantity: Annotated[int, Field(ge=1, le=1_000_000)]


class ViewEvent(_EventBase):
    """The customer looked at an item."""

    type: Literal["view"]
    item_id: Identifier


class CartAddEvent(_EventBase):
    """The customer put an item in the cart."""

    type: Literal["cart_add"]
    item_id: Identifier


class SupportTicketEvent(_EventBase):
    """The customer opened a support ticket; ``text`` is scored for sentiment."""

    type: Literal["support_ticket"]
    text: Text


class FeedbackEvent(_EventBase):
    """Feedback text and, when given, a 1-5 star rating."""

    type: Literal["feedback"]
    text: Text
    rating: Annotated[int, Field(ge=1, le=5)] | None = None


class SubscriptionCancelEvent(_EventBase):
    """The customer cancelled: a churn label at once."""

    type: Literal["subscription_cancel"]


class ReturnEvent(_EventBase):
    """Goods sent back: ``amount`` is what was refunded."""

    type: Literal["return"]
    item_id: Identifier
    amount: Money
    quantity: Annotated[int, Field(ge=1, le=1_000_000)] = 1


class ErasureRequestEvent(_EventBase):
    """The customer asked to be forgotten (GDPR art. 17): the worker that owns them deletes
    their state, score and per-customer model parameters, then writes an audit record.
    ``crm-scorer forget`` sends one; so may any producer, keyed by the customer id."""

    type: Literal["erasure_request"]
    requested_by: Identifier = Field(description="Who asked: an operator or a system.")


AnyEvent = (
    PurchaseEvent
    | ViewEvent
    | CartAddEvent
    | SupportTicketEvent
    | FeedbackEvent
    | SubscriptionCancelEvent
    | ReturnEvent
    | ErasureRequestEvent
)
CustomerEvent = Annotated[AnyEvent, Field(discriminator="type")]

#: Every field some event type defines; anything else on an event is a producer's extra.
EVENT_FIELDS = frozenset(name for model in get_args(AnyEvent) for name in model.model_fields)

_EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(CustomerEvent)
_KNOWN_TYPES = frozenset(t.value for t in EventType)
_WRONG_TYPE_ERRORS = frozenset(
    {
        "string_type",
        "int_type",
        "float_type",
        "dict_type",
        "bool_type",
        "model_type",
        "int_from_float",
        "float_parsing",
        "int_parsing",
        "union_tag_invalid",
    }
)


def validation_rejection(exc: ValidationError) -> EventRejected:
    """The first validation error as a dead-letter reason naming the field."""
    error = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"]]
    # The discriminated union puts the tag first in loc: ("purchase", "amount").
    if loc and loc[0] in _KNOWN_TYPES:
        loc = loc[1:]
    field = ".".join(loc) or None
    kind = error["type"]
    if field == "timestamp":
        reason = "missing_field" if kind == "missing" else "bad_timestamp"
    elif kind == "missing":
        reason = "missing_field"
    elif kind in _WRONG_TYPE_ERRORS:
        reason = "wrong_type"
    else:
        reason = "invalid_value"
    message = f"{field}: {error['msg']}" if field else error["msg"]
    return EventRejected(reason, message, field)


def validate_event(document: dict[str, Any], *, not_after: datetime | None = None) -> AnyEvent:
    """Validate one event already parsed from JSON (a dict in the README's event format).

    Raises :class:`EventRejected` (dead-letter it) or :class:`UnknownEventType` (count and skip).
    ``not_after`` rejects events from the future (the worker passes its clock plus a tolerance).

    >>> event = validate_event({"event_id": "e1", "customer_id": "c1", "type": "return",
    ...                         "timestamp": "2025-03-01T10:00:00Z", "item_id": "sku-1",
    ...                         "amount": 5.0})
    >>> type(event).__name__, event.quantity, event.timestamp.isoformat()
    ('ReturnEvent', 1, '2025-03-01T10:00:00+00:00')
    >>> validate_event({"event_id": "e2", "customer_id": 42, "type": "view",
    ...                 "timestamp": 1700000000, "item_id": "sku-1"})
    Traceback (most recent call last):
    ...
    schemas.errors.EventRejected: customer_id: Input should be a valid string
    """
    if not isinstance(document, dict):
        msg = f"event must be a JSON object, got {type(document).__name__}"
        raise EventRejected("not_an_object", msg)
    event_type = document.get("type")
    if event_type is None:
        raise EventRejected("missing_field", "type: Field required", "type")
    if not isinstance(event_type, str):
        raise EventRejected("wrong_type", "type: must be a string", "type")
    if event_type not in _KNOWN_TYPES:
        raise UnknownEventType(event_type)
    try:
        event: AnyEvent = _EVENT_ADAPTER.validate_python(document)
    except ValidationError as exc:
        raise validation_rejection(exc) from None
    if not_after is not None and event.timestamp > not_after:
        # A clock running ahead would end every other customer's horizon at once.
        msg = (
            f"timestamp: {event.timestamp.isoformat()} is later than {not_after.isoformat()}, "
            "the latest event time accepted now"
        )
        raise EventRejected("bad_timestamp", msg, "timestamp")
    return event


def decode_event(raw: bytes | None, *, not_after: datetime | None = None) -> AnyEvent:
    """Decode and validate one message value (JSON bytes; see :func:`validate_event`).

    Raises :class:`EventRejected` (dead-letter it) or :class:`UnknownEventType` (count and skip).
    ``not_after`` rejects events from the future (the worker passes its clock plus a tolerance).

    >>> event = decode_event(b'{"event_id": "e1", "customer_id": "c1", "type": "view",'
    ...                      b' "timestamp": 1700000000, "item_id": "sku-1", "campaign": "x"}')
    >>> event.item_id, event.model_extra
    ('sku-1', {'campaign': 'x'})
    >>> decode_event(b'{"event_id": "e2", "customer_id": "c1", "type": "purchase",'
    ...              b' "timestamp": 1700000000, "item_id": "sku-1", "quantity": 1}')
    Traceback (most recent call last):
    ...
    schemas.errors.EventRejected: amount: Field required
    """
    if raw is None:
        raise EventRejected("missing_field", "message has no value", None)
    return validate_event(parse_event_json(raw), not_after=not_after)


def parse_event_json(raw: bytes) -> Any:
    """The JSON value of one message, not yet validated (see :func:`validate_event`).

    Raises :class:`EventRejected`: ``oversized``, ``invalid_utf8`` or ``not_json``.

    >>> parse_event_json(b'{"type": "view"}')
    {'type': 'view'}
    >>> parse_event_json(b"\\xff{}")
    Traceback (most recent call last):
    ...
    schemas.errors.EventRejected: message is not valid UTF-8
    """
    if len(raw) > MAX_EVENT_BYTES:
        msg = f"message of {len(raw)} bytes exceeds the {MAX_EVENT_BYTES} byte limit"
        raise EventRejected("oversized", msg)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise EventRejected("invalid_utf8", "message is not valid UTF-8") from exc
        raise EventRejected("not_json", f"message is not JSON: {exc}") from exc
