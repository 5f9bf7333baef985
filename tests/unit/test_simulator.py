"""Unit tests of the event stream simulator: valid, ordered, deterministic and learnable."""

from __future__ import annotations

import itertools
import logging
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas import EventRejected, decode_event, parse_event_time
from schemas.events import EVENT_FIELDS
from streams.commands.simulator import (
    SimulationConfig,
    generate_events,
    generate_messages,
)

logger = logging.getLogger(__name__)

DEFAULT = SimulationConfig()
END = DEFAULT.start + timedelta(days=DEFAULT.days)
SMALL = SimulationConfig(customers=60, items=80, days=120.0)


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    """The whole default stream, generated once."""
    return list(generate_events(DEFAULT))


@pytest.fixture(scope="module")
def spend(events: list[dict[str, Any]]) -> Counter[str]:
    totals: Counter[str] = Counter()
    for event in events:
        if event["type"] == "purchase":
            totals[event["customer_id"]] += event["amount"]
    return totals


def test_default_volume_and_event_mix(events: list[dict[str, Any]]) -> None:
    assert 15_000 <= len(events) <= 40_000
    mix = Counter(event["type"] for event in events)
    assert set(mix) == {
        "purchase",
        "view",
        "cart_add",
        "support_ticket",
        "feedback",
        "subscription_cancel",
        "return",
    }
    assert mix["view"] > mix["purchase"] > mix["feedback"] > mix["subscription_cancel"]
    assert len({event["customer_id"] for event in events}) >= 0.95 * DEFAULT.customers


def test_every_event_decodes(events: list[dict[str, Any]]) -> None:
    for event in events:
        decoded = decode_event(orjson.dumps(event))
        assert decoded.event_id == event["event_id"]
        assert decoded.customer_id == event["customer_id"]


def test_timestamps_are_non_decreasing_and_inside_the_period(
    events: list[dict[str, Any]],
) -> None:
    times = [parse_event_time(event["timestamp"]) for event in events]
    assert all(earlier <= later for earlier, later in itertools.pairwise(times))
    assert DEFAULT.start <= times[0]
    assert times[-1] < END


def test_both_timestamp_encodings_extras_and_properties(events: list[dict[str, Any]]) -> None:
    kinds = Counter(type(event["timestamp"]).__name__ for event in events)
    assert kinds["str"] > 0.7 * len(events)
    assert kinds["int"] > 0
    assert kinds["float"] > 0
    iso = next(event["timestamp"] for event in events if isinstance(event["timestamp"], str))
    assert iso.endswith("+00:00")
    assert any(event.get("properties", {}).get("channel") for event in events)
    assert any(set(event) - EVENT_FIELDS for event in events)
    assert all(
        re.fullmatch(r"sku-\d{4}", event["item_id"]) for event in events if "item_id" in event
    )


def test_event_ids_are_unique(events: list[dict[str, Any]]) -> None:
    ids = [event["event_id"] for event in events]
    assert len(set(ids)) == len(ids)
    assert ids[0] == f"{DEFAULT.seed}-0"


