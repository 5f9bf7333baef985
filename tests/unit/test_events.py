"""Unit tests of ``schemas.decode_event``: what a CRM producer's messages turn into.

Every message either becomes an event, is skipped as an unknown type, or is rejected with a
dead-letter reason naming the field at fault; nothing else may escape the decoder, because the
worker must never stop on bad input.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas import (
    DEAD_LETTER_REASONS,
    EventRejected,
    EventType,
    UnknownEventType,
    decode_event,
)
from schemas.events import EVENT_FIELDS, MAX_EVENT_BYTES

WHEN = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
WHEN_ISO = "2025-03-01T10:00:00+00:00"

#: The smallest valid event of every type.
MINIMAL: dict[str, dict[str, Any]] = {
    "purchase": {"item_id": "sku-17", "amount": 25.0, "quantity": 2},
    "view": {"item_id": "sku-17"},
    "cart_add": {"item_id": "sku-17"},
    "support_ticket": {"text": "my parcel never arrived"},
    "feedback": {"text": "great service"},
    "subscription_cancel": {},
    "return": {"item_id": "sku-17", "amount": 12.5},
    "erasure_request": {"requested_by": "dpo@example.com"},
}

#: Reasons only the worker can give (they need the Kafka key or a crash after decoding).
WORKER_ONLY_REASONS = {"key_mismatch", "processing_error"}


def event(event_type: str = "purchase", **changes: Any) -> dict[str, Any]:
    """A minimal valid event of ``event_type``; a change to ``...`` removes the field."""
    document: dict[str, Any] = {
        "event_id": "evt-1",
        "customer_id": "c-42",
        "type": event_type,
        "timestamp": WHEN_ISO,
        **MINIMAL[event_type],
    }
    for name, value in changes.items():
        if value is ...:
            document.pop(name, None)
        else:
            document[name] = value
    return document


def raw(document: Any) -> bytes:
    """The message value a producer sends."""
    return orjson.dumps(document)


def rejection(message: bytes | None) -> EventRejected:
    """The rejection ``decode_event`` raises for ``message``."""
    with pytest.raises(EventRejected) as caught:
        decode_event(message)
    return caught.value


def assert_handled(message: bytes | None) -> None:
    """The decoder's contract: an event, an unknown type, or a named dead-letter reason."""
    try:
        decoded = decode_event(message)
    except EventRejected as exc:
        assert exc.reason in DEAD_LETTER_REASONS
        assert exc.reason not in WORKER_ONLY_REASONS
        if exc.field is not None:
            assert exc.field in str(exc)
    except UnknownEventType as exc:
        assert isinstance(exc.event_type, str)
        assert exc.event_type not in set(EventType)
    else:
        assert decoded.type in set(EventType)
        assert decoded.timestamp.utcoffset() == timedelta(0)
        assert 1990 <= decoded.timestamp.year <= 2099


# --- valid events ---------------------------------------------------------------------------


def test_every_event_type_has_a_minimal_example() -> None:
    assert set(MINIMAL) == {t.value for t in EventType}


@pytest.mark.parametrize("event_type", sorted(MINIMAL))
def test_minimal_event_of_every_type_decodes(event_type: str) -> None:
    decoded = decode_event(raw(event(event_type)))

    assert decoded.type == event_type
    assert decoded.event_id == "evt-1"
    assert decoded.customer_id == "c-42"
    assert decoded.timestamp == WHEN
    for name, value in MINIMAL[event_type].items():
        assert getattr(decoded, name) == value


def test_optional_fields_take_their_documented_defaults() -> None:
    assert decode_event(raw(event("return"))).quantity == 1
    assert decode_event(raw(event("feedback"))).rating is None
    assert decode_event(raw(event("view"))).properties is None


def test_the_readme_example_decodes() -> None:
    message = (
        b'{"event_id": "evt-1", "customer_id": "c-42", "type": "purchase",'
        b' "timestamp": "2025-03-01T10:00:00+00:00", "item_id": "sku-17", "amount": 25.0,'
        b' "quantity": 2}'
    )

    decoded = decode_event(message)

    assert (decoded.item_id, decoded.amount, decoded.quantity) == ("sku-17", 25.0, 2)


