"""The delayed churn labels of CustomerScorer, on a clock the test drives (event times only).

A score becomes a pending example; the stream later says whether the customer stayed (acted
again after the sample interval, within the horizon) or churned (silent for the horizon, or
cancelled). While a customer is silent, the shard's event time, moved on by other customers'
events, re-scores them through the ScoringEngine, as in the worker. These tests choose every
event time, so each label can be predicted exactly.
"""

from __future__ import annotations

import copy
import math

import orjson
import pytest

from online_models.customer.activity import DAY, Activity
from online_models.scoring.alert_policy import AlertThresholds
from online_models.scoring.engine import Scored, ScoringEngine
from online_models.scoring.scorer import CustomerScorer, ScoreOutcome, ScorerConfig
from online_models.scoring.state import CustomerState

T0 = 1_735_689_600.0  # 2025-01-01T00:00:00Z
HORIZON_DAYS = 90.0
SILENT_SAMPLE_DAYS = 15.0


def purchase(time: float, item: str = "sku-1", amount: float = 40.0) -> Activity:
    return Activity("purchase", time, item_id=item, amount=amount, quantity=1)


def view(time: float, item: str = "sku-1") -> Activity:
    return Activity("view", time, item_id=item)


def engine_of(config: ScorerConfig | None = None) -> ScoringEngine:
    """A fresh scorer behind the engine the worker uses, over a dict as its customer table."""
    return ScoringEngine(CustomerScorer(config), {})


class Customer:
    """One customer's events through a ScoringEngine, and every score they got from it."""

    def __init__(self, engine: ScoringEngine, customer_id: str = "c-1", shard: int = 0):
        self.engine, self.id, self.shard = engine, customer_id, shard
        self.outcomes: list[ScoreOutcome] = []

    @property
    def state(self) -> CustomerState:
        return self.engine.states[self.id]

    @state.setter
    def state(self, state: CustomerState) -> None:
        self.engine.states[self.id] = state

    def does(self, activity: Activity) -> ScoreOutcome:
        return self._keep(self.engine.process(self.id, activity, self.shard))[0]

    def stays_silent_until(self, end: float, step: float = DAY) -> list[ScoreOutcome]:
        """This customer's re-scores while other customers' events move the shard's event
        time on to ``end``, ``step`` at a time."""
        rescores = []
        time = self.engine.watermark(self.shard)
        while time < end:
            time = min(time + step, end)
            rescores += self._keep(self.engine.advance(time, self.shard))
        return rescores

    def _keep(self, scored: list[Scored]) -> list[ScoreOutcome]:
        own = [each.outcome for each in scored if each.customer_id == self.id]
        self.outcomes += own
        return own

    @property
    def labels(self) -> list[bool]:
        return labels_of(self.outcomes)


def labels_of(outcomes: list[ScoreOutcome]) -> list[bool]:
    return [label for outcome in outcomes for label in outcome.labels]


def test_acting_again_after_the_sample_interval_labels_stayed_once():
    customer = Customer(engine_of(ScorerConfig(churn_sample_interval_days=1.0)))
    scorer = customer.engine.scorer

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
    customer = Customer(engine_of(ScorerConfig(churn_sample_interval_days=2.0)))
    scorer = customer.engine.scorer

    for minute in range(500):
        customer.does(view(T0 + minute * 60.0, item=f"sku-{minute % 7}"))

    assert customer.labels == []
    assert scorer.churn_model.labels_learned == 0


@pytest.mark.slow
def test_silence_past_the_horizon_labels_churned_and_raises_the_risk(churn_world):
    engine = ScoringEngine(copy.deepcopy(churn_world.scorer), {})
    scorer = engine.scorer
    start = T0 + 400 * DAY  # after the world's year
    customer = Customer(engine, "quiet")
    for week in range(4):
        customer.does(purchase(start + week * 7 * DAY, item=f"sku-{week}"))
    last = customer.outcomes[-1]
    deadline = last.score.event_time + HORIZON_DAYS * DAY
    learned = scorer.churn_model.labels_learned

    # The first examples were labelled "stayed" by the next purchase; the last one waits.
    assert customer.labels == [False, False, False]
    assert labels_of(customer.stays_silent_until(deadline - 1.0)) == []
    (silent,) = customer.stays_silent_until(deadline)

    assert silent.labels == [True]
    assert scorer.churn_model.labels_learned == learned + 1
    # The examples the silence left behind wait for their own horizons.
    waiting = [(example.time - last.score.event_time) / DAY for example in silent.state.pending]
    assert waiting == [15.0, 30.0, 45.0, 60.0, 75.0]
    # event_time stays the customer's latest event; the risk is judged as of the deadline.
    assert silent.score.event_time == last.score.event_time
    assert silent.score.as_of == deadline
    assert all(alert.time == deadline for alert in silent.alerts)
    assert silent.score.churn_risk > last.score.churn_risk
    assert silent.score.churn_risk > 0.7
    assert silent.score.orders == 4  # the re-score is of the same customer, only older


