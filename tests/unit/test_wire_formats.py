"""Unit tests of the wire formats other services read: score hashes, alerts, dead letters.

A service reading Redis sees only strings; a CRM consuming alerts relies on deterministic ids
to drop redelivered duplicates; an operator replaying dead letters needs the exact bytes back.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from online_models.scoring.alert_policy import AlertIntent
from schemas import (
    Alert,
    AlertType,
    DeadLetter,
    EventRejected,
    Score,
    Severity,
    SourcePosition,
    UnknownEventType,
    decode_event,
    wire_json_schema,
)
from schemas.scores import ValueReasonField
from streams.commands.producer import customer_key
from streams.convert import alert_of

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "crm-scorer.schema.json"
WHEN = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
SOURCE = SourcePosition(topic="crm.events", partition=1, offset=41)
README_ALERT_FIELDS = {"alert_id", "customer_id", "type", "severity", "timestamp", "details"}
README_DEAD_LETTER_FIELDS = {
    "reason",
    "error",
    "field",
    "source",
    "original_base64",
    "original_text",
    "original_size",
    "original_sha256",
    "original_truncated",
    "dead_lettered_at",
}


def score(**changes: Any) -> Score:
    """A typical score, with ``changes`` applied."""
    fields: dict[str, Any] = {
        "customer_id": "c-42",
        "churn_risk": 0.25,
        "segment": 2,
        "segment_name": "regulars",
        "value": 0.8,
        "monetary": 120.5,
        "orders": 3,
        "recommendations": ["sku-1", "sku-2"],
        "sentiment": -0.125,
        "model_version": "0.1.0+42",
        "event_time": WHEN,
        "as_of": datetime(2025, 3, 4, 10, 0, tzinfo=UTC),  # re-scored three silent days later
        "updated_at": datetime(2025, 3, 1, 10, 0, 0, 123456, tzinfo=UTC),
        **changes,
    }
    return Score(**fields)


def as_redis_returns(fields: dict[str, str]) -> dict[bytes, bytes]:
    """HGETALL as redis-py returns it without ``decode_responses``."""
    return {k.encode(): v.encode() for k, v in fields.items()}


def intent(alert_type: str = "churn_risk") -> AlertIntent:
    return AlertIntent(
        type=alert_type,
        severity="critical",
        details={"score": 0.93, "threshold": 0.7, "reasons": ["days since last basket"]},
    )


# --- scores in Redis ------------------------------------------------------------------------


def test_every_value_of_the_score_hash_is_a_string() -> None:
    fields = score().to_redis()

    assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())


def test_score_survives_the_round_trip_through_redis_bytes() -> None:
    original = score()

    assert Score.from_redis(as_redis_returns(original.to_redis())) == original


def test_sentiment_is_absent_from_the_hash_until_one_was_seen() -> None:
    fields = score(sentiment=None).to_redis()

    assert "sentiment" not in fields
    assert Score.from_redis(as_redis_returns(fields)).sentiment is None


def test_recommendations_are_a_json_array_string() -> None:
    fields = score(recommendations=["sku-1", 'sku "2"', "ß-3"]).to_redis()

    assert orjson.loads(fields["recommendations"]) == ["sku-1", 'sku "2"', "ß-3"]
    assert orjson.loads(score(recommendations=[]).to_redis()["recommendations"]) == []


def test_times_in_the_hash_are_iso_8601_utc() -> None:
    fields = score().to_redis()

    assert datetime.fromisoformat(fields["event_time"]) == WHEN
    assert datetime.fromisoformat(fields["as_of"]) == datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
    assert datetime.fromisoformat(fields["updated_at"]).utcoffset() is not None


def test_a_score_without_as_of_is_as_of_its_latest_event() -> None:
    fields = score(as_of=None).to_redis()

    assert fields["as_of"] == fields["event_time"]
    assert Score.from_redis(as_redis_returns(fields)).as_of == WHEN


@pytest.mark.parametrize("risk", [-0.01, 1.01, float("nan"), float("inf")])
def test_churn_risk_outside_zero_to_one_is_refused(risk: float) -> None:
    with pytest.raises(ValidationError):
        score(churn_risk=risk)


def test_a_hash_with_churn_risk_outside_zero_to_one_is_refused_when_read() -> None:
    fields = score().to_redis()
    fields["churn_risk"] = "1.5"

    with pytest.raises(ValidationError):
        Score.from_redis(as_redis_returns(fields))


identifiers = st.text(min_size=1, max_size=30)
utc_times = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)


@st.composite
def scores(draw: st.DrawFn) -> Score:
    """Scores whose numbers are exact at the precision the hash stores them."""
    return Score(
        customer_id=draw(identifiers),
        churn_risk=draw(st.integers(0, 10**6)) / 10**6,
        segment=draw(st.integers(0, 50)),
        segment_name=draw(st.text(max_size=30)),
        value=draw(st.integers(0, 10**6)) / 10**6,
        monetary=draw(st.integers(-(10**9), 10**11)) / 100,
        orders=draw(st.integers(0, 10**6)),
        recommendations=draw(st.lists(identifiers, max_size=10)),
        sentiment=draw(st.none() | st.integers(-(10**6), 10**6).map(lambda n: n / 10**6)),
        model_version=draw(st.text(max_size=20)),
        event_time=draw(utc_times),
        as_of=draw(utc_times),
        updated_at=draw(utc_times),
        segment_outlier=draw(st.booleans()),
        outlier_score=draw(st.integers(0, 10**6)) / 10**6,
    )


@settings(max_examples=60, deadline=None)
@given(original=scores())
def test_any_score_survives_the_round_trip_through_redis(original: Score) -> None:
    fields = original.to_redis()

    assert all(isinstance(v, str) for v in fields.values())
    assert ("sentiment" in fields) == (original.sentiment is not None)
    assert Score.from_redis(as_redis_returns(fields)) == original
    assert Score.from_redis(fields) == original


# --- alerts ---------------------------------------------------------------------------------


def test_alert_json_has_every_field_the_readme_documents() -> None:
    alert = alert_of("c-42", intent(), WHEN.timestamp(), "evt-7")

    document = orjson.loads(alert.to_bytes())

    assert set(document) >= README_ALERT_FIELDS
    assert document["customer_id"] == "c-42"
    assert document["type"] == "churn_risk"
    assert document["severity"] == "critical"
    assert document["event_id"] == "evt-7"
    assert datetime.fromisoformat(document["timestamp"].replace("Z", "+00:00")) == WHEN
    assert document["details"] == {
        "score": 0.93,
        "threshold": 0.7,
        "reasons": ["days since last basket"],
    }
    assert Alert.model_validate_json(alert.to_bytes()) == alert


def test_alert_types_and_severities_are_the_documented_strings() -> None:
    assert {t.value for t in AlertType} == {
        "churn_risk",
        "segment_change",
        "negative_feedback",
        "unusual_customer",
    }
    assert {s.value for s in Severity} == {"info", "warning", "critical"}


def test_a_redelivered_trigger_raises_an_alert_with_the_same_id() -> None:
    first = alert_of("c-42", intent(), WHEN.timestamp(), "evt-7")
    # Redelivered later: the same event id decides, not the time it was processed.
    again = alert_of("c-42", intent(), WHEN.timestamp() + 60, "evt-7")

    assert first.alert_id == again.alert_id
    assert uuid.UUID(first.alert_id)


def test_alerts_without_a_trigger_event_share_an_id_only_at_the_same_time() -> None:
    first = alert_of("c-42", intent(), WHEN.timestamp(), None)

    assert alert_of("c-42", intent(), WHEN.timestamp(), None).alert_id == first.alert_id
    assert alert_of("c-42", intent(), WHEN.timestamp() + 1, None).alert_id != first.alert_id


@pytest.mark.parametrize(
    ("customer_id", "alert_type", "event_id"),
    [
        ("c-43", "churn_risk", "evt-7"),
        ("c-42", "negative_feedback", "evt-7"),
        ("c-42", "segment_change", "evt-7"),
        ("c-42", "churn_risk", "evt-8"),
        ("c-42", "churn_risk", None),
    ],
)
def test_a_different_customer_type_or_trigger_gives_a_different_alert_id(
    customer_id: str, alert_type: str, event_id: str | None
) -> None:
    reference = alert_of("c-42", intent(), WHEN.timestamp(), "evt-7")

    other = alert_of(customer_id, intent(alert_type), WHEN.timestamp(), event_id)

    assert other.alert_id != reference.alert_id


@settings(max_examples=100, deadline=None)
@given(
    a=st.tuples(identifiers, st.sampled_from(list(AlertType)), identifiers),
    b=st.tuples(identifiers, st.sampled_from(list(AlertType)), identifiers),
)
def test_alert_ids_are_equal_exactly_when_customer_type_and_event_are(
    a: tuple[str, AlertType, str], b: tuple[str, AlertType, str]
) -> None:
    id_a = alert_of(a[0], intent(a[1].value), WHEN.timestamp(), a[2]).alert_id
    id_b = alert_of(b[0], intent(b[1].value), WHEN.timestamp(), b[2]).alert_id

    assert (id_a == id_b) == (a == b)


# --- dead letters ---------------------------------------------------------------------------


def dead_letter(message: bytes | None, reason: str = "not_json") -> DeadLetter:
    return DeadLetter.for_message(
        message,
        reason=reason,
        error="message is not JSON",
        field=None,
        source=SOURCE,
        dead_lettered_at=WHEN,
    )


def test_dead_letter_keeps_the_exact_text_it_received() -> None:
    message = '{"event_id": "évt-1", "amount": "12.5"}'.encode()

    letter = dead_letter(message, reason="wrong_type")

    assert letter.original() == message
    assert base64.b64decode(letter.original_base64) == message
    assert letter.original_text == message.decode()


def test_dead_letter_keeps_invalid_utf8_bytes_without_a_text_copy() -> None:
    message = b'{"event_id": "\xff\xfe\x80"}'

    letter = dead_letter(message, reason="invalid_utf8")

    assert letter.original() == message
    assert letter.original_text is None


def test_dead_letter_json_has_the_readme_fields_and_round_trips() -> None:
    message = b'{"type": "feedback", "rating": 6}'
    with pytest.raises(EventRejected) as caught:
        decode_event(message)
    rejected = caught.value
    letter = DeadLetter.for_message(
        message,
        reason=rejected.reason,
        error=str(rejected),
        field=rejected.field,
        source=SOURCE,
        dead_lettered_at=WHEN,
    )

    document = orjson.loads(letter.to_bytes())

    assert set(document) == README_DEAD_LETTER_FIELDS
    assert document["source"] == {"topic": "crm.events", "partition": 1, "offset": 41}
    assert document["field"] == rejected.field
    assert base64.b64decode(document["original_base64"]) == message
    assert DeadLetter.model_validate_json(letter.to_bytes()) == letter


@settings(max_examples=150, deadline=None)
@given(message=st.binary(max_size=200))
def test_any_bytes_survive_a_dead_letter_round_trip(message: bytes) -> None:
    letter = DeadLetter.model_validate_json(dead_letter(message).to_bytes())

    assert letter.original() == message
    try:
        text: str | None = message.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    assert letter.original_text == text


# --- JSON Schema ----------------------------------------------------------------------------


def test_wire_json_schema_covers_every_wire_format() -> None:
    schema = wire_json_schema()

    assert set(schema["properties"]) == {"event", "score", "alert", "dead_letter", "catalogue_item"}
    assert orjson.loads(orjson.dumps(schema)) == schema


def test_committed_schema_file_matches_the_code() -> None:
    committed = orjson.loads(SCHEMA_FILE.read_bytes())
    generated = orjson.loads(orjson.dumps(wire_json_schema(), option=orjson.OPT_INDENT_2))

    assert committed == generated, "schemas/crm-scorer.schema.json is stale: run `make schema`"


VALID_EVENTS = [
    {
        "event_id": "evt-1",
        "customer_id": "c-42",
        "type": "purchase",
        "timestamp": "2025-03-01T10:00:00+00:00",
        "item_id": "sku-17",
        "amount": 25.0,
        "quantity": 2,
    },
    {
        "event_id": "evt-2",
        "customer_id": "c-42",
        "type": "feedback",
        "timestamp": 1740823200,
        "text": "great",
        "rating": 5,
        "campaign": "spring",
    },
    {
        "event_id": "evt-3",
        "customer_id": "c-42",
        "type": "subscription_cancel",
        "timestamp": "2025-03-01T10:00:00Z",
        "properties": {"why": "price"},
    },
]


@pytest.mark.parametrize("document", VALID_EVENTS, ids=lambda d: d["type"])
def test_valid_events_validate_against_the_json_schema(document: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = wire_json_schema()
    event_schema = {**schema["properties"]["event"], "$schema": schema["$schema"]}

    decode_event(orjson.dumps(document))
    jsonschema.validate(document, event_schema)


@pytest.mark.parametrize(
    "changes",
    [{"amount": "12.5"}, {"customer_id": 42}, {"quantity": 0}, {"type": 7}],
    ids=["amount-string", "customer-id-number", "quantity-0", "type-number"],
)
def test_events_the_decoder_refuses_fail_the_json_schema_too(changes: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = wire_json_schema()
    event_schema = {**schema["properties"]["event"], "$schema": schema["$schema"]}

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**VALID_EVENTS[0], **changes}, event_schema)


def test_value_reasons_are_a_json_array_in_the_hash_valid_under_the_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    reasons = [
        ValueReasonField(
            factor="log_spend_to_date",
            contribution=1.25,
            reason="spent 4,210 to date, more than 95% of customers",
        ),
        ValueReasonField(factor="subscription_cancel", contribution=None, reason="cancelled"),
    ]
    fields = score(value_reasons=reasons).to_redis()

    assert orjson.loads(fields["value_reasons"]) == [r.model_dump() for r in reasons]
    assert orjson.loads(score().to_redis()["value_reasons"]) == []
    read = Score.from_redis(as_redis_returns(fields))
    assert read.value_reasons == reasons
    jsonschema.validate(
        orjson.loads(read.model_dump_json()), wire_json_schema()["properties"]["score"]
    )
    with pytest.raises(jsonschema.ValidationError):  # a reason must say what it means
        bad = orjson.loads(read.model_dump_json())
        del bad["value_reasons"][0]["reason"]
        jsonschema.validate(bad, wire_json_schema()["properties"]["score"])


def test_scores_alerts_and_dead_letters_validate_against_the_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    properties = wire_json_schema()["properties"]
    alert = alert_of("c-42", intent(), WHEN.timestamp(), "evt-7")

    jsonschema.validate(orjson.loads(score().model_dump_json()), properties["score"])
    jsonschema.validate(orjson.loads(alert.to_bytes()), properties["alert"])
    jsonschema.validate(orjson.loads(dead_letter(b"x").to_bytes()), properties["dead_letter"])


# --- the producer's message key -------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "key"),
    [
        (b'{"customer_id": "c-42", "type": "view"}', b"c-42"),
        ('{"customer_id": "kund-ü-7"}'.encode(), "kund-ü-7".encode()),
        (b'{"customer_id": ""}', b""),
        (b'{"customer_id": 42}', None),
        (b'{"customer_id": null}', None),
        (b'{"type": "view"}', None),
        (b'[{"customer_id": "c-42"}]', None),
        (b"not json", None),
        (b'{"customer_id": "\xff"}', None),
        (b"", None),
    ],
)
def test_customer_key_is_the_customer_id_as_utf8_or_none(message: bytes, key: bytes | None) -> None:
    assert customer_key(message) == key


@settings(max_examples=150, deadline=None)
@given(message=st.binary(max_size=100))
def test_customer_key_never_fails_on_any_bytes(message: bytes) -> None:
    key = customer_key(message)

    assert key is None or isinstance(key, bytes)


@settings(max_examples=100, deadline=None)
@given(customer_id=identifiers)
def test_customer_key_of_a_valid_event_is_its_decoded_customer_id(customer_id: str) -> None:
    message = orjson.dumps({**VALID_EVENTS[0], "customer_id": customer_id})

    assert customer_key(message) == decode_event(message).customer_id.encode("utf-8")


def test_an_event_of_a_new_type_is_valid_under_the_json_schema() -> None:
    """New types are counted and skipped by the scorer, so producers may send them."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = wire_json_schema()
    event_schema = {**schema["properties"]["event"], "$schema": schema["$schema"]}
    new_type = {
        "event_id": "e-9",
        "customer_id": "c-1",
        "type": "wishlist_add",
        "timestamp": "2025-01-01T00:00:00Z",
        "item_id": "sku-1",
    }

    jsonschema.validate(new_type, event_schema)
    with pytest.raises(UnknownEventType):
        decode_event(orjson.dumps(new_type))
    with pytest.raises(jsonschema.ValidationError):  # the common fields still apply
        jsonschema.validate({**new_type, "customer_id": 42}, event_schema)


