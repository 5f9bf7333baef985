"""Unit tests of when a score becomes an alert: thresholds, hysteresis, cooldowns (event time)."""

from __future__ import annotations

import pytest

from online_models.customer.activity import DAY
from online_models.scoring.alert_policy import AlertPolicy, AlertState, AlertThresholds

T0 = 1_735_689_600.0


def churn_alerts(policy, state, risks, *, start=T0, step=DAY, labels=1_000):
    """Feed a series of risks, one per ``step`` of event time; the alerts raised at each."""
    return [
        policy.churn(state, risk, value_at_risk=1e6, time=start + n * step, labels=labels)
        for n, risk in enumerate(risks)
    ]


def test_risk_hovering_around_the_threshold_alerts_once():
    policy = AlertPolicy(AlertThresholds(cooldown_days=0.0))
    state = AlertState()

    raised = churn_alerts(policy, state, [0.69, 0.71, 0.70, 0.72, 0.69, 0.71, 0.73])

    assert [len(a) for a in raised] == [0, 1, 0, 0, 0, 0, 0]


def test_churn_alert_rearms_only_below_threshold_minus_hysteresis():
    policy = AlertPolicy(AlertThresholds(cooldown_days=0.0))
    state = AlertState()

    # 0.65 and 0.61 are below the threshold but not below 0.7 - 0.1: still disarmed.
    raised = churn_alerts(policy, state, [0.8, 0.65, 0.61, 0.8, 0.55, 0.8])

    assert [len(a) for a in raised] == [1, 0, 0, 0, 0, 1]


def test_churn_alert_respects_the_cooldown_in_event_days():
    policy = AlertPolicy(AlertThresholds(cooldown_days=7.0))
    state = AlertState()

    first = policy.churn(state, 0.9, value_at_risk=1e6, time=T0, labels=1_000)
    policy.churn(state, 0.2, value_at_risk=1e6, time=T0 + 1 * DAY, labels=1_000)  # re-armed
    early = policy.churn(state, 0.9, value_at_risk=1e6, time=T0 + 6.9 * DAY, labels=1_000)
    due = policy.churn(state, 0.9, value_at_risk=1e6, time=T0 + 7 * DAY, labels=1_000)

    assert len(first) == 1
    assert early == []
    assert len(due) == 1  # the cooldown did not use up the re-armed trigger


def test_cooldown_counts_event_time_not_calls():
    policy = AlertPolicy(AlertThresholds(cooldown_days=7.0))
    state = AlertState()

    # Thousands of high-risk scores within one event-time day raise one alert.
    raised = churn_alerts(policy, state, [0.9, 0.1] * 1_000, step=30.0)

    assert sum(len(a) for a in raised) == 1


def test_churn_alerts_wait_for_enough_labels():
    policy = AlertPolicy(AlertThresholds(churn_min_labels=200, cooldown_days=0.0))
    state = AlertState()

    young = policy.churn(state, 0.95, value_at_risk=1e6, time=T0, labels=199)
    trained = policy.churn(state, 0.95, value_at_risk=1e6, time=T0 + DAY, labels=200)

    assert young == []
    assert len(trained) == 1


def test_churn_severity_is_critical_from_halfway_to_one():
    policy = AlertPolicy(AlertThresholds(churn_risk=0.7, cooldown_days=0.0))

    warning = policy.churn(AlertState(), 0.84, value_at_risk=1e6, time=T0, labels=1_000)
    critical = policy.churn(AlertState(), 0.85, value_at_risk=1e6, time=T0, labels=1_000)

    assert warning[0].severity == "warning"
    assert critical[0].severity == "critical"


def test_churn_alert_details_carry_score_threshold_and_reasons():
    policy = AlertPolicy(AlertThresholds())

    reason = {"factor": "overdue_ratio", "contribution": 0.8, "reason": "no order for 40 days"}
    (alert,) = policy.churn(
        AlertState(),
        0.8123456789,
        value_at_risk=812.3456,
        time=T0,
        labels=1_000,
        details=lambda: {"p_alive": 0.4, "predicted_clv": 1000.0, "reasons": [reason]},
    )

    assert alert.type == "churn_risk"
    assert alert.details["score"] == pytest.approx(0.812346)
    assert alert.details["threshold"] == 0.7
    assert alert.details["value_at_risk"] == pytest.approx(812.35)
    assert (alert.details["p_alive"], alert.details["predicted_clv"]) == (0.4, 1000.0)
    assert alert.details["reasons"] == [reason]


def test_a_cheap_customer_at_risk_raises_no_churn_alert_a_valuable_one_does():
    policy = AlertPolicy(AlertThresholds(churn_min_labels=0, value_at_risk=500.0))
    cheap = policy.churn(AlertState(), 0.95, value_at_risk=0.95 * 40.0, time=T0, labels=1)
    valuable = policy.churn(AlertState(), 0.75, value_at_risk=0.75 * 2_000.0, time=T0, labels=1)
    assert cheap == [] and len(valuable) == 1


def test_silence_drifting_a_customer_towards_lost_raises_no_segment_change_alert():
    policy = AlertPolicy(AlertThresholds())
    for names in (("regulars", "lapsing"), ("lapsing", "hibernating"), ("hibernating", "lost")):
        assert segment_change(policy, AlertState(), names=names, by_silence=True) == []
    # A customer's own purchase moving them still alerts, as does leaving the lapsing ones.
    assert len(segment_change(policy, AlertState(), names=("regulars", "lapsing"))) == 1
    back = segment_change(policy, AlertState(), names=("lapsing", "regulars"), by_silence=True)
    assert len(back) == 1
    # The operator who wants every drift asks for it.
    drifts = AlertPolicy(AlertThresholds(segment_alert_on_silence=True))
    assert (
        len(segment_change(drifts, AlertState(), names=("regulars", "lapsing"), by_silence=True))
        == 1
    )


