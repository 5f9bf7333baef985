"""The fetch decoder pinned to the one-event path: same events, same fields, same rejects.

``decode_events`` must give every message of a fetch the outcome ``decode_event`` gives it
alone: the same valid event, field for field (as the columns and as the models' activity), the
same dead-letter reason, message and field, or the same unknown type. The strategies reuse
``test_events.py``'s careless producers and add what a JSON parser may treat differently:
numbers beyond a double, bytes that are not UTF-8, escapes, nesting and repeated keys, also
inside the extra fields the fast decoder skips.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, get_args

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from online_models.customer.activity import Activity
from schemas.errors import EventRejected, UnknownEventType
from schemas.event_batch import _EVENTS, decode_events
from schemas.events import MAX_EVENT_BYTES, AnyEvent, ErasureRequestEvent, decode_event
from streams.commands.simulator import SimulationConfig, generate_messages
from streams.convert import activities_of, activity_of
from tests.unit.test_events import (
    MINIMAL,
    REJECTED,
    any_text,
    event,
    json_values,
    near_valid_events,
    offsets,
    raw,
    to_message,
)

#: The worker's clock plus its tolerance, in some examples: later events are rejected.
NOT_AFTER = datetime(2030, 1, 1, tzinfo=UTC)

Outcome = tuple[Any, ...]


def _typed(*values: Any) -> tuple[tuple[str, Any], ...]:
    """Values with their types: 25 and 25.0 are different decodings."""
    return tuple((type(value).__name__, value) for value in values)


def one_at_a_time(message: bytes | None, not_after: datetime | None) -> Outcome:
    """What ``decode_event`` and ``activity_of`` make of one message: the reference."""
    try:
        decoded: AnyEvent = decode_event(message, not_after=not_after)
    except EventRejected as exc:
        return ("rejected", exc.reason, exc.message, exc.field, str(exc))
    except UnknownEventType as exc:
        return ("skipped", exc.event_type, str(exc))
    common = (decoded.event_id, decoded.customer_id, decoded.type, decoded.timestamp)
    if isinstance(decoded, ErasureRequestEvent):
        return ("erasure", *_typed(*common, decoded.requested_by))
    return ("event", *_typed(*common), activity_of(decoded))


def in_the_batch(message: bytes | None, not_after: datetime | None) -> list[Outcome]:
    """What ``decode_events`` makes of ``message``, alone and between two valid events."""
    neighbour = raw(event("view", event_id="neighbour"))
    alone = outcomes_of(decode_events([message], not_after=not_after))
    among = outcomes_of(decode_events([neighbour, message, neighbour], not_after=not_after))
    assert among[0][0] == among[2][0] == "event"
    return [alone[0], among[1]]


def outcomes_of(batch: Any) -> list[Outcome]:
    """The outcome of every message of a decoded fetch, in the reference's terms."""
    columns = batch.columns
    activities = activities_of(columns)
    times = columns.times.tolist()
    outcomes: list[Outcome] = []
    for position, row in enumerate(batch.rows):
        exc: Any
        if row < 0:
            assert (position in batch.rejected) != (position in batch.skipped)
            if position in batch.skipped:
                exc = batch.skipped[position]
                outcomes.append(("skipped", exc.event_type, str(exc)))
            else:
                exc = batch.rejected[position]
                outcomes.append(("rejected", exc.reason, exc.message, exc.field, str(exc)))
            continue
        assert columns.positions[row] == position
        common = (
            columns.event_ids[row],
            columns.customer_ids[row],
            columns.types[row],
            datetime.fromtimestamp(times[row], UTC),  # exactly the models' timestamp
        )
        if columns.types[row] == "erasure_request":
            assert activities[row] is None
            outcomes.append(("erasure", *_typed(*common, columns.requested_by[row])))
            continue
        activity = activities[row]
        assert isinstance(activity, Activity)
        assert _typed(*vars_of(activity)) == _typed(*vars_of(activity_of_columns(columns, row)))
        outcomes.append(("event", *_typed(*common), activity))
    return outcomes


def vars_of(activity: Activity) -> tuple[Any, ...]:
    return tuple(getattr(activity, name) for name in Activity.__slots__)


