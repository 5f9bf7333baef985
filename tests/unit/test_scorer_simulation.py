"""CustomerScorer over the simulator's realistic stream, in-process, driven like the worker.

Each generated event goes through the wire decoder and the converter the worker uses, the
customer's state is kept in a dict (the worker's table), and the largest event time seen so
far is the watermark that labels silent customers, as in ``streams/app.py``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import pairwise

import orjson
import pytest

from online_models.activity import DAY
from online_models.alert_policy import AlertIntent, AlertThresholds
from online_models.profile import MAX_PURCHASED_ITEMS
from online_models.scorer import CustomerScore, CustomerScorer, ScoreOutcome, ScorerConfig
from online_models.state import CustomerState
from schemas import decode_event
from streams.convert import activity_of
from streams.simulator import SimulationConfig, generate_events

CUSTOMERS = 300
EVENTS = 15_000
TOP_K = 10


@dataclass
class Run:
    """Everything a CRM would have seen from one in-process run."""

    scorer: CustomerScorer
    states: dict[str, CustomerState] = field(default_factory=dict)
    # Per customer, in order: (score, the items bought before or at that score).
    scores: dict[str, list[tuple[CustomerScore, frozenset[str]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    alerts: list[tuple[str, AlertIntent, CustomerScore]] = field(default_factory=list)
    labels: list[bool] = field(default_factory=list)
    bought: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    wrote_text: set[str] = field(default_factory=set)

    def record(self, customer: str, outcome: ScoreOutcome) -> None:
        self.states[customer] = outcome.state
        self.scores[customer].append((outcome.score, frozenset(self.bought[customer])))
        self.alerts += [(customer, alert, outcome.score) for alert in outcome.alerts]
        self.labels += outcome.labels


def simulate(config: ScorerConfig, limit: int) -> Run:
    run = Run(CustomerScorer(config))
    scorer = run.scorer
    watermark = -math.inf
    for event in generate_events(SimulationConfig(customers=CUSTOMERS), limit=limit):
        decoded = decode_event(orjson.dumps(event))
        activity = activity_of(decoded)
        customer = decoded.customer_id
        if activity.kind == "purchase":
            run.bought[customer].add(activity.item_id)
        if activity.kind in ("feedback", "support_ticket"):
            run.wrote_text.add(customer)
        outcome = scorer.score(customer, run.states.get(customer), activity)
        run.record(customer, outcome)
        watermark = max(watermark, outcome.score.event_time)
        for silent in scorer.due_for_labels(watermark):
            run.record(silent, scorer.label_silent(silent, run.states[silent], watermark))
    return run


@pytest.fixture(scope="module")
def run() -> Run:
    # At the default threshold (0.7) only cancellations alert in a stream this short; a lower
    # one lets the model's own risk raise churn alerts, so their cooldown is really exercised.
    alerts = AlertThresholds(churn_risk=0.4, churn_hysteresis=0.05)
    return simulate(ScorerConfig(top_k=TOP_K, allow_repurchase=False, alerts=alerts), EVENTS)


def test_every_customer_gets_scores_in_range(run):
    assert len(run.scores) > 0.9 * CUSTOMERS
    for customer, scores in run.scores.items():
        for score, _ in scores:
            assert 0.0 <= score.churn_risk <= 1.0, customer
            assert 0.0 <= score.value <= 1.0, customer
            assert score.monetary >= 0.0
            assert score.segment_name
        final = scores[-1][0]
        assert final.orders == run.states[customer].profile.orders


def test_recommendations_are_top_k_and_never_already_bought(run):
    assert max(len(items) for items in run.bought.values()) < MAX_PURCHASED_ITEMS
    for customer, scores in run.scores.items():
        for score, bought in scores:
            recommendations = score.recommendations
            assert len(recommendations) <= TOP_K
            assert len(set(recommendations)) == len(recommendations)
            assert not set(recommendations) & bought, customer
        assert len(scores[-1][0].recommendations) == TOP_K


def test_with_repurchase_allowed_bought_items_may_come_back():
    allowed = simulate(ScorerConfig(top_k=TOP_K, allow_repurchase=True), 3_000)

    again = [
        customer
        for customer, scores in allowed.scores.items()
        for score, bought in scores
        if set(score.recommendations) & bought
    ]

    assert again


def test_sentiment_is_present_exactly_for_customers_who_wrote(run):
    assert run.wrote_text
    for customer, scores in run.scores.items():
        final = scores[-1][0]
        if customer in run.wrote_text:
            assert final.sentiment is not None
            assert -1.0 <= final.sentiment <= 1.0
        else:
            assert final.sentiment is None, customer


def test_negative_feedback_alerts_only_for_valuable_customers(run):
    threshold = run.scorer.config.alerts.valuable_customer_value
    feedback = [(a, s) for _, a, s in run.alerts if a.type == "negative_feedback"]

    assert feedback
    for alert, score in feedback:
        assert score.value >= threshold
        assert alert.details["value"] >= threshold
        assert alert.details["score"] <= run.scorer.config.alerts.negative_sentiment


def test_the_stream_teaches_both_churn_labels(run):
    assert run.labels.count(False) > 0
    assert run.labels.count(True) > 0
    assert run.scorer.churn_model.labels_learned == len(run.labels)


def test_no_customer_gets_two_churn_alerts_within_a_week(run):
    cooldown = run.scorer.config.alerts.cooldown_days * DAY
    times: dict[str, list[float]] = defaultdict(list)
    reasons: set[str] = set()
    for customer, alert, score in run.alerts:
        if alert.type == "churn_risk":
            times[customer].append(score.event_time)
            reasons.update(alert.details["reasons"])

    assert cooldown == 7 * DAY
    assert "subscription_cancel" in reasons
    assert reasons - {"subscription_cancel"}, "the model's own risk raised alerts too"
    for customer, alerted_at in times.items():
        assert all(b - a >= cooldown for a, b in pairwise(alerted_at)), customer