@pytest.mark.parametrize(
    "timestamp",
    [
        int(WHEN.timestamp()),
        float(WHEN.timestamp()),
        "2025-03-01T10:00:00+00:00",
        "2025-03-01T10:00:00Z",
        "2025-03-01T11:30:00+01:30",
        "2025-03-01T05:00:00-05:00",
        "2025-03-01T10:00:00.000+00:00",
    ],
    ids=["epoch-int", "epoch-float", "iso-utc", "iso-z", "iso-plus", "iso-minus", "iso-millis"],
)
def test_epoch_seconds_and_iso_with_offset_give_the_same_utc_instant(timestamp: Any) -> None:
    decoded = decode_event(raw(event(timestamp=timestamp)))

    assert decoded.timestamp == WHEN
    assert decoded.timestamp.utcoffset() == timedelta(0)


def test_fractional_epoch_seconds_keep_their_fraction() -> None:
    decoded = decode_event(raw(event(timestamp=WHEN.timestamp() + 0.5)))

    assert decoded.timestamp == WHEN + timedelta(milliseconds=500)


def test_unknown_top_level_fields_and_properties_are_kept() -> None:
    properties = {"channel": "web", "nested": {"list": [1, 2.5, None, "x"], "flag": True}}
    decoded = decode_event(raw(event(campaign="spring", score=3, properties=properties)))

    assert decoded.model_extra == {"campaign": "spring", "score": 3}
    assert decoded.properties == properties


def test_deeply_nested_properties_within_the_json_depth_limit_are_kept() -> None:
    nested: Any = "leaf"
    for _ in range(200):
        nested = {"next": nested}

    decoded = decode_event(raw(event(properties={"root": nested})))

    assert decoded.properties == {"root": nested}


def test_an_event_of_exactly_the_size_limit_is_accepted() -> None:
    base = raw(event(properties={"pad": ""}))
    padded = raw(event(properties={"pad": "x" * (MAX_EVENT_BYTES - len(base))}))

    assert len(padded) == MAX_EVENT_BYTES
    assert decode_event(padded).properties is not None


# --- unknown types --------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ["wishlist_add", "PURCHASE", "", "purchase "])
def test_an_unknown_type_is_skipped_not_dead_lettered(event_type: str) -> None:
    with pytest.raises(UnknownEventType) as caught:
        decode_event(raw(event(type=event_type)))

    assert not isinstance(caught.value, EventRejected)
    assert caught.value.event_type == event_type


def test_an_unknown_type_is_skipped_even_without_the_fields_known_types_need() -> None:
    with pytest.raises(UnknownEventType):
        decode_event(raw({"type": "loyalty_points", "points": 10}))


# --- dead letters ---------------------------------------------------------------------------