def activity_of_columns(columns: Any, row: int) -> Activity:
    """The activity rebuilt from the row's columns by hand: every column is as documented."""
    kind = columns.types[row]
    return Activity(
        kind,
        columns.times.tolist()[row],
        item_id=columns.item_ids[row],
        amount=columns.amounts.tolist()[row],
        quantity=columns.quantities.tolist()[row],
        text=columns.texts[row],
        rating=columns.ratings[row],
    )


def assert_same_outcome(message: bytes | None, not_after: datetime | None = None) -> None:
    expected = one_at_a_time(message, not_after)
    for outcome in in_the_batch(message, not_after):
        assert outcome == expected
        if expected[0] == "event":  # the activity, with the types of its values
            assert _typed(*vars_of(outcome[-1])) == _typed(*vars_of(expected[-1]))


# --- examples -------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", sorted(MINIMAL))
def test_a_minimal_event_of_every_type_decodes_the_same_without_the_models(
    event_type: str,
) -> None:
    message = raw(event(event_type))

    assert_same_outcome(message)
    assert decode_events([message]).validated_slowly == 0


@pytest.mark.parametrize(
    ("message", "reason", "field"),
    [case[1:] for case in REJECTED],
    ids=[case[0] for case in REJECTED],
)
def test_every_documented_reject_has_the_same_reason_message_and_field(
    message: bytes | None, reason: str, field: str | None
) -> None:
    assert_same_outcome(message)
    rejected = decode_events([message]).rejected[0]
    assert (rejected.reason, rejected.field) == (reason, field)


@pytest.mark.parametrize(
    "timestamp",
    [
        1740823200,
        1740823200.0,
        1740823200.123456789,
        "2025-03-01T10:00:00+00:00",
        "2025-03-01T10:00:00Z",
        "2025-03-01T11:30:00.25+01:30",
        "2025-03-01T05:00:00-05:00",
        "2025-03-01 10:00:00+00:00",
        "20250301T100000Z",
        "2025-W09-6T10:00:00+00:00",
        "1990-01-01T00:00:00Z",
        "2099-12-31T23:59:59.999999+00:00",
    ],
)
def test_every_accepted_timestamp_form_is_the_same_instant(timestamp: Any) -> None:
    assert_same_outcome(raw(event(timestamp=timestamp)))
    assert decode_events([raw(event(timestamp=timestamp))]).validated_slowly == 0


def test_an_event_from_the_future_is_rejected_with_the_same_message() -> None:
    later = raw(event(timestamp="2031-01-01T00:00:00Z"))

    assert_same_outcome(later, NOT_AFTER)
    assert decode_events([later], not_after=NOT_AFTER).rejected[0].reason == "bad_timestamp"


def test_extra_fields_are_skipped_without_the_models() -> None:
    message = raw(event("view", campaign="spring", score=3, properties={"a": [1, None]}))

    assert_same_outcome(message)
    assert decode_events([message]).validated_slowly == 0


def test_the_simulated_stream_is_decoded_without_the_models() -> None:
    config = SimulationConfig(customers=200, days=120, bad_event_ratio=0.05)
    messages = [value for _, value in generate_messages(config, limit=3_000)]

    batch = decode_events(messages)

    assert outcomes_of(batch) == [one_at_a_time(message, None) for message in messages]
    assert batch.validated_slowly == len(batch.rejected) + len(batch.skipped)
    assert 50 < len(batch.rejected) < 300


def test_an_empty_fetch_has_empty_columns() -> None:
    batch = decode_events([])

    assert len(batch.columns) == 0
    assert batch.columns.times.shape == (0,)
    assert activities_of(batch.columns) == []


def test_the_fast_events_have_the_fields_defaults_and_bounds_of_the_models() -> None:
    models = {get_args(m.model_fields["type"].annotation)[0]: m for m in get_args(AnyEvent)}
    assert set(models) == {struct.type for struct in _EVENTS}
    for struct in _EVENTS:
        model = models[struct.type]
        info = msgspec.inspect.type_info(struct)
        assert isinstance(info, msgspec.inspect.StructType)
        fast = {field.name: field for field in info.fields}
        assert set(fast) == set(model.model_fields) - {"type"}, struct.type
        for name, field in fast.items():
            spec = model.model_fields[name]
            where = f"{struct.type}.{name}"
            assert field.required == spec.is_required(), where
            assert field.required or field.default == spec.default, where
            assert _bounds(field.type) == _model_bounds(spec), where