def test_a_fresh_scorer_labels_silence_after_the_horizon_too():
    customer = Customer(engine_of(ScorerConfig(churn_horizon_days=30.0)))
    scorer = customer.engine.scorer
    customer.does(purchase(T0))

    assert labels_of(customer.stays_silent_until(T0 + 29.99 * DAY)) == []
    (at_horizon,) = customer.stays_silent_until(T0 + 30 * DAY)

    assert at_horizon.labels == [True]
    assert scorer.pending_labels == 1  # the example taken 15 silent days in still waits
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
    customer = Customer(engine_of())
    learned = record_learning(customer.engine.scorer, monkeypatch)

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
    customer.stays_silent_until(deadline - 1.0)
    assert len(learned) == 1  # the examples the silence took wait, unlearned
    customer.stays_silent_until(deadline)

    assert len(learned) == 2
    assert learned[1] == (at_t1, True)
    assert learned[1][0]["log_orders"] == pytest.approx(math.log1p(4))
    # Taken at the view, 0.2 days after the last basket: none of the silence after it.
    assert learned[1][0]["log_days_since_order"] == pytest.approx(math.log1p(0.2))


def test_stored_and_restored_state_keeps_the_example_unchanged(monkeypatch):
    """The worker keeps state as JSON between events; the example must survive it exactly."""
    customer = Customer(engine_of())
    learned = record_learning(customer.engine.scorer, monkeypatch)
    customer.does(purchase(T0 + 0.123456789, amount=13.37))
    at_score = customer.state.profile.churn_features(customer.state.profile.last_seen)

    customer.state = CustomerState.from_dict(orjson.loads(orjson.dumps(customer.state.to_dict())))
    customer.does(purchase(T0 + 5 * DAY))

    assert learned == [(at_score, False)]


def test_subscription_cancel_labels_churn_at_once_and_alerts():
    customer = Customer(engine_of(ScorerConfig(alerts=AlertThresholds(churn_min_labels=200))))
    scorer = customer.engine.scorer
    customer.does(purchase(T0))

    cancel = customer.does(Activity("subscription_cancel", T0 + 0.1 * DAY))

    assert cancel.labels == [True]  # even inside the sample interval
    assert scorer.churn_model.labels_learned == 1  # far below churn_min_labels
    assert cancel.score.churn_risk == 1.0
    (alert,) = cancel.alerts
    assert alert.type == "churn_risk"
    assert alert.severity == "critical"
    assert [r["factor"] for r in alert.details["reasons"]] == ["subscription_cancel"]
    assert alert.details["score"] == 1.0

    browsing = customer.does(view(T0 + 5 * DAY))
    assert browsing.score.churn_risk == 1.0  # until the next purchase
    assert browsing.alerts == []  # no repeated alert
    assert browsing.labels == []

    # The cancellation closed the example: silence afterwards neither labels nor re-scores.
    assert customer.stays_silent_until(T0 + 19 * DAY) == []
    assert customer.engine.scheduled() == 0

    back = customer.does(purchase(T0 + 20 * DAY, item="sku-2"))
    assert back.score.churn_risk < 1.0
    assert customer.labels == [True]
    assert scorer.pending_labels == 1  # a fresh example from the returning customer


def test_a_late_event_after_the_horizon_labels_churned_without_a_watermark():
    customer = Customer(engine_of())
    customer.does(purchase(T0))

    late = customer.does(purchase(T0 + (HORIZON_DAYS + 30) * DAY, item="sku-2"))

    assert late.labels == [True]
    assert customer.engine.scorer.churn_model.labels_learned == 1
    # The old example is gone; the one taken now is labelled a horizon later.
    silence = customer.stays_silent_until(T0 + (2 * HORIZON_DAYS + 30) * DAY)
    labelled = [outcome for outcome in silence if outcome.labels]
    assert [outcome.score.as_of for outcome in labelled] == [T0 + (2 * HORIZON_DAYS + 30) * DAY]


def test_shards_only_see_their_own_customers():
    engine = engine_of()
    zero = Customer(engine, "on-shard-0", shard=0)
    one = Customer(engine, "on-shard-1", shard=1)
    zero.does(purchase(T0))
    one.does(purchase(T0 + 2 * DAY))  # past on-shard-0's re-score, but on another shard
    far = T0 + 365 * DAY

    def rescored(shard: int) -> list[str]:
        return [each.customer_id for each in engine.advance(far, shard)]

    assert zero.outcomes[1:] == []
    assert rescored(1) == ["on-shard-1"]
    assert rescored(2) == []
    assert rescored(1) == []  # re-scored at most once per day of event time
    assert rescored(0) == ["on-shard-0"]