REJECTED: list[tuple[str, bytes | None, str, str | None]] = [
    # id, message, reason, field
    ("not-json", b"{event_id: evt-1", "not_json", None),
    ("empty", b"", "not_json", None),
    ("nan-literal", b'{"amount": NaN}', "not_json", None),
    ("trailing-garbage", raw(event()) + b"}", "not_json", None),
    ("invalid-utf8", b'{"event_id": "\xff\xfe"}', "invalid_utf8", None),
    ("latin1", '{"text": "caf\u00e9"}'.encode("latin-1"), "invalid_utf8", None),
    ("array", b"[1, 2]", "not_an_object", None),
    ("number", b"42", "not_an_object", None),
    ("string", b'"purchase"', "not_an_object", None),
    ("null", b"null", "not_an_object", None),
    ("no-event-id", raw(event(event_id=...)), "missing_field", "event_id"),
    ("no-customer-id", raw(event(customer_id=...)), "missing_field", "customer_id"),
    ("no-timestamp", raw(event(timestamp=...)), "missing_field", "timestamp"),
    ("no-type", raw(event(type=...)), "missing_field", "type"),
    ("no-item-id", raw(event(item_id=...)), "missing_field", "item_id"),
    ("no-amount", raw(event(amount=...)), "missing_field", "amount"),
    ("no-quantity", raw(event(quantity=...)), "missing_field", "quantity"),
    ("view-no-item-id", raw(event("view", item_id=...)), "missing_field", "item_id"),
    ("cart-no-item-id", raw(event("cart_add", item_id=...)), "missing_field", "item_id"),
    ("ticket-no-text", raw(event("support_ticket", text=...)), "missing_field", "text"),
    ("feedback-no-text", raw(event("feedback", text=...)), "missing_field", "text"),
    ("return-no-amount", raw(event("return", amount=...)), "missing_field", "amount"),
    ("customer-id-number", raw(event(customer_id=42)), "wrong_type", "customer_id"),
    ("amount-string", raw(event(amount="12.5")), "wrong_type", "amount"),
    ("quantity-fraction", raw(event(quantity=1.5)), "wrong_type", "quantity"),
    ("quantity-string", raw(event(quantity="2")), "wrong_type", "quantity"),
    ("item-id-null", raw(event(item_id=None)), "wrong_type", "item_id"),
    ("type-number", raw(event(type=3)), "wrong_type", "type"),
    ("properties-list", raw(event(properties=[1, 2])), "wrong_type", "properties"),
    ("rating-bool", raw(event("feedback", rating=True)), "wrong_type", "rating"),
    ("negative-amount", raw(event(amount=-0.01)), "invalid_value", "amount"),
    ("amount-1e13", raw(event(amount=1e13)), "invalid_value", "amount"),
    ("rating-0", raw(event("feedback", rating=0)), "invalid_value", "rating"),
    ("rating-6", raw(event("feedback", rating=6)), "invalid_value", "rating"),
    ("empty-customer-id", raw(event(customer_id="")), "invalid_value", "customer_id"),
    ("long-event-id", raw(event(event_id="e" * 257)), "invalid_value", "event_id"),
    ("quantity-0", raw(event(quantity=0)), "invalid_value", "quantity"),
    ("return-quantity-0", raw(event("return", quantity=0)), "invalid_value", "quantity"),
    ("iso-no-offset", raw(event(timestamp="2025-03-01T10:00:00")), "bad_timestamp", "timestamp"),
    ("yesterday", raw(event(timestamp="yesterday")), "bad_timestamp", "timestamp"),
    ("epoch-ms", raw(event(timestamp=1e12)), "bad_timestamp", "timestamp"),
    ("epoch-ms-int", raw(event(timestamp=1_740_823_200_000)), "bad_timestamp", "timestamp"),
    ("true", raw(event(timestamp=True)), "bad_timestamp", "timestamp"),
    ("zero-date", raw(event(timestamp=0)), "bad_timestamp", "timestamp"),
    ("year-2100", raw(event(timestamp="2100-01-01T00:00:00Z")), "bad_timestamp", "timestamp"),
    (
        "year-1-east",
        raw(event(timestamp="0001-01-01T00:00:00+05:00")),
        "bad_timestamp",
        "timestamp",
    ),
    (
        "year-9999-west",
        raw(event(timestamp="9999-12-31T23:59:59-14:00")),
        "bad_timestamp",
        "timestamp",
    ),
    ("oversized", b'{"pad": "' + b"x" * MAX_EVENT_BYTES + b'"}', "oversized", None),
    ("no-value", None, "missing_field", None),
]


@pytest.mark.parametrize(
    ("message", "reason", "field"),
    [case[1:] for case in REJECTED],
    ids=[case[0] for case in REJECTED],
)
def test_bad_message_is_dead_lettered_with_its_reason_and_field(
    message: bytes | None, reason: str, field: str | None
) -> None:
    rejected = rejection(message)

    assert rejected.reason == reason
    assert rejected.reason in DEAD_LETTER_REASONS
    assert rejected.field == field
    if field is not None:
        assert str(rejected).startswith(f"{field}: ")
        assert field in rejected.message