BOUNDS = ("min_length", "max_length", "ge", "le", "gt", "lt")


def _bounds(kind: Any) -> dict[str, Any]:
    """The bounds of a msgspec field's type (of its one type besides None)."""
    if isinstance(kind, msgspec.inspect.UnionType):
        kinds = [k for k in kind.types if not isinstance(k, msgspec.inspect.NoneType)]
        kind = kinds[0] if len(kinds) == 1 else None
    return {name: getattr(kind, name) for name in BOUNDS if getattr(kind, name, None) is not None}


def _model_bounds(spec: Any) -> dict[str, Any]:
    """The bounds of a pydantic field, also those inside ``Annotated[...] | None``."""
    constraints = list(spec.metadata)
    for member in get_args(spec.annotation):
        for info in getattr(member, "__metadata__", ()):
            constraints.extend(getattr(info, "metadata", [info]))
    bounds: dict[str, Any] = {}
    for constraint in constraints:
        for name in BOUNDS:
            if getattr(constraint, name, None) is not None:
                bounds[name] = getattr(constraint, name)
    return bounds


# --- property tests -------------------------------------------------------------------------

# What a parser may read differently: numbers beyond a double or 64 bits, exponents, bytes
# that are not UTF-8, escapes, control characters, nesting near the depth limit.
JSON_TOKENS = [
    b"1e400", b"-1e309", b"1E+400", b"1" + b"0" * 308, b"1" + b"0" * 309, b"-" + b"9" * 400,
    b"1" + b"0" * 400 + b".5", b"0." + b"0" * 400 + b"1e700", b"18446744073709551616",
    b"-9223372036854775809", b"2.5e-400", b"-0", b"1e5", b"1.5E-3", b"01", b"1.", b"-", b"+1",
    b"NaN", b"Infinity", b'"\xff"', b'"\xc3"', b'"\xed\xa0\x80"', b'"\xf0\x9f\x98\x80"',
    b'"\\ud800"', b'"\\udc00\\ud800"', b'"\\ud83d\\ude00"', b'"\\u0000"', b'"\x01"', b'"\\q"',
    b'"caf\xc3\xa9"', b"[1,]", b"{}", b"[]", b"null", b"true", b"tru", b'{"a" 1}',
    b"[" * 1030 + b"]" * 1030, b'{"a":' * 1030 + b"1" + b"}" * 1030,
    b"[" * 200 + b"]" * 200, b'"' + "é".encode() * 300 + b'"',
]  # fmt: skip
json_tokens = st.sampled_from(JSON_TOKENS) | json_values.map(
    lambda value: json.dumps(value, allow_nan=True, ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )
)
field_names = st.sampled_from(
    ["properties", "campaign", "type", "customer_id", "timestamp", "amount", "item_id"]
) | any_text.map(lambda text: text.replace("\\", "").replace('"', ""))


@st.composite
def spliced_messages(draw: st.DrawFn) -> bytes:
    """A valid event's bytes with raw JSON spliced in: a field (maybe repeated), or a
    property, with a token some parser may read otherwise."""
    message = raw(event(draw(st.sampled_from(sorted(MINIMAL)))))
    name = draw(field_names).encode("utf-8", "surrogatepass")
    token = draw(json_tokens)
    where = draw(st.sampled_from(["end", "start", "properties"]))
    if where == "properties":
        return message[:-1] + b',"properties":{"' + name + b'":' + token + b"}}"
    if where == "start":
        return b'{"' + name + b'":' + token + b"," + message[1:]
    return message[:-1] + b',"' + name + b'":' + token + b"}"


timestamps = st.one_of(
    st.datetimes(timezones=offsets).map(datetime.isoformat),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat().replace("+00:00", "Z")),
    st.datetimes().map(datetime.isoformat),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(631_152_000, 4_102_444_800),
    st.integers(631_152_000, 4_102_444_800),
    st.integers(),
)
unicode_text = st.text(st.characters(codec="utf-8"), max_size=30)


