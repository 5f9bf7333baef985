"""Events scored in batches: ``process_many`` against ``process`` one event at a time.

A simulated population's events (with some delivered twice) go through one engine by
``process``, one event at a time, and through another by ``process_many`` in batches of
``BATCH``; then both engines' customers are scored as of the last event time (what their
Redis hashes hold), and compared. The tolerances, and why (README, *Throughput*):

- exactly equal: the customers, their orders, spend, event times, the duplicates recognised,
  the alerts events raise by themselves (cancellations, negative feedback: type, customer and
  time), and the churn labels learned;
- churn risk within 0.06 for at least 97% of customers and 0.1 for all (measured: 0.048 and
  0.064), predicted CLV within 25% for at least 97% (measured: 17%, 21% at most): a
  customer's several events in one batch take one pending example, not one each (one by one,
  the earlier ones are labelled "stayed" by the later ones a day or more apart), the
  lifetime sample takes their totals once per batch, and its daily refits (BG/NBD and
  Gamma-Gamma by L-BFGS-B from the last parameters) move that far on such differences;
- the served segment's name equal for at least 95% of customers (measured: 96.8%; the
  centres learn a batch's points as a mini-batch, and the ids of segments seeded in another
  order differ), and the churn, segment and unusual-customer alerts within 10% in number;
- recommendations: at least 8 of the 10 items in common for at least 90% of customers.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from online_models.customer.activity import Activity
from online_models.scoring.engine import Scored, ScoringEngine
from online_models.scoring.scorer import CustomerScorer, ScorerConfig
from schemas import decode_event
from streams.commands.simulator import SimulationConfig, generate_events
from streams.convert import activity_of

# A simulated shop scored twice, about 20 s of CPU: not in make test-quick.
pytestmark = pytest.mark.slow

CUSTOMERS = 300
EVENTS = 6_000
BATCH = 40  # about a day of the simulation's event time, as re-scores are daily
#: The alerts an event raises by itself, besides a cancellation (a ``churn_risk`` alert, counted
#: with the churn alerts below).
EVENT_ALERTS = frozenset({"negative_feedback"})


@pytest.fixture(scope="module")
def events() -> list[tuple[str, Activity, int, str]]:
    """The simulated events, each with an offset, and every 50th delivered again later."""
    decoded = []
    for offset, simulated in enumerate(generate_events(SimulationConfig(customers=CUSTOMERS),
                                                   limit=EVENTS)):  # fmt: skip
        value = decode_event(orjson.dumps(simulated))
        decoded.append((value.customer_id, activity_of(value), offset, value.event_id))
    redelivered = []
    for n, event in enumerate(decoded):
        redelivered.append(event)
        if n % 50 == 49:
            redelivered.append(decoded[n - 7])  # an earlier event again, same offset and id
    return redelivered


def run(events: list[Any], batch: int | None) -> tuple[ScoringEngine, list[Scored], list[Any]]:
    engine = ScoringEngine(CustomerScorer(), {})
    scored: list[Scored] = []
    alerts: list[Any] = []
    if batch is None:
        for customer_id, activity, offset, event_id in events:
            out = engine.process(customer_id, activity, offset=offset, event_id=event_id)
            scored += out
            alerts += [(customer_id, a.type, a.time, event_id) for a in out[0].outcome.alerts]
            alerts += [(s.customer_id, a.type, a.time, None) for s in out[1:]
                       for a in s.outcome.alerts]  # fmt: skip
    else:
        for start in range(0, len(events), batch):
            chunk = events[start : start + batch]
            batch_scores = engine.process_many(chunk)
            scored += batch_scores.scored + batch_scores.rescored
            for s in batch_scores.scored:
                ids = [chunk[n][3] for n in s.alert_events]
                alerts += [(s.customer_id, a.type, a.time, i)
                           for a, i in zip(s.outcome.alerts, ids, strict=True)]  # fmt: skip
            alerts += [(s.customer_id, a.type, a.time, None) for s in batch_scores.rescored
                       for a in s.outcome.alerts]  # fmt: skip
    return engine, scored, alerts


@pytest.fixture(scope="module")
def both(events) -> dict[str, Any]:
    return {"one": run(events, None), "batch": run(events, BATCH)}


def as_of_end(engine: ScoringEngine) -> dict[str, Any]:
    scorer, now = engine.scorer, engine.watermark()
    customers = sorted(engine.states)
    states = [engine.states[c] for c in customers]
    ranked = scorer.recommend_many(list(zip(customers, states, strict=True)))
    scores = {c: scorer.score_as_of(s, now) for c, s in zip(customers, states, strict=True)}
    return {
        "scores": scores,
        "ranked": dict(zip(customers, ranked, strict=True)),
        "served": {c: scores[c].segment_name for c in customers},
    }


def test_batches_score_what_one_event_at_a_time_scores(both):
    one, many = both["one"][0], both["batch"][0]
    a, b = as_of_end(one), as_of_end(many)
    assert a["scores"].keys() == b["scores"].keys()
    n = len(a["scores"])
    risk = [abs(a["scores"][c].churn_risk - b["scores"][c].churn_risk) for c in a["scores"]]
    clv = [abs(a["scores"][c].predicted_clv - b["scores"][c].predicted_clv)
           / max(1.0, a["scores"][c].predicted_clv) for c in a["scores"]]  # fmt: skip
    same_segment = sum(a["served"][c] == b["served"][c] for c in a["served"])
    common = [len(set(a["ranked"][c]) & set(b["ranked"][c])) for c in a["ranked"]]
    for c in a["scores"]:
        x, y = a["scores"][c], b["scores"][c]
        assert (x.orders, x.monetary, x.event_time) == (y.orders, y.monetary, y.event_time)
    assert sorted(risk)[int(0.97 * n)] <= 0.06 and max(risk) <= 0.1
    assert sorted(clv)[int(0.97 * n)] <= 0.25
    assert same_segment >= 0.95 * n
    assert sum(x >= 8 for x in common) >= 0.9 * n


def test_batches_raise_the_alerts_of_events_and_recognise_duplicates(both):
    (one, one_scored, one_alerts), (many, many_scored, many_alerts) = both["one"], both["batch"]
    assert one.duplicates == many.duplicates > 0
    assert [s.customer_id for s in one_scored if s.duplicate] == [
        s.customer_id for s in many_scored if s.duplicate
    ]
    own = sorted(x for x in one_alerts if x[1] in EVENT_ALERTS)
    assert own == sorted(x for x in many_alerts if x[1] in EVENT_ALERTS)
    one_kinds = Counter(x[1] for x in one_alerts)
    many_kinds = Counter(x[1] for x in many_alerts)
    # Within 10% (1 alert of a kind raised fewer than 10 times); unusual-customer alerts
    # within 2 of fewer than 20: the segments' robust spreads trim a lone outlier as the
    # batch's model sees it, one at a time as each event's does (4 and 6 here).
    for kind in one_kinds.keys() | many_kinds.keys():
        least = 20 if kind == "unusual_customer" else 10
        assert abs(one_kinds[kind] - many_kinds[kind]) <= 0.1 * max(one_kinds[kind], least), kind


def test_a_second_basket_in_one_batch_is_not_judged_against_a_list_it_never_saw() -> None:
    """Ten customers buy a twice, in baskets ten minutes apart, in one batch: one at a time
    their second basket meets a list without a (bought), so it is no hit; the batch judges
    each customer's first new basket only, never the second against the first's list."""
    day = 86_400.0

    def history(engine: ScoringEngine) -> None:
        for n in range(10):
            engine.process(f"c-{n}", Activity("purchase", 0.0, item_id="b", amount=5.0,
                                              quantity=1))  # fmt: skip
            engine.process(f"c-{n}", Activity("view", day, item_id="a"))

    baskets = [
        (
            f"c-{n}",
            Activity("purchase", 2 * day + basket * 600.0, item_id="a", amount=5.0, quantity=1),
            None,
            f"e-{n}-{basket}",
        )
        for basket in range(2)
        for n in range(10)
    ]
    every = ScorerConfig(hit_rate_sample_every=1)
    one, batch = (ScoringEngine(CustomerScorer(every), {}) for _ in range(2))
    history(one)
    history(batch)
    for customer_id, activity, offset, event_id in baskets:
        one.process(customer_id, activity, offset=offset, event_id=event_id)
    batch.process_many(baskets)

    judged, one_by_one = batch.scorer.recommendation_quality, one.scorer.recommendation_quality
    assert (one_by_one.baskets, judged.baskets) == (20, 10)


def test_batches_give_the_value_reasons_one_event_at_a_time_gives(both):
    """Each customer's last score of the run, by batches and one event at a time: the same
    factors behind ``predicted_clv`` (BG/NBD's before the regression serves, the
    regression's after, a rule for one who never ordered or cancelled), phrased in words."""
    last = {mode: {s.customer_id: s.outcome.score for s in both[mode][1]} for mode in both}
    one, many = last["one"], last["batch"]
    assert one.keys() == many.keys()
    kinds = {c: {r.factor for r in many[c].value_reasons} for c in many}
    assert all(kinds[c] == {r.factor for r in one[c].value_reasons} for c in one)
    assert all(r.reason for score in many.values() for r in score.value_reasons)
    ordered = sum(
        [r.factor for r in one[c].value_reasons] == [r.factor for r in many[c].value_reasons]
        for c in one
    )
    # The models differ a little between the two ways (see the test above): here 219 of the
    # 220 customers read their factors in the same order (the regression is not warmed up).
    assert ordered >= 0.95 * len(one)