def test_every_decoder_reason_is_produced_by_some_bad_message() -> None:
    produced = {case[2] for case in REJECTED}

    assert produced == set(DEAD_LETTER_REASONS) - WORKER_ONLY_REASONS


def test_an_oversized_message_is_rejected_before_it_is_parsed() -> None:
    # Not even JSON: the size alone decides, so a huge message costs no parsing.
    rejected = rejection(b"\xff" * (MAX_EVENT_BYTES + 1))

    assert rejected.reason == "oversized"
    assert str(MAX_EVENT_BYTES) in str(rejected)


def test_json_nested_beyond_the_parser_depth_limit_is_not_json() -> None:
    message = b'{"properties": ' + b'{"a": ' * 2000 + b"1" + b"}" * 2001

    assert rejection(message).reason == "not_json"


# --- property tests -------------------------------------------------------------------------

FIELD_NAMES = sorted(EVENT_FIELDS)

any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
iso_timestamps = st.one_of(
    st.datetimes(timezones=offsets).map(datetime.isoformat),
    st.datetimes().map(datetime.isoformat),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat().replace("+00:00", "Z")),
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, any_text, iso_timestamps)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(any_text, children, max_size=4),
    ),
    max_leaves=12,
)
keys = st.one_of(st.sampled_from(FIELD_NAMES), any_text)
types = st.one_of(st.sampled_from(sorted(MINIMAL)), any_text, scalars)


def to_message(document: Any) -> bytes:
    """JSON as a careless producer writes it: NaN and Infinity literals, lone surrogates."""
    return json.dumps(document, allow_nan=True, ensure_ascii=True).encode()


@st.composite
def near_valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event of a random type with fields removed, replaced and added at random."""
    document = event(draw(st.sampled_from(sorted(MINIMAL))))
    for name in draw(st.lists(st.sampled_from(sorted(document)), max_size=3, unique=True)):
        del document[name]
    replacements = st.dictionaries(
        keys, st.one_of(scalars, json_values, iso_timestamps, types), max_size=4
    )
    document.update(draw(replacements))
    return document


@settings(max_examples=300, deadline=None)
@given(message=st.binary(max_size=256))
@example(message=b"")
@example(message=b"\xef\xbb\xbf{}")
@example(message=b'{"type": "view", "timestamp": 1e400}')
def test_any_bytes_decode_or_are_rejected_with_a_known_reason(message: bytes) -> None:
    assert_handled(message)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=st.dictionaries(keys, json_values, max_size=8))
def test_any_json_object_decodes_or_is_rejected_with_a_known_reason(
    document: dict[str, Any],
) -> None:
    assert_handled(to_message(document))
    assert_handled(to_message({**document, "type": "purchase"}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=near_valid_events())
@example(document=event(timestamp="0001-01-01T00:00:00+05:00"))
@example(document=event(timestamp="9999-12-31T23:59:59-14:00"))
@example(document=event(timestamp=math.inf))
@example(document=event(timestamp=-1e20))
@example(document=event(amount=math.nan))
@example(document=event(customer_id="\ud800"))
@example(document=event(**{"model_config": 1, "model_fields": 2, "__class__": 3}))
def test_near_valid_events_decode_or_are_rejected_with_a_known_reason(
    document: dict[str, Any],
) -> None:
    assert_handled(to_message(document))


@settings(max_examples=200, deadline=None)
@given(
    when=st.datetimes(
        min_value=datetime(1990, 1, 2), max_value=datetime(2099, 12, 30), timezones=offsets
    )
)
def test_any_offset_iso_timestamp_in_range_is_the_same_instant_as_epoch_seconds(
    when: datetime,
) -> None:
    from_iso = decode_event(raw(event(timestamp=when.isoformat()))).timestamp
    from_epoch = decode_event(raw(event(timestamp=when.timestamp()))).timestamp

    assert from_iso == when
    assert abs((from_epoch - from_iso).total_seconds()) < 1e-5