@st.composite
def valid_ish_events(draw: st.DrawFn) -> dict[str, Any]:
    """Events that are mostly valid, with values from the edges of every field."""
    document = event(draw(st.sampled_from(sorted(MINIMAL))))
    document["timestamp"] = draw(timestamps)
    document["customer_id"] = draw(unicode_text)
    document["event_id"] = draw(st.one_of(unicode_text, st.just("e" * 256), st.just("e" * 257)))
    if "item_id" in document:
        document["item_id"] = draw(unicode_text)
    if "amount" in document:
        document["amount"] = draw(
            st.one_of(
                st.floats(0, 1e12),
                st.integers(0, 10**12 + 1),
                st.floats(),
                st.integers(),
                st.just(1e12),
                st.just(-0.0),
                st.just(5e-324),
            )
        )
    if "text" in document:
        document["text"] = draw(st.one_of(unicode_text, st.just("x" * 20_001)))
    for name in ("quantity", "rating"):
        if name in document or (name == "rating" and document["type"] == "feedback"):
            document[name] = draw(st.one_of(st.integers(-2, 1_000_002), st.none(), st.booleans()))
    if draw(st.booleans()):
        document["properties"] = draw(st.one_of(st.none(), json_values))
    return document


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    document=valid_ish_events(),
    not_after=st.sampled_from([None, NOT_AFTER]),
    ascii_only=st.booleans(),
)
@example(document=event(timestamp=1740823200.1234567), not_after=None, ascii_only=False)
@example(
    document=event(timestamp="2029-12-31T23:59:59.999999-00:01"),
    not_after=NOT_AFTER,
    ascii_only=False,
)
@example(document=event(timestamp=NOT_AFTER.timestamp()), not_after=NOT_AFTER, ascii_only=False)
@example(
    document=event(timestamp=NOT_AFTER.timestamp() + 1e-6), not_after=NOT_AFTER, ascii_only=False
)
@example(document=event(timestamp=631151999.9999996), not_after=None, ascii_only=False)
@example(document=event(timestamp=631151999.9999994), not_after=None, ascii_only=False)
@example(document=event(timestamp=4102444799.9999996), not_after=None, ascii_only=False)
@example(document=event(timestamp=4102444799.9999994), not_after=None, ascii_only=False)
@example(document=event(timestamp=4102444800), not_after=None, ascii_only=False)
@example(document=event(timestamp=631152000), not_after=None, ascii_only=False)
@example(document=event(timestamp=631151999), not_after=None, ascii_only=False)
@example(
    document=event(timestamp=NOT_AFTER.timestamp() + 4e-7), not_after=NOT_AFTER, ascii_only=False
)
@example(
    document=event(timestamp="2029-12-31T19:00:00.000001-05:00"),
    not_after=NOT_AFTER,
    ascii_only=False,
)
@example(document=event(timestamp="1989-12-31T23:00:00-01:00"), not_after=None, ascii_only=False)
@example(document=event(timestamp="2100-01-01T00:59:59+01:00"), not_after=None, ascii_only=False)
@example(document=event(amount=10**12), not_after=None, ascii_only=False)
@example(document=event(amount=10**12 + 1), not_after=None, ascii_only=False)
@example(document=event(quantity=2**64), not_after=None, ascii_only=False)
@example(document=event(customer_id="😀" * 256), not_after=None, ascii_only=False)
@example(document=event(customer_id="😀" * 257), not_after=None, ascii_only=False)
def test_valid_and_nearly_valid_events_decode_the_same(
    document: dict[str, Any], not_after: datetime | None, ascii_only: bool
) -> None:
    assert_same_outcome(encoded(document, ascii_only=ascii_only), not_after)


def encoded(document: dict[str, Any], *, ascii_only: bool) -> bytes:
    """JSON of any Python numbers, escaped to ASCII or as UTF-8 (lone surrogates and all)."""
    text = json.dumps(document, allow_nan=True, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=near_valid_events())
@example(document=event(timestamp=math.inf))
@example(document=event(customer_id="\ud800"))
@example(document=event(**{"model_config": 1, "model_fields": 2, "__class__": 3}))
@example(document={**event("subscription_cancel"), "item_id": 42})
def test_careless_producers_events_decode_the_same(document: dict[str, Any]) -> None:
    assert_same_outcome(to_message(document))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=spliced_messages())
