"""Unit tests of a customer's features (CustomerProfile) and stored record (CustomerState)."""

from __future__ import annotations

import math
import sys
import tracemalloc

import orjson
import pytest

from online_models.churn.labels import PendingExample
from online_models.customer.activity import DAY, Activity
from online_models.customer.profile import (
    CHURN_FEATURES,
    MAX_PURCHASED_ITEMS,
    MAX_RECENT_ITEMS,
    SEGMENT_FEATURES,
    CustomerProfile,
)
from online_models.scoring.alert_policy import AlertState
from online_models.scoring.state import (
    STATE_VERSION,
    CustomerState,
    StateVersionError,
    event_fingerprint,
)

T0 = 1_735_689_600.0  # 2025-01-01T00:00:00Z


def purchase(time: float, item: str = "sku-1", amount: float = 10.0, quantity: int = 1):
    return Activity("purchase", time, item_id=item, amount=amount, quantity=quantity)


def profile_with(*activities: Activity) -> CustomerProfile:
    profile = CustomerProfile.new(activities[0].time)
    for activity in activities:
        profile.record(activity)
    return profile


def test_basket_lines_sharing_a_timestamp_count_as_one_order():
    profile = profile_with(
        purchase(T0, "sku-1", 10.0),
        purchase(T0, "sku-2", 5.0, quantity=3),
        purchase(T0, "sku-3", 2.5),
        purchase(T0 + DAY, "sku-1", 10.0),
    )

    assert profile.orders == 2
    assert profile.purchase_lines == 4
    assert profile.units == 6
    assert profile.monetary == pytest.approx(27.5)


def test_mean_gap_between_baskets_is_in_days():
    profile = profile_with(
        purchase(T0),
        purchase(T0 + 10 * DAY, "sku-2"),
        purchase(T0 + 10 * DAY, "sku-3"),  # same basket: no new gap
        purchase(T0 + 30 * DAY),
    )

    assert profile.orders == 3
    assert profile.gap_mean_days == pytest.approx(15.0)


def test_a_single_basket_has_no_gap():
    assert profile_with(purchase(T0)).gap_mean_days == 0.0


def test_returns_reduce_net_monetary_but_never_below_zero():
    profile = profile_with(purchase(T0, amount=50.0))
    profile.record(Activity("return", T0 + DAY, item_id="sku-1", amount=20.0, quantity=1))

    assert profile.net_monetary == pytest.approx(30.0)
    assert profile.returns == 1

    profile.record(Activity("return", T0 + 2 * DAY, item_id="sku-1", amount=100.0))

    assert profile.net_monetary == 0.0


def test_out_of_order_events_never_move_time_backwards():
    profile = profile_with(purchase(T0 + 10 * DAY))
    profile.record(Activity("view", T0 + 5 * DAY, item_id="sku-9"))
    profile.record(purchase(T0 + 3 * DAY, "sku-7"))

    assert profile.last_seen == T0 + 10 * DAY
    assert profile.last_order_at == T0 + 10 * DAY
    assert profile.first_seen == T0 + 3 * DAY
    now = profile.last_seen
    assert profile.days_since_order(now) == 0.0
    # Asked about a moment before the latest basket, days are clamped, not negative.
    assert profile.days_since_order(T0) == 0.0
    assert profile.tenure_days(T0) == 0.0
    features = profile.churn_features(T0)
    assert all(math.isfinite(v) for v in features.values())
    assert features["log_days_since_order"] == 0.0
    assert features["log_tenure_days"] == 0.0


def test_purchased_items_are_bounded_and_keep_the_latest():
    profile = CustomerProfile.new(T0)
    for n in range(MAX_PURCHASED_ITEMS + 50):
        profile.record(purchase(T0 + n * DAY, f"sku-{n}"))

    assert MAX_PURCHASED_ITEMS == 200
    assert len(profile.purchased_items) == 200
    assert profile.purchased_items[-1] == f"sku-{MAX_PURCHASED_ITEMS + 49}"
    assert "sku-0" not in profile.purchased_items


def test_recent_items_hold_the_last_ten_distinct_items_latest_last():
    profile = CustomerProfile.new(T0)
    for n in range(15):
        profile.record(purchase(T0 + n * DAY, f"sku-{n}"))
    profile.record(purchase(T0 + 20 * DAY, "sku-7"))  # bought again: moves to the end

    assert MAX_RECENT_ITEMS == 10
    assert len(profile.recent_items) == 10
    assert profile.recent_items[-1] == "sku-7"
    assert profile.recent_items.count("sku-7") == 1
    assert "sku-0" not in profile.recent_items


def test_repeat_purchases_of_an_item_are_remembered_once():
    profile = profile_with(purchase(T0), purchase(T0 + DAY), purchase(T0 + 2 * DAY))

    assert profile.purchased_items == ["sku-1"]
    assert profile.recent_items == ["sku-1"]


