"""Hostile input past the decoder: whatever decodes is scored without an exception.

The decoder's own properties (any bytes give an event, an unknown type or a named dead-letter
reason) are in ``test_events.py``; here every event that does decode, however extreme its
values, goes through the scoring engine, and the state it leaves stays storable.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from online_models.scoring.engine import ScoringEngine
from online_models.scoring.scorer import CustomerScorer
from online_models.scoring.state import CustomerState
from schemas.errors import EventRejected, UnknownEventType
from schemas.events import ErasureRequestEvent, decode_event
from streams.convert import activity_of
from tests.unit.test_events import event, near_valid_events, to_message


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"child": value}
    return value


extremes = st.fixed_dictionaries(
    {
        "amount": st.one_of(st.floats(0, 1e12), st.just(1e12), st.just(0.0), st.just(5e-324)),
        "quantity": st.integers(1, 1_000_000),
        "timestamp": st.floats(631_152_000, 4_102_444_799),  # 1990 .. 2099
        "text": st.one_of(st.text(max_size=50), st.just("x" * 20_000), st.just("😡" * 5_000)),
        "rating": st.integers(1, 5),
        "depth": st.integers(0, 900),  # of nested properties: built in the test
        "item_id": st.text(min_size=1, max_size=256),
        "customer_id": st.text(min_size=1, max_size=256),
        "type": st.sampled_from(
            ["purchase", "view", "cart_add", "support_ticket", "feedback", "subscription_cancel"]
        ),
    }
)


def engine_with_history() -> ScoringEngine:
    engine = ScoringEngine(CustomerScorer(), {})
    for n in range(20):
        decoded = decode_event(to_message(event(customer_id=f"c-{n % 3}", event_id=f"h-{n}")))
        engine.process(decoded.customer_id, activity_of(decoded))
    return engine


def assert_scored_or_rejected(message: bytes) -> None:
    try:
        decoded = decode_event(message)
    except (EventRejected, UnknownEventType):
        return
    engine = engine_with_history()
    if isinstance(decoded, ErasureRequestEvent):  # the worker erases instead of scoring
        engine.forget(decoded.customer_id)
        assert decoded.customer_id not in engine.states
        return
    for scored in engine.process(decoded.customer_id, activity_of(decoded), offset=99):
        score = scored.outcome.score
        assert 0.0 <= score.churn_risk <= 1.0
        assert 0.0 <= score.value <= 1.0
        assert math.isfinite(score.monetary)
        state = scored.outcome.state
        stored = orjson.loads(orjson.dumps(state.to_dict()))
        assert CustomerState.from_dict(stored) == state
        engine.scorer.recommend(scored.customer_id, state)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=near_valid_events())
def test_any_near_valid_event_that_decodes_is_scored(document: dict[str, Any]) -> None:
    assert_scored_or_rejected(to_message(document))


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=extremes)
@example(values={"type": "purchase", "amount": 1e12, "quantity": 1_000_000, "timestamp": 4.1e9})
@example(values={"type": "feedback", "text": "x" * 20_000, "depth": 900})
def test_extreme_but_valid_values_are_scored(values: dict[str, Any]) -> None:
    document = event(values.get("type", "purchase"))
    document.update(values)
    document["properties"] = nested(document.pop("depth", 0))
    assert_scored_or_rejected(to_message(document))


def test_an_extra_item_id_on_a_cancellation_does_not_reach_the_models() -> None:
    # Extra fields are attributes of a pydantic event: only the types that have an item give one.
    decoded = decode_event(to_message({**event("subscription_cancel"), "item_id": {"a": 1}}))

    assert activity_of(decoded).item_id is None