def test_a_huge_rejected_message_still_fits_in_a_dead_letter() -> None:
    raw = b'{"event_id": "' + b"x" * 2_000_000 + b'"}'
    letter = dead_letter(raw)
    assert len(letter.to_bytes()) < 1_000_000
    assert letter.original_truncated
    assert letter.original_size == len(raw)
    assert letter.original() == raw[: len(letter.original())]
    assert letter.original_sha256 == hashlib.sha256(raw).hexdigest()


def test_every_part_validates_inside_the_published_document() -> None:
    """References inside a part resolve within the whole file, not only in the part alone."""
    jsonschema = pytest.importorskip("jsonschema")
    document = orjson.loads(
        (Path(__file__).parents[2] / "schemas" / "crm-scorer.schema.json").read_bytes()
    )
    jsonschema.Draft202012Validator.check_schema(document)

    def validator(part: str) -> Any:
        return jsonschema.Draft202012Validator({**document, "$ref": f"#/properties/{part}"})

    assert validator("event").is_valid(VALID_EVENTS[0])
    assert not validator("event").is_valid({**VALID_EVENTS[0], "customer_id": 42})
    alert = alert_of("c-42", intent(), WHEN.timestamp(), "evt-7")
    assert validator("alert").is_valid(orjson.loads(alert.to_bytes()))
    assert validator("dead_letter").is_valid(orjson.loads(dead_letter(b"x").to_bytes()))
    assert validator("score").is_valid(orjson.loads(score().model_dump_json()))
