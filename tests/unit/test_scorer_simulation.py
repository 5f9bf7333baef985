"""CustomerScorer over the simulator's realistic stream, in-process, driven like the worker.

Each generated event goes through the wire decoder and the converter the worker uses and then
through the ScoringEngine (customer states in a dict, the worker's table), which also re-scores
silent customers as event time moves on, as in ``streams/app.py``. Recommendations are ranked
when scores are flushed, as the worker's Redis writer does: once per customer per batch.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import pairwise

import orjson
import pytest

from online_models.customer.activity import DAY, Activity
from online_models.customer.profile import MAX_PURCHASED_ITEMS
from online_models.scoring.alert_policy import AlertIntent, AlertThresholds
from online_models.scoring.engine import ScoringEngine
from online_models.scoring.scorer import CustomerScore, CustomerScorer, ScoreOutcome, ScorerConfig
from online_models.scoring.state import CustomerState
from schemas import decode_event
from streams.commands.simulator import SimulationConfig, generate_events
from streams.convert import activity_of

pytestmark = pytest.mark.slow  # a simulated shop of 15,000 events, scored once for the module

CUSTOMERS = 300
EVENTS = 15_000
TOP_K = 10
FLUSH_EVERY = 500  # events per Redis batch (CRM_REDIS_BATCH_SIZE)
BATCH = 100  # events per fetch scored together


@dataclass
class Run:
    """Everything a CRM would have seen from one in-process run."""

    scorer: CustomerScorer
    states: dict[str, CustomerState] = field(default_factory=dict)
    # Per customer, in order: every score, from their events and from re-scores.
    scores: dict[str, list[CustomerScore]] = field(default_factory=lambda: defaultdict(list))
    # Per customer, in order: (recommendations written, the items bought before that score).
    served: dict[str, list[tuple[list[str], frozenset[str]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    alerts: list[tuple[str, AlertIntent, CustomerScore]] = field(default_factory=list)
    labels: list[bool] = field(default_factory=list)
    rescores: int = 0
    bought: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    wrote_text: set[str] = field(default_factory=set)
    _unflushed: dict[str, tuple[ScoreOutcome, frozenset[str]]] = field(default_factory=dict)

    def record(self, customer: str, outcome: ScoreOutcome) -> None:
        self.scores[customer].append(outcome.score)
        self.alerts += [(customer, alert, outcome.score) for alert in outcome.alerts]
        self.labels += outcome.labels
        self._unflushed.pop(customer, None)  # a newer score replaces one not yet written
        self._unflushed[customer] = (outcome, frozenset(self.bought[customer]))

    def flush(self) -> None:
        for customer, (outcome, bought) in self._unflushed.items():
            self.served[customer].append((self.scorer.recommend(customer, outcome.state), bought))
        self._unflushed.clear()


def simulate(config: ScorerConfig, limit: int) -> Run:
    """Score the simulated shop as the worker scores a fetch: in batches (``process_many``),
    each touched customer scored once as of their latest event, then the silent ones due."""
    run = Run(CustomerScorer(config))
    engine = ScoringEngine(run.scorer, run.states)
    events = generate_events(SimulationConfig(customers=CUSTOMERS), limit=limit)
    batch: list[tuple[str, Activity, int | None, str | None]] = []

    def score_batch() -> None:
        scores = engine.process_many(batch)
        assert not scores.retry, "no event of the simulation fails"
        run.rescores += len(scores.rescored)
        for each in (*scores.scored, *scores.rescored):
            run.record(each.customer_id, each.outcome)
        batch.clear()

    for n, event in enumerate(events, start=1):
        decoded = decode_event(orjson.dumps(event))
        activity = activity_of(decoded)
        customer = decoded.customer_id
        if activity.kind == "purchase":
            run.bought[customer].add(activity.item_id)
        if activity.kind in ("feedback", "support_ticket"):
            run.wrote_text.add(customer)
        batch.append((customer, activity, None, None))
        if n % BATCH == 0:
            score_batch()
        if n % FLUSH_EVERY == 0:
            run.flush()
    score_batch()
    run.flush()
    return run


@pytest.fixture(scope="module")
def run() -> Run:
    # At the default threshold (0.7) only cancellations alert in a stream this short; a lower
    # one lets the model's own risk raise churn alerts, so their cooldown is really exercised;
    # value at risk 0 because this world's customers spend too little to pass the default.
    alerts = AlertThresholds(churn_risk=0.4, churn_hysteresis=0.05, value_at_risk=0.0)
    return simulate(ScorerConfig(top_k=TOP_K, allow_repurchase=False, alerts=alerts), EVENTS)


def test_every_customer_gets_scores_in_range(run):
    assert len(run.scores) > 0.9 * CUSTOMERS
    for customer, scores in run.scores.items():
        for score in scores:
            assert 0.0 <= score.churn_risk <= 1.0, customer
            assert 0.0 <= score.value <= 1.0, customer
            assert score.monetary >= 0.0
            assert score.segment_name
            assert score.as_of >= score.event_time
        final = scores[-1]
        assert final.orders == run.states[customer].profile.orders


def test_silent_customers_are_rescored_as_event_time_moves_on(run):
    assert run.rescores > 0
    rescored = [s for scores in run.scores.values() for s in scores if s.as_of > s.event_time]
    assert len(rescored) == run.rescores
    for customer, scores in run.scores.items():
        assert [s.as_of for s in scores] == sorted(s.as_of for s in scores), customer


def test_recommendations_are_top_k_and_never_already_bought(run):
    assert max(len(items) for items in run.bought.values()) < MAX_PURCHASED_ITEMS
    assert run.served.keys() == run.scores.keys()
    for customer, served in run.served.items():
        for recommendations, bought in served:
            assert len(recommendations) <= TOP_K
            assert len(set(recommendations)) == len(recommendations)
            assert not set(recommendations) & bought, customer
        assert len(served[-1][0]) == TOP_K


def test_with_repurchase_allowed_bought_items_may_come_back():
    allowed = simulate(ScorerConfig(top_k=TOP_K, allow_repurchase=True), 3_000)

    again = [
        customer
        for customer, served in allowed.served.items()
        for recommendations, bought in served
        if set(recommendations) & bought
    ]

    assert again


def test_sentiment_is_present_exactly_for_customers_who_wrote(run):
    assert run.wrote_text
    for customer, scores in run.scores.items():
        final = scores[-1]
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
        # The alert is decided at its event; the score it leaves with is the customer's as of
        # their latest event of the batch, when the value ranks have moved a little since.
        assert alert.details["value"] >= threshold
        assert score.value >= threshold - 0.01
        assert alert.details["score"] <= run.scorer.config.alerts.negative_sentiment


def test_the_stream_teaches_both_churn_labels(run):
    assert run.labels.count(False) > 0
    assert run.labels.count(True) > 0
    assert run.scorer.churn_model.labels_learned == len(run.labels)


def test_no_customer_gets_two_churn_alerts_within_a_week(run):
    cooldown = run.scorer.config.alerts.cooldown_days * DAY
    times: dict[str, list[float]] = defaultdict(list)
    reasons: set[str] = set()
    for customer, alert, _ in run.alerts:
        if alert.type == "churn_risk":
            times[customer].append(alert.time)  # event time, also of a silent customer's re-score
            reasons.update(r["factor"] for r in alert.details["reasons"])

    assert cooldown == 7 * DAY
    assert "subscription_cancel" in reasons
    assert reasons - {"subscription_cancel"}, "the model's own risk raised alerts too"
    for customer, alerted_at in times.items():
        assert all(b - a >= cooldown for a, b in pairwise(alerted_at)), customer