def test_sentiment_is_smoothed_and_keeps_the_latest_tone():
    profile = CustomerProfile.new(T0)
    assert profile.sentiment is None

    profile.record(Activity("feedback", T0, text="great"), sentiment=0.8)
    assert profile.sentiment == pytest.approx(0.8)

    profile.record(Activity("support_ticket", T0 + DAY, text="broken"), sentiment=-0.4)
    assert profile.sentiment == pytest.approx(0.2)  # halfway, not jumping to -0.4
    assert profile.last_sentiment == pytest.approx(-0.4)

    profile.record(Activity("view", T0 + 2 * DAY, item_id="sku-1"))
    assert profile.sentiment == pytest.approx(0.2)  # events without text leave it alone
    assert (profile.feedbacks, profile.tickets) == (1, 1)


def test_features_of_a_brand_new_customer_are_finite():
    profile = CustomerProfile.new(T0)

    churn = profile.churn_features(T0)
    segment = profile.segment_features(T0)

    assert len(churn) == 14
    assert all(math.isfinite(v) for v in churn.values())
    assert all(math.isfinite(v) for v in segment.values())
    assert churn["has_ordered"] == 0.0
    assert segment["ordered"] == 0.0


def test_segment_features_stay_on_their_fixed_scale_for_extreme_customers():
    profile = CustomerProfile.new(T0)
    for n in range(500):
        profile.record(purchase(T0 + n * 60.0, f"sku-{n}", amount=1e6))
    for n in range(1000):
        profile.record(Activity("view", T0 + n, item_id="sku-1"))

    features = profile.segment_features(T0 + 5_000 * DAY)

    assert all(0.0 <= features[name] <= 1.5 for name in SEGMENT_FEATURES)
    # The basket is uncapped: the outlier score is there to see how far out it is.
    assert features["basket_spend"] == pytest.approx(math.log1p(1e6) / math.log1p(1_000))


def full_state() -> CustomerState:
    state = CustomerState.new(T0)
    state.profile.record(purchase(T0, "sku-1", 12.5, 2))
    state.profile.record(purchase(T0 + DAY, "sku-2", 7.0))
    state.profile.record(Activity("feedback", T0 + 2 * DAY, text="ok", rating=4), sentiment=0.4)
    state.pending = [
        PendingExample(T0 + DAY, state.profile.churn_features(T0 + DAY), 0.37),
        PendingExample(T0 + 16 * DAY, state.profile.churn_features(T0 + 16 * DAY), 0.52),
    ]
    state.segment, state.segment_candidate, state.segment_votes = 2, 4, 1
    state.cancelled = True
    state.alerts = AlertState(churn_armed=False, last_alert_at={"churn_risk": T0 + DAY})
    state.record_applied(3, 41, event_fingerprint("e-41"), window=4)
    return state


def test_state_to_dict_is_json_and_round_trips():
    state = full_state()

    raw = orjson.dumps(state.to_dict())
    restored = CustomerState.from_dict(orjson.loads(raw))

    assert restored == state
    assert [example.time for example in restored.pending] == [T0 + DAY, T0 + 16 * DAY]
    assert [example.features for example in restored.pending] == [
        example.features for example in state.pending
    ]
    assert restored.profile.purchased_items == ["sku-1", "sku-2"]


def test_a_stored_record_occupies_about_its_own_length_in_memory():
    # The worker keeps one record per customer for as long as it owns them: a record must
    # not hold on to a serialiser's scratch buffer (orjson's are 4 KB and up).
    states = [full_state() for _ in range(200)]
    tracemalloc.start()
    try:
        records = [state.encode() for state in states]
        allocated, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    record_bytes = sum(sys.getsizeof(record) for record in records)
    assert allocated < 1.25 * record_bytes + 8 * len(records)


def test_a_state_rebuilt_in_memory_does_not_share_anything_with_the_original():
    state = full_state()
    restored = CustomerState.from_dict(state.to_dict())

    restored.profile.record(purchase(T0 + 3 * DAY, "sku-3"))
    restored.pending[0].features["log_orders"] = 99.0
    restored.pending.pop()
    restored.alerts.last_alert_at["negative_feedback"] = T0

    assert "sku-3" not in state.profile.purchased_items
    assert state.pending[0].features["log_orders"] != 99.0
    assert len(state.pending) == 2
    assert "negative_feedback" not in state.alerts.last_alert_at


def test_records_of_format_versions_one_and_two_are_readable():
    current = full_state().to_dict()
    older = format_one_record()
    two = full_state().to_dict()
    two["v"] = 2
    del two["offset"], two["recent_events"]

    assert (current["v"], older["v"]) == (STATE_VERSION, 1) == (3, 1)
    assert CustomerState.from_dict(current) == full_state()
    assert CustomerState.from_dict(older).profile == full_state().profile
    # Format 2 knew no applied events: nothing it holds is taken for a duplicate.
    from_two = CustomerState.from_dict(two)
    assert (from_two.offset, from_two.recent_events) == (None, [])
    assert not from_two.has_applied(3, 0, event_fingerprint("e-41"))