@pytest.mark.slow
def test_the_churn_model_learns_that_silent_customers_churn(churn_world):
    scorer, states, labels = churn_world.scorer, churn_world.states, churn_world.labels
    end = max(state.profile.last_seen for state in states.values())

    def risk(customer: str) -> float:
        features = states[customer].profile.churn_features(end)
        return scorer.churn_model.risk(features)

    loyal = [risk(c) for c in states if c.startswith("loyal")]
    churners = [risk(c) for c in states if c.startswith("churner")]

    # Every churner's silence, each example once: the one taken at their last event and one
    # every 15 silent days within the horizon (days 0, 15, ..., 75).
    assert labels.count(True) == 100 * 6
    assert labels.count(False) > 5_000
    assert risk("churner-000") > risk("loyal-000")
    pairs_right = sum(c > lo for c in churners for lo in loyal) / (len(churners) * len(loyal))
    assert pairs_right > 0.95
    assert scorer.quality.labels == len(labels)
    assert scorer.quality.roc_auc > 0.7


def test_quality_has_no_roc_auc_until_both_labels_were_seen():
    engine = engine_of(ScorerConfig(quality_window=4))
    scorer = engine.scorer
    customer = Customer(engine)
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
        other = Customer(engine, f"gone-{n}")
        other.does(purchase(T0 + 30 * DAY))
        other.does(purchase(T0 + (30 + HORIZON_DAYS + 1) * DAY))
    assert scorer.quality.churn_rate == 1.0
    assert math.isnan(scorer.quality.roc_auc)


def test_a_cancellation_alerts_even_right_after_a_churn_risk_alert():
    thresholds = AlertThresholds(
        churn_risk=0.0, churn_min_labels=0, cooldown_days=30.0, value_at_risk=0.0
    )
    customer = Customer(engine_of(ScorerConfig(alerts=thresholds)))
    first = customer.does(purchase(T0))
    assert [a.type for a in first.alerts] == ["churn_risk"]  # threshold 0: any risk alerts

    cancel = customer.does(Activity("subscription_cancel", T0 + 2 * DAY))
    assert [[r["factor"] for r in a.details["reasons"]] for a in cancel.alerts] == [
        ["subscription_cancel"]
    ]
    again = customer.does(Activity("subscription_cancel", T0 + 40 * DAY))
    assert again.alerts == []  # already cancelled: one alert per cancellation


# --- what silence teaches --------------------------------------------------------------------


def test_a_silent_customer_leaves_an_example_every_15_days_each_labelled_churned_once():
    customer = Customer(engine_of())
    scorer = customer.engine.scorer
    customer.does(purchase(T0))

    customer.stays_silent_until(T0 + 80 * DAY)
    taken = [(example.time - T0) / DAY for example in customer.state.pending]
    assert taken == [0.0, 15.0, 30.0, 45.0, 60.0, 75.0]  # none once the horizon passed
    assert scorer.pending_labels == 6
    assert customer.labels == []

    silence = customer.stays_silent_until(T0 + 400 * DAY)

    labelled = [outcome for outcome in silence if outcome.labels]
    assert [outcome.labels for outcome in labelled] == [[True]] * 6
    # Each one when its own horizon passed, in event time.
    assert [(o.score.as_of - T0) / DAY for o in labelled] == [90, 105, 120, 135, 150, 165]
    assert customer.state.pending == []
    assert scorer.pending_labels == 0
    assert scorer.churn_model.labels_learned == 6
    # Re-scores go on until three horizons of silence (the segments follow the lapse),
    # then stop: the score no longer changes.
    assert (silence[-1].score.as_of - T0) / DAY == 270
    assert customer.engine.scheduled() == 0


def test_a_customer_back_after_20_silent_days_labels_both_earlier_examples_stayed():
    customer = Customer(engine_of())
    scorer = customer.engine.scorer
    customer.does(purchase(T0))
    customer.stays_silent_until(T0 + 19 * DAY)
    assert [example.time for example in customer.state.pending] == [T0, T0 + 15 * DAY]

    back = customer.does(purchase(T0 + 20 * DAY, item="sku-2"))

    assert back.labels == [False, False]
    assert scorer.quality.churn_rate == 0.0
    assert [example.time for example in back.state.pending] == [T0 + 20 * DAY]  # a fresh one
    assert scorer.pending_labels == 1


def test_a_late_event_from_before_the_pending_example_labels_nothing():
    customer = Customer(engine_of())
    scorer = customer.engine.scorer
    customer.does(purchase(T0))
    customer.does(purchase(T0 + 5 * DAY, item="sku-2"))
    assert customer.labels == [False]
    waiting = copy.deepcopy(customer.state.pending)

    late = customer.does(view(T0 + 2 * DAY, item="sku-3"))  # delayed in the pipeline

    assert late.labels == []
    assert late.state.pending == waiting  # still the example taken at day 5
    assert scorer.churn_model.labels_learned == 1
    assert scorer.pending_labels == 1


def test_a_late_cancellation_labels_every_pending_example_churned():
    customer = Customer(engine_of())
    customer.does(purchase(T0))
    customer.stays_silent_until(T0 + 40 * DAY)  # examples at day 0, 15 and 30
    assert len(customer.state.pending) == 3

    cancel = customer.does(Activity("subscription_cancel", T0 + 10 * DAY))  # dated before two

    assert sorted(cancel.labels) == [True, True, True]
    assert customer.state.pending == []
    assert customer.engine.scorer.pending_labels == 0