@example(message=raw(event("view"))[:-1] + b',"x":1' + b"0" * 400 + b"}")
@example(message=raw(event("view"))[:-1] + b',"x":"\xff"}')
@example(message=raw(event("view"))[:-1] + b',"x":1e400}')
@example(message=raw(event("view"))[:-1] + b',"properties":{"x":1' + b"0" * 400 + b"}}")
@example(message=raw(event("view"))[:-1] + b',"type":"purchase"}')
@example(message=b'{"type":"view",' + raw(event("purchase"))[1:])
@example(message=raw(event("view"))[:-1] + b',"customer\\u005fid":"c-7"}')
def test_spliced_json_decodes_the_same(message: bytes) -> None:
    assert_same_outcome(message)


@settings(max_examples=300, deadline=None)
@given(message=st.one_of(st.binary(max_size=300), st.none()))
@example(message=b"\xef\xbb\xbf" + raw(event()))
@example(message=b" \t\r\n" + raw(event()) + b"\n")
@example(message=raw(event()) + b"\x0c")
@example(message=b"\x00" * 5)
def test_any_bytes_decode_the_same(message: bytes | None) -> None:
    assert_same_outcome(message)


@pytest.mark.parametrize("depth", [100, 997, 1000, 1021, 1022, 1023, 1024, 1030])
@pytest.mark.parametrize("where", ["properties", "extra"])
def test_nesting_is_judged_as_orjson_judges_it_whatever_the_recursion_limit(
    depth: int, where: str
) -> None:
    # msgspec's depth limit follows the interpreter's recursion limit; orjson's is 1024.
    nested = b"[" * depth + b"1" + b"]" * depth
    wrapped = b'{"p":' + nested + b"}" if where == "properties" else nested
    message = raw(event("view"))[:-1] + b',"' + where.encode() + b'":' + wrapped + b"}"
    limit = sys.getrecursionlimit()
    for recursion_limit in (limit, 10_000):
        sys.setrecursionlimit(recursion_limit)
        try:
            assert_same_outcome(message)
        finally:
            sys.setrecursionlimit(limit)


@pytest.mark.parametrize(
    "make",
    [
        lambda: b'{"pad": "' + b"x" * MAX_EVENT_BYTES + b'"}',
        lambda: raw(event(properties={"pad": "x" * (MAX_EVENT_BYTES - len(raw(event())) - 30)})),
    ],
    ids=["over-the-limit", "just-under-the-limit"],
)
def test_the_size_limit_is_the_same(make: Callable[[], bytes]) -> None:
    assert_same_outcome(make())


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents=st.lists(st.one_of(valid_ish_events(), near_valid_events()), max_size=40))
def test_a_fetch_of_mixed_messages_keeps_every_outcome_in_its_place(
    documents: list[dict[str, Any]],
) -> None:
    messages = [to_message(document) for document in documents]

    batch = decode_events(messages, not_after=NOT_AFTER)

    assert outcomes_of(batch) == [one_at_a_time(message, NOT_AFTER) for message in messages]
    assert len(batch.columns) + len(batch.rejected) + len(batch.skipped) == len(messages)
    assert batch.columns.positions == sorted(batch.columns.positions)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1990, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(2025, 3, 1, 10, 0, 0, 999_999, tzinfo=UTC),
        datetime(2099, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ],
)
def test_a_time_column_gives_back_the_models_datetime(moment: datetime) -> None:
    # The worker's audit record of an erasure takes requested_at from the time column.
    for micro in range(0, 1_000_000, 9_973):
        when = moment.replace(microsecond=micro)
        batch = decode_events([raw(event("erasure_request", timestamp=when.isoformat()))])
        assert datetime.fromtimestamp(batch.columns.times.tolist()[0], UTC) == when


def test_a_message_the_one_event_path_fails_on_fails_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # A bug, not bad input: the worker logs and acknowledges that message, as it always did.
    def broken(message: bytes | None, **_: Any) -> Any:
        raise RecursionError(message)

    monkeypatch.setattr("schemas.event_batch.decode_event", broken)
    messages = [raw(event("view")), b"not json", raw(event("purchase"))]

    batch = decode_events(messages)

    assert batch.rows == [0, -1, 1]
    assert isinstance(batch.failed[1], RecursionError)
    assert not batch.rejected and not batch.skipped
