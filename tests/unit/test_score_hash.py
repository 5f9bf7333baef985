"""The worker's score hash, built from the score's values without a pydantic object: the same
strings as the contract's ``Score.to_redis``, valid under the JSON Schema, and refusing what
the contract refuses, naming the field."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from online_models.scoring.reasons import ChurnReason
from online_models.scoring.scorer import CustomerScore
from schemas.json_schema import wire_json_schema
from schemas.score_hash import UnwritableScore
from schemas.scores import Score
from streams.convert import score_fields, score_of

UPDATED = datetime(2026, 12, 7, 3, 30, tzinfo=UTC)
# Event times from 1990 to the year 9000, in seconds.
times = st.floats(631_152_000.0, 221_845_392_000.0)
units = st.floats(0.0, 1.0)
amounts = st.floats(-1e7, 1e7, allow_nan=False)
reasons = st.lists(
    st.builds(
        ChurnReason,
        factor=st.sampled_from(["log_days_since_order", "expected_orders", "complaints"]),
        contribution=st.one_of(st.none(), st.floats(-50.0, 50.0)),
        reason=st.text(max_size=60),
    ),
    max_size=3,
)
value_reasons = st.lists(
    st.builds(
        ChurnReason,
        factor=st.sampled_from(["log_spend_to_date", "spend_per_order", "subscription_cancel"]),
        contribution=st.one_of(st.none(), st.floats(-50.0, 50.0)),
        reason=st.text(max_size=60),
    ),
    max_size=2,
)
scores = st.builds(
    CustomerScore,
    churn_risk=units,
    segment=st.integers(-1, 40),
    segment_name=st.text(max_size=30),
    value=units,
    monetary=amounts,
    orders=st.integers(0, 10_000),
    sentiment=st.one_of(st.none(), st.floats(-1.0, 1.0)),
    event_time=times,
    as_of=times,
    model_version=st.just("0.9.0+v12"),
    p_alive=units,
    expected_orders=st.floats(0.0, 1e4),
    predicted_clv=st.floats(0.0, 1e8),
    next_order_expected=st.one_of(st.none(), times),
    churn_reasons=reasons,
    segment_outlier=st.booleans(),
    outlier_score=units,
    value_reasons=value_reasons,
)
recommendations = st.lists(st.text(min_size=1, max_size=12), max_size=10)


@settings(max_examples=300, deadline=None)
@given(score=scores, ranked=recommendations, customer_id=st.text(min_size=1, max_size=20))
def test_the_fields_are_the_contracts_strings(
    score: CustomerScore, ranked: list[str], customer_id: str
) -> None:
    fields = score_fields(customer_id, score, ranked, UPDATED.isoformat())

    assert fields == score_of(customer_id, score, ranked, UPDATED).to_redis()


@settings(max_examples=50, deadline=None)
@given(score=scores, ranked=recommendations)
def test_a_written_hash_reads_back_valid_under_the_json_schema(
    score: CustomerScore, ranked: list[str]
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    hash_as_stored = {
        name.encode(): value.encode()
        for name, value in score_fields("c-42", score, ranked, UPDATED.isoformat()).items()
    }

    read = Score.from_redis(hash_as_stored)

    jsonschema.validate(
        orjson.loads(read.model_dump_json()), wire_json_schema()["properties"]["score"]
    )


def a_score(**changes: object) -> CustomerScore:
    return CustomerScore(0.2, 1, "regulars", 0.5, 10.0, 1, None, 1e9, 1e9, "v")._replace(**changes)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("churn_risk", math.nan),
        ("p_alive", 1.5),
        ("expected_orders", -1.0),
        ("outlier_score", -0.1),
        ("orders", -1),
        ("segment", -2),
        ("sentiment", 2.0),
        ("as_of", math.inf),
    ],
)
def test_a_value_the_contract_refuses_is_refused_naming_its_field(
    field: str, value: object
) -> None:
    with pytest.raises(UnwritableScore, match=f"^{field}: "):
        score_fields("c-1", a_score(**{field: value}), [], UPDATED.isoformat())
    with pytest.raises((ValueError, OverflowError)):  # the pydantic contract refuses it too
        score_of("c-1", a_score(**{field: value}), [], UPDATED)


@pytest.mark.parametrize(("field", "value"), [("monetary", math.nan), ("predicted_clv", math.inf)])
def test_a_number_that_is_not_one_is_refused_where_the_contracts_types_let_it_pass(
    field: str, value: float
) -> None:
    """``float`` fields take NaN and infinity in pydantic; the CRM reading the hash could not
    use either, so they are refused here."""
    with pytest.raises(UnwritableScore, match=f"^{field}: "):
        score_fields("c-1", a_score(**{field: value}), [], UPDATED.isoformat())


def test_an_order_expected_after_the_year_9999_is_no_order_to_expect() -> None:
    """A customer BG/NBD reads as all but gone gets no ``next_order_expected`` (as one who
    never ordered), where the score object could not be made at all."""
    fields = score_fields("c-1", a_score(next_order_expected=1e300), [], UPDATED.isoformat())

    assert "next_order_expected" not in fields
    assert Score.from_redis(fields).next_order_expected is None