def test_an_applied_event_is_recognised_by_offset_or_by_id_within_the_window():
    state = CustomerState.new(T0)
    for offset in range(10, 16):
        state.record_applied(0, offset, event_fingerprint(f"e-{offset}"), window=4)

    assert state.has_applied(0, 15, None)  # redelivered from its partition
    assert state.has_applied(0, 3, None)
    assert not state.has_applied(0, 16, None)
    assert state.has_applied(0, 99, event_fingerprint("e-12"))  # sent again by the producer
    assert not state.has_applied(0, 99, event_fingerprint("e-11"))  # fell out of the window
    assert len(state.recent_events) == 4


def test_offsets_of_a_partition_the_customer_left_do_not_hide_new_events():
    state = CustomerState.new(T0)
    state.record_applied(1, 500, None, window=4)

    assert not state.has_applied(3, 10, None)  # the topic was repartitioned
    state.record_applied(3, 10, None, window=4)
    assert (state.shard, state.offset) == (3, 10)
    assert not state.has_applied(3, 11, None)
    assert state.has_applied(3, 10, None)


@pytest.mark.parametrize("version", [None, 0, STATE_VERSION + 1, "1", "3"])
def test_a_record_of_another_format_version_is_refused(version):
    data = full_state().to_dict()
    if version is None:
        del data["v"]
    else:
        data["v"] = version

    with pytest.raises(StateVersionError, match="format version"):
        CustomerState.from_dict(data)


def format_one_record() -> dict:
    """A record as format 1 wrote it: one pending example, its features named in a dict."""
    data = full_state().to_dict()
    data["v"] = 1
    data["pending"] = {
        "time": T0 + DAY,
        "features": full_state().profile.churn_features(T0 + DAY),
        "risk": 0.37,
    }
    return data


def test_a_format_one_record_reads_its_pending_example_as_a_one_element_list():
    stored = orjson.loads(orjson.dumps(format_one_record()))

    state = CustomerState.from_dict(stored)

    (example,) = state.pending
    assert example.time == T0 + DAY
    assert example.risk == 0.37
    assert example.features == full_state().profile.churn_features(T0 + DAY)
    # Written back, it is a format-2 record that reads the same.
    rewritten = orjson.loads(orjson.dumps(state.to_dict()))
    assert rewritten["v"] == STATE_VERSION
    assert CustomerState.from_dict(rewritten) == state


def test_a_format_one_record_without_a_pending_example_reads_an_empty_list():
    stored = {**format_one_record(), "pending": None}

    assert CustomerState.from_dict(stored).pending == []


def test_pending_examples_store_their_features_in_the_churn_model_order():
    state = full_state()

    stored = orjson.loads(orjson.dumps(state.to_dict()))

    first = stored["pending"][0]
    assert set(first) == {"time", "x", "risk"}
    assert first["x"] == [state.pending[0].features[name] for name in CHURN_FEATURES]
    assert set(CHURN_FEATURES) == set(state.profile.churn_features(T0))


def test_a_new_segment_needs_consecutive_votes():
    state = CustomerState.new(T0)

    assert state.confirm_segment(1, 3) is None
    assert state.segment == 1  # the first prediction is adopted at once

    # Two votes for 2, interrupted by 1: no move, and the count starts over.
    assert [state.confirm_segment(s, 3) for s in (2, 2, 1, 2, 2)] == [None] * 5
    assert state.segment == 1
    # An interruption by a third segment also resets the count.
    assert [state.confirm_segment(s, 3) for s in (5, 2, 2)] == [None] * 3
    assert state.segment == 1

    assert state.confirm_segment(2, 3) == 1  # the third vote in a row: moved, from 1
    assert state.segment == 2
    assert state.confirm_segment(2, 3) is None


def test_one_confirmation_moves_at_once():
    state = CustomerState.new(T0)
    state.confirm_segment(0, 1)

    assert state.confirm_segment(3, 1) == 0
    assert state.segment == 3


def test_a_basket_arriving_late_still_counts_as_an_order():
    profile = profile_with(
        purchase(10 * DAY), purchase(20 * DAY), purchase(3 * DAY), purchase(3 * DAY, "sku-2")
    )
    assert profile.orders == 3
    assert profile.last_order_at == 20 * DAY
    assert profile.gap_mean_days == 10.0  # gaps come from baskets seen in order


def test_the_outlier_streak_survives_the_record_and_an_older_flag_reads_as_one() -> None:
    state = full_state()
    state.outlier_streak = 2

    back = CustomerState.decode(state.encode())

    assert back.outlier_streak == 2 and back.outlier
    # A record written when the slot held the flag (true) reads as a streak of one score.
    record = orjson.loads(state.encode())
    record[13] = True
    assert CustomerState.decode(orjson.dumps(record)).outlier_streak == 1
    record[13] = False
    assert not CustomerState.decode(orjson.dumps(record)).outlier