def test_same_seed_same_stream_and_other_seed_other_stream() -> None:
    first = list(generate_events(SMALL))
    assert first == list(generate_events(SMALL))
    other = list(generate_events(SimulationConfig(customers=60, items=80, days=120.0, seed=8)))

    def strip(stream: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [event | {"event_id": ""} for event in stream[:200]]

    assert strip(other) != strip(first)


def test_limit_yields_a_prefix() -> None:
    full = list(generate_events(SMALL))
    assert list(generate_events(SMALL, limit=250)) == full[:250]
    assert list(generate_events(SMALL, limit=0)) == []
    assert len(list(generate_events(SMALL, limit=10 * len(full)))) == len(full)
    with pytest.raises(ValueError, match="limit"):
        list(generate_events(SMALL, limit=-1))


def test_customers_join_at_different_times(events: list[dict[str, Any]]) -> None:
    first_seen: dict[str, datetime] = {}
    for event in events:
        first_seen.setdefault(event["customer_id"], parse_event_time(event["timestamp"]))
    late = sum(seen > DEFAULT.start + timedelta(days=60) for seen in first_seen.values())
    assert 0.2 * len(first_seen) < late < 0.8 * len(first_seen)


def test_some_customers_go_silent_past_the_churn_horizon(events: list[dict[str, Any]]) -> None:
    last_seen: dict[str, datetime] = {}
    for event in events:
        last_seen[event["customer_id"]] = parse_event_time(event["timestamp"])
    silent = [c for c, seen in last_seen.items() if END - seen > timedelta(days=90)]
    assert 0.1 * len(last_seen) < len(silent) < 0.5 * len(last_seen)
    active = [c for c, seen in last_seen.items() if END - seen < timedelta(days=30)]
    assert len(active) > 0.4 * len(last_seen)


def test_cancellations_end_a_customer_timeline(events: list[dict[str, Any]]) -> None:
    cancelled = {e["customer_id"] for e in events if e["type"] == "subscription_cancel"}
    assert len(cancelled) >= 10
    last_type = {event["customer_id"]: event["type"] for event in events}
    assert all(last_type[customer] == "subscription_cancel" for customer in cancelled)
    last_seen = {e["customer_id"]: parse_event_time(e["timestamp"]) for e in events}
    assert all(END - last_seen[customer] > timedelta(days=90) for customer in cancelled)


def test_negative_feedback_from_valuable_customers(
    events: list[dict[str, Any]], spend: Counter[str]
) -> None:
    top = {customer for customer, _ in spend.most_common(len(spend) // 5)}
    negative = [e for e in events if e["type"] == "feedback" and e.get("rating", 5) <= 2]
    assert sum(event["customer_id"] in top for event in negative) >= 10
    assert any(event["customer_id"] not in top for event in negative)


def test_feedback_text_matches_rating(events: list[dict[str, Any]]) -> None:
    feedback = [e for e in events if e["type"] == "feedback"]
    low = {e["text"] for e in feedback if e.get("rating") is not None and e["rating"] <= 2}
    high = {e["text"] for e in feedback if e.get("rating") is not None and e["rating"] >= 4}
    assert low
    assert high
    assert not low & high
    assert len({e["text"] for e in feedback}) >= 50
    assert any("rating" not in e for e in feedback)
    assert any("disappointed" in text.lower() or "terrible" in text.lower() for text in low)
    assert any("love" in text.lower() or "great" in text.lower() for text in high)
    tickets = {e["text"] for e in events if e["type"] == "support_ticket"}
    assert len(tickets) >= 30


def test_purchases_come_in_baskets_of_favourite_items(events: list[dict[str, Any]]) -> None:
    lines: Counter[tuple[str, Any]] = Counter()
    bought: defaultdict[str, set[str]] = defaultdict(set)
    for event in events:
        if event["type"] == "purchase":
            lines[(event["customer_id"], event["timestamp"])] += 1
            bought[event["customer_id"]].add(event["item_id"])
            assert event["quantity"] >= 1
            assert event["amount"] >= 0
    assert sum(count >= 2 for count in lines.values()) > 0.3 * len(lines)
    # Customers stick to a few categories: far fewer distinct items than purchase lines.
    repeat_buyers = [c for c, items in bought.items() if len(items) >= 5]
    assert repeat_buyers
    catalogue_share = sum(len(bought[c]) for c in repeat_buyers) / len(repeat_buyers)
    assert catalogue_share < 0.15 * DEFAULT.items


def test_views_precede_purchases(events: list[dict[str, Any]]) -> None:
    viewed: defaultdict[str, set[str]] = defaultdict(set)
    seen_first = total = 0
    for event in events:
        if event["type"] in ("view", "cart_add"):
            viewed[event["customer_id"]].add(event["item_id"])
        elif event["type"] == "purchase":
            total += 1
            seen_first += event["item_id"] in viewed[event["customer_id"]]
    assert seen_first > 0.4 * total


def test_returns_refund_at_most_what_was_paid(events: list[dict[str, Any]]) -> None:
    paid: defaultdict[tuple[str, str], float] = defaultdict(float)
    returns = 0
    for event in events:
        key = (event["customer_id"], event.get("item_id", ""))
        if event["type"] == "purchase":
            paid[key] = max(paid[key], event["amount"])
        elif event["type"] == "return":
            returns += 1
            assert event["amount"] <= paid[key] + 1e-9
    assert returns >= 50


def test_messages_without_bad_events_are_the_event_stream() -> None:
    messages = list(generate_messages(SMALL))
    expected = list(generate_events(SMALL))
    assert len(messages) == len(expected)
    for (key, value), event in zip(messages, expected, strict=True):
        assert key == event["customer_id"].encode()
        assert orjson.loads(value) == event


def test_bad_messages_are_mixed_in_and_rejected_with_reasons() -> None:
    config = SimulationConfig(bad_event_ratio=0.05)
    messages = list(generate_messages(config, limit=12_000))
    assert len(messages) == 12_000
    reasons: Counter[str] = Counter()
    good: list[dict[str, Any]] = []
    for key, value in messages:
        try:
            event = decode_event(value)
        except EventRejected as rejected:
            reasons[rejected.reason] += 1
            continue
        assert key == event.customer_id.encode()
        good.append(orjson.loads(value))
    bad_share = sum(reasons.values()) / len(messages)
    assert 0.04 <= bad_share <= 0.06
    assert len(reasons) >= 6
    assert {
        "not_json",
        "not_an_object",
        "missing_field",
        "wrong_type",
        "invalid_value",
        "bad_timestamp",
        "invalid_utf8",
    } <= set(reasons)
    assert good == list(generate_events(config, limit=len(good)))


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="bad_event_ratio"):
        SimulationConfig(bad_event_ratio=1.5)
    with pytest.raises(ValueError, match="customers"):
        SimulationConfig(customers=0)
    with pytest.raises(ValueError, match="timezone"):
        SimulationConfig(start=datetime(2025, 1, 1))
    assert SimulationConfig().start == datetime(2025, 1, 1, tzinfo=UTC)


def test_tiny_configs_still_produce_valid_streams() -> None:
    for config in (
        SimulationConfig(customers=1, items=1, days=1.0),
        SimulationConfig(customers=5, items=3, days=10.0, bad_event_ratio=0.3),
    ):
        for _key, value in generate_messages(config, limit=500):
            try:
                decode_event(value)
            except EventRejected:
                assert config.bad_event_ratio > 0
