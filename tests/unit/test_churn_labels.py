"""The delayed churn labels of CustomerScorer, on a clock the test drives (event times only).

A score becomes a pending example; the stream later says whether the customer stayed (acted
again after the sample interval, within the horizon) or churned (silent for the horizon, or
cancelled). These tests choose every event time, so each label can be predicted exactly.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterable

import orjson
import pytest

from online_models.activity import DAY, Activity
from online_models.alert_policy import AlertThresholds
from online_models.scorer import CustomerScorer, ScoreOutcome, ScorerConfig
from online_models.state import CustomerState

T0 = 1_735_689_600.0  # 2025-01-01T00:00:00Z
HORIZON_DAYS = 90.0


def purchase(time: float, item: str = "sku-1", amount: float = 40.0) -> Activity:
    return Activity("purchase", time, item_id=item, amount=amount, quantity=1)


def view(time: float, item: str = "sku-1") -> Activity:
    return Activity("view", time, item_id=item)


class Customer:
    """One customer's events through a scorer, keeping the state like the worker's table."""

    def __init__(self, scorer: CustomerScorer, customer_id: str = "c-1", shard: int = 0):
        self.scorer, self.id, self.shard = scorer, customer_id, shard
        self.state: CustomerState | None = None
        self.outcomes: list[ScoreOutcome] = []

    def does(self, activity: Activity) -> ScoreOutcome:
        outcome = self.scorer.score(self.id, self.state, activity, shard=self.shard)
        self.state = outcome.state
        self.outcomes.append(outcome)
        return outcome

    @property
    def labels(self) -> list[bool]:
        return [label for outcome in self.outcomes for label in outcome.labels]


def test_acting_again_after_the_sample_interval_labels_stayed_once():
    scorer = CustomerScorer(ScorerConfig(churn_sample_interval_days=1.0))
    customer = Customer(scorer)

    assert customer.does(purchase(T0)).labels == []
    assert customer.does(view(T0 + 0.3 * DAY)).labels == []  # within the interval
    assert customer.does(view(T0 + 0.9 * DAY)).labels == []
    assert customer.does(purchase(T0 + 3 * DAY)).labels == [False]
    assert customer.does(view(T0 + 3.5 * DAY)).labels == []  # a new example, too young

    assert customer.labels == [False]
    assert scorer.churn_model.labels_learned == 1
    assert scorer.quality.labels == 1
    assert scorer.pending_labels == 1  # the example taken at day 3 waits


def test_a_burst_of_events_within_the_sample_interval_gives_no_labels():
    scorer = CustomerScorer(ScorerConfig(churn_sample_interval_days=2.0))
    customer = Customer(scorer)

    for minute in range(500):
        customer.does(view(T0 + minute * 60.0, item=f"sku-{minute % 7}"))

    assert customer.labels == []
    assert scorer.churn_model.labels_learned == 0


@pytest.fixture(scope="module")
def world() -> tuple[CustomerScorer, dict[str, CustomerState], list[bool]]:
    """The synthetic world below, scored once: scorer, states and labels (copy to change)."""
    return run_world(synthetic_world(seed=0))


def test_silence_past_the_horizon_labels_churned_and_raises_the_risk(world):
    scorer = copy.deepcopy(world[0])
    start = T0 + 400 * DAY  # after the world's year; own shard, so no other customer falls due
    customer = Customer(scorer, "quiet", shard=3)
    for week in range(4):
        customer.does(purchase(start + week * 7 * DAY, item=f"sku-{week}"))
    last = customer.outcomes[-1]
    deadline = last.score.event_time + HORIZON_DAYS * DAY
    learned = scorer.churn_model.labels_learned

    # The first examples were labelled "stayed" by the next purchase; the last one waits.
    assert customer.labels == [False, False, False]
    assert scorer.due_for_labels(start + HORIZON_DAYS * DAY, shard=3) == []
    assert scorer.due_for_labels(deadline - 1.0, shard=3) == []
    assert scorer.due_for_labels(deadline, shard=3) == ["quiet"]
    assert scorer.due_for_labels(deadline + 30 * DAY, shard=3) == []  # only once

    silent = scorer.label_silent("quiet", customer.state, deadline)

    assert silent.labels == [True]
    assert scorer.churn_model.labels_learned == learned + 1
    assert silent.state.pending is None
    # event_time stays the customer's latest event; the risk is judged as of the deadline.
    assert silent.score.event_time == last.score.event_time
    assert all(alert.time == deadline for alert in silent.alerts)
    assert silent.score.churn_risk > last.score.churn_risk
    assert silent.score.churn_risk > 0.7
    assert silent.score.orders == 4  # the re-score is of the same customer, only older


def test_a_fresh_scorer_labels_silence_after_the_horizon_too():
    scorer = CustomerScorer(ScorerConfig(churn_horizon_days=30.0))
    customer = Customer(scorer)
    customer.does(purchase(T0))

    assert scorer.due_for_labels(T0 + 29.99 * DAY) == []
    assert scorer.due_for_labels(T0 + 30 * DAY) == ["c-1"]
    assert scorer.label_silent("c-1", customer.state, T0 + 30 * DAY).labels == [True]
    assert scorer.pending_labels == 0
    assert scorer.quality.churn_rate == 1.0


def record_learning(scorer: CustomerScorer, monkeypatch) -> list[tuple[dict[str, float], bool]]:
    """Everything the churn model is taught, as (features, churned)."""
    learned: list[tuple[dict[str, float], bool]] = []
    learn_one = scorer.churn_model.learn_one

    def recording(x: dict[str, float], y: bool) -> None:
        learned.append((copy.deepcopy(x), y))
        learn_one(x, y)

    monkeypatch.setattr(scorer.churn_model, "learn_one", recording)
    return learned


def test_labels_teach_the_features_as_they_were_at_the_score(monkeypatch):
    scorer = CustomerScorer()
    learned = record_learning(scorer, monkeypatch)
    customer = Customer(scorer)

    t0 = T0
    customer.does(purchase(t0, amount=10.0))
    # Within the sample interval the example is retaken after each event, so its horizon
    # runs from the latest activity; it still holds nothing from after its own score.
    customer.does(purchase(t0 + 0.5 * DAY, item="sku-2", amount=900.0))
    customer.does(Activity("support_ticket", t0 + 0.6 * DAY, text="Awful, broken, furious!"))
    at_t0 = copy.deepcopy(customer.state).profile.churn_features(t0 + 0.6 * DAY)
    t1 = t0 + 10 * DAY
    customer.does(purchase(t1, item="sku-3", amount=25.0))
    customer.does(purchase(t1 + 0.5 * DAY, item="sku-4", amount=5_000.0))
    customer.does(view(t1 + 0.7 * DAY))
    at_t1 = copy.deepcopy(customer.state).profile.churn_features(t1 + 0.7 * DAY)

    assert learned == [(at_t0, False)]
    assert learned[0][0]["log_orders"] == pytest.approx(math.log1p(2))  # not 3, not 4
    assert learned[0][0]["log_net_monetary"] == pytest.approx(math.log1p(910.0))
    assert learned[0][0]["log_tickets"] == pytest.approx(math.log1p(1))

    deadline = t1 + 0.7 * DAY + HORIZON_DAYS * DAY  # the horizon runs from the last activity
    assert scorer.due_for_labels(deadline - 1.0) == []
    assert scorer.due_for_labels(deadline) == ["c-1"]
    scorer.label_silent("c-1", customer.state, deadline)

    assert learned[1] == (at_t1, True)
    assert learned[1][0]["log_orders"] == pytest.approx(math.log1p(4))
    # Taken at the view, 0.2 days after the last basket: none of the silence after it.
    assert learned[1][0]["log_days_since_order"] == pytest.approx(math.log1p(0.2))


def test_stored_and_restored_state_keeps_the_example_unchanged(monkeypatch):
    """The worker keeps state as JSON between events; the example must survive it exactly."""
    scorer = CustomerScorer()
    learned = record_learning(scorer, monkeypatch)
    customer = Customer(scorer)
    customer.does(purchase(T0 + 0.123456789, amount=13.37))
    at_score = customer.state.profile.churn_features(customer.state.profile.last_seen)

    customer.state = CustomerState.from_dict(orjson.loads(orjson.dumps(customer.state.to_dict())))
    customer.does(purchase(T0 + 5 * DAY))

    assert learned == [(at_score, False)]


def test_subscription_cancel_labels_churn_at_once_and_alerts():
    scorer = CustomerScorer(ScorerConfig(alerts=AlertThresholds(churn_min_labels=200)))
    customer = Customer(scorer)
    customer.does(purchase(T0))

    cancel = customer.does(Activity("subscription_cancel", T0 + 0.1 * DAY))

    assert cancel.labels == [True]  # even inside the sample interval
    assert scorer.churn_model.labels_learned == 1  # far below churn_min_labels
    assert cancel.score.churn_risk == 1.0
    (alert,) = cancel.alerts
    assert alert.type == "churn_risk"
    assert alert.severity == "critical"
    assert "subscription_cancel" in alert.details["reasons"]
    assert alert.details["score"] == 1.0

    browsing = customer.does(view(T0 + 5 * DAY))
    assert browsing.score.churn_risk == 1.0  # until the next purchase
    assert browsing.alerts == []  # no repeated alert
    assert browsing.labels == []

    # The cancellation closed the example: silence afterwards does not label it again.
    assert scorer.due_for_labels(T0 + 200 * DAY) == []

    back = customer.does(purchase(T0 + 20 * DAY, item="sku-2"))
    assert back.score.churn_risk < 1.0
    assert customer.labels == [True]
    assert scorer.pending_labels == 1  # a fresh example from the returning customer


def test_a_late_event_after_the_horizon_labels_churned_without_a_watermark():
    scorer = CustomerScorer()
    customer = Customer(scorer)
    customer.does(purchase(T0))

    late = customer.does(purchase(T0 + (HORIZON_DAYS + 30) * DAY, item="sku-2"))

    assert late.labels == [True]
    assert scorer.churn_model.labels_learned == 1
    # The old deadline is gone; the example taken now falls due a horizon later.
    assert scorer.due_for_labels(T0 + (HORIZON_DAYS + 31) * DAY) == []
    assert scorer.due_for_labels(T0 + (2 * HORIZON_DAYS + 30) * DAY) == ["c-1"]


def test_shards_only_see_their_own_customers():
    scorer = CustomerScorer()
    zero = Customer(scorer, "on-shard-0", shard=0)
    one = Customer(scorer, "on-shard-1", shard=1)
    zero.does(purchase(T0))
    one.does(purchase(T0 + DAY))
    far = T0 + 365 * DAY

    assert scorer.due_for_labels(far, shard=1) == ["on-shard-1"]
    assert scorer.due_for_labels(far, shard=2) == []
    assert scorer.due_for_labels(far, shard=1) == []
    assert scorer.due_for_labels(far, shard=0) == ["on-shard-0"]


# A small world: loyal customers buy about weekly all year and browse in between; churners
# buy a few times at longer gaps, come back once to browse, and then stay silent for 200+ days.
WORLD_DAYS = 365.0


def synthetic_world(seed: int) -> list[tuple[str, Activity]]:
    rng = random.Random(seed)
    events: list[tuple[str, Activity]] = []

    def item() -> str:
        return f"sku-{rng.randrange(30)}"

    for n in range(100):
        customer = f"loyal-{n:03d}"
        day = rng.uniform(0.0, 7.0)
        while day < WORLD_DAYS:
            events.append((customer, purchase(T0 + day * DAY, item(), rng.uniform(20.0, 80.0))))
            if rng.random() < 0.3:
                events.append((customer, view(T0 + (day + rng.uniform(1.0, 4.0)) * DAY, item())))
            day += rng.uniform(5.0, 9.0)
    for n in range(100):
        customer = f"churner-{n:03d}"
        day = rng.uniform(0.0, 60.0)
        for _ in range(rng.randint(2, 4)):
            events.append((customer, purchase(T0 + day * DAY, item(), rng.uniform(20.0, 80.0))))
            day += rng.uniform(8.0, 20.0)
        events.append((customer, view(T0 + day * DAY, item())))  # then silence
        assert WORLD_DAYS - day >= 200.0
    events.sort(key=lambda event: event[1].time)
    return events


def run_world(
    events: Iterable[tuple[str, Activity]],
) -> tuple[CustomerScorer, dict[str, CustomerState], list[bool]]:
    """Score a stream like the worker: the watermark is the largest event time seen so far."""
    # The quality window covers every label of the run, not only the last thousand.
    scorer = CustomerScorer(ScorerConfig(quality_window=20_000, recommender_factors=4))
    states: dict[str, CustomerState] = {}
    labels: list[bool] = []
    watermark = -math.inf
    for customer, activity in events:
        outcome = scorer.score(customer, states.get(customer), activity)
        states[customer] = outcome.state
        labels += outcome.labels
        watermark = max(watermark, outcome.score.event_time)
        for silent in scorer.due_for_labels(watermark):
            outcome = scorer.label_silent(silent, states[silent], watermark)
            states[silent] = outcome.state
            labels += outcome.labels
    return scorer, states, labels


def test_the_churn_model_learns_that_silent_customers_churn(world):
    scorer, states, labels = world
    end = max(state.profile.last_seen for state in states.values())

    def risk(customer: str) -> float:
        features = states[customer].profile.churn_features(end)
        return scorer.churn_model.risk(features)

    loyal = [risk(c) for c in states if c.startswith("loyal")]
    churners = [risk(c) for c in states if c.startswith("churner")]

    assert labels.count(True) == 100  # every churner, once
    assert labels.count(False) > 5_000
    assert risk("churner-000") > risk("loyal-000")
    pairs_right = sum(c > lo for c in churners for lo in loyal) / (len(churners) * len(loyal))
    assert pairs_right > 0.95
    assert scorer.quality.labels == len(labels)
    assert scorer.quality.roc_auc > 0.7


def test_quality_has_no_roc_auc_until_both_labels_were_seen():
    scorer = CustomerScorer(ScorerConfig(quality_window=4))
    customer = Customer(scorer)
    customer.does(purchase(T0))
    for week in range(1, 4):
        customer.does(purchase(T0 + week * 7 * DAY))

    # Only "stayed" so far: nothing to rank, so no AUC (not a misleading 0.0).
    assert customer.labels == [False, False, False]
    assert math.isnan(scorer.quality.roc_auc)
    assert scorer.quality.churn_rate == 0.0

    customer.does(Activity("subscription_cancel", T0 + 22 * DAY))
    assert 0.0 <= scorer.quality.roc_auc <= 1.0

    # Four "churned" labels push every "stayed" one out of the window of 4.
    for n in range(4):
        other = Customer(scorer, f"gone-{n}")
        other.does(purchase(T0 + 30 * DAY))
        other.does(purchase(T0 + (30 + HORIZON_DAYS + 1) * DAY))
    assert scorer.quality.churn_rate == 1.0
    assert math.isnan(scorer.quality.roc_auc)


def test_a_cancellation_alerts_even_right_after_a_churn_risk_alert():
    thresholds = AlertThresholds(churn_risk=0.0, churn_min_labels=0, cooldown_days=30.0)
    scorer = CustomerScorer(ScorerConfig(alerts=thresholds))
    customer = Customer(scorer)
    first = customer.does(purchase(T0))
    assert [a.type for a in first.alerts] == ["churn_risk"]  # threshold 0: any risk alerts

    cancel = customer.does(Activity("subscription_cancel", T0 + 2 * DAY))
    assert [a.details["reasons"] for a in cancel.alerts] == [["subscription_cancel"]]
    again = customer.does(Activity("subscription_cancel", T0 + 40 * DAY))
    assert again.alerts == []  # already cancelled: one alert per cancellation


def test_a_record_without_its_partition_is_not_scheduled_on_a_guess():
    scorer = CustomerScorer()
    customer = Customer(scorer, shard=3)
    customer.does(purchase(T0))
    stored = orjson.loads(orjson.dumps(customer.state.to_dict()))
    assert CustomerState.from_dict(stored).shard == 3
    del stored["shard"]  # written before records carried their partition

    scorer.forget_schedules()
    assert not scorer.reschedule("c-1", stored)
    assert scorer.pending_labels == 0