def negative(policy, state, *, sentiment, value, time=T0, kind="feedback"):
    return policy.negative_feedback(state, time=time, sentiment=sentiment, value=value, kind=kind)


@pytest.mark.parametrize(
    ("sentiment", "value", "alerted"),
    [
        (-0.3, 0.8, True),  # both limits are inclusive
        (-0.9, 0.95, True),
        (-0.29, 0.95, False),  # not negative enough
        (0.6, 0.95, False),
        (-0.9, 0.79, False),  # not a top-value customer
        (-0.9, 0.0, False),
    ],
)
def test_negative_feedback_needs_negative_tone_and_a_valuable_customer(sentiment, value, alerted):
    policy = AlertPolicy(AlertThresholds(negative_sentiment=-0.3, valuable_customer_value=0.8))

    raised = negative(policy, AlertState(), sentiment=sentiment, value=value)

    assert bool(raised) is alerted


def test_negative_feedback_is_critical_for_the_very_most_valuable():
    policy = AlertPolicy(AlertThresholds(valuable_customer_value=0.8))

    (warning,) = negative(policy, AlertState(), sentiment=-0.8, value=0.85)
    (critical,) = negative(policy, AlertState(), sentiment=-0.8, value=0.9)

    assert warning.severity == "warning"
    assert critical.severity == "critical"


def test_negative_feedback_details_and_cooldown():
    policy = AlertPolicy(AlertThresholds(cooldown_days=7.0))
    state = AlertState()

    (alert,) = negative(policy, state, sentiment=-0.61, value=0.91, kind="support_ticket")
    again = negative(policy, state, sentiment=-0.9, value=0.91, time=T0 + 3 * DAY)
    later = negative(policy, state, sentiment=-0.9, value=0.91, time=T0 + 7 * DAY)

    assert alert.type == "negative_feedback"
    assert alert.details["score"] == pytest.approx(-0.61)
    assert alert.details["threshold"] == -0.3
    assert alert.details["value"] == pytest.approx(0.91)
    assert alert.details["reasons"] == ["negative support ticket from a top-value customer"]
    assert again == []
    assert len(later) == 1


def test_alert_types_have_separate_cooldowns():
    policy = AlertPolicy(AlertThresholds(cooldown_days=7.0))
    state = AlertState()

    churn = policy.churn(state, 0.9, value_at_risk=1e6, time=T0, labels=1_000)
    feedback = negative(policy, state, sentiment=-0.9, value=0.9, time=T0 + DAY)

    assert len(churn) == 1
    assert len(feedback) == 1


def segment_change(policy, state, **overrides):
    arguments = {
        "time": T0,
        "previous": 1,
        "current": 3,
        "names": ("regulars", "lapsing"),
        "orders": 5,
        "learned": 10_000,
    }
    arguments.update(overrides)
    return policy.segment_change(state, **arguments)


def test_segment_change_alert_for_an_established_customer():
    policy = AlertPolicy(AlertThresholds())

    (alert,) = segment_change(policy, AlertState())

    assert alert.type == "segment_change"
    assert alert.severity == "info"
    assert alert.details["score"] == 3
    assert "threshold" in alert.details
    assert (alert.details["from_segment"], alert.details["to_segment"]) == (1, 3)
    assert alert.details["reasons"] == ["moved from 'regulars' to 'lapsing'"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"orders": 1},  # too few orders to speak of a segment
        {"orders": 0},
        {"learned": 499},  # segmenter still warming up
        {"previous": 3},  # no change
        {"previous": None},  # first segment ever
    ],
)
def test_no_segment_change_alert_without_a_settled_real_move(overrides):
    policy = AlertPolicy(AlertThresholds(segment_min_orders=2, segment_warmup=500))

    assert segment_change(policy, AlertState(), **overrides) == []


def test_segment_change_alerts_at_most_once_per_segment_cooldown():
    policy = AlertPolicy(AlertThresholds(segment_cooldown_days=30.0, cooldown_days=1.0))
    state = AlertState()

    first = segment_change(policy, state)
    back = segment_change(policy, state, time=T0 + 10 * DAY, previous=3, current=1)
    later = segment_change(policy, state, time=T0 + 30 * DAY, previous=3, current=1)

    assert len(first) == 1
    assert back == []
    assert len(later) == 1


def test_alert_state_survives_its_plain_data_form():
    policy = AlertPolicy(AlertThresholds(cooldown_days=7.0))
    state = AlertState()
    policy.churn(state, 0.9, value_at_risk=1e6, time=T0, labels=1_000)

    restored = AlertState.from_dict(state.to_dict())

    # Still disarmed and cooling down after a restart.
    assert policy.churn(restored, 0.95, value_at_risk=1e6, time=T0 + DAY, labels=1_000) == []
    policy.churn(restored, 0.1, value_at_risk=1e6, time=T0 + 2 * DAY, labels=1_000)
    assert policy.churn(restored, 0.95, value_at_risk=1e6, time=T0 + 3 * DAY, labels=1_000) == []
    again = policy.churn(restored, 0.95, value_at_risk=1e6, time=T0 + 8 * DAY, labels=1_000)
    assert len(again) == 1
