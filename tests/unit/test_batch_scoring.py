"""Re-scores in batches: ``refresh_many`` against ``refresh`` one customer at a time.

A population from the simulator is scored like the worker scores it, then re-scored for ten
event-time days both ways from the same models and states. The tolerances:

- the array path itself (batches of one, forced through the arrays) gives every number of
  ``refresh`` within 1e-9 and the same labels, examples, segments, reasons and alerts, leaves
  the same votes, outlier streaks and alert memory in every state, and leaves the segments'
  spreads and distance histogram, the lifetime sample and the count of pending labels as
  ``refresh`` does (within 1e-9);
- a whole-population batch learns its due churn labels first: the churn model after the batch
  is the one-by-one model within 1e-9, and every customer's risk is the one-by-one path's risk
  with that model within 1e-9 (one by one, a customer scored before a label of the batch sees
  the model without it: up to a few hundredths apart here); value and the lifetime outlook
  within 1e-9; labels and examples equal;
- segment centres learn the batch as a mini-batch (every point assigned with the centres as
  they were, and its outlier score ranked against the distances as they were): the confirmed
  segments of at least 95% of the scores agree with one by one, so do the outlier flags of at
  least 99%, the centres end within 0.05 of one by one's, the spreads' total weight within
  1e-9 and each segment's standard deviations within 0.05 of one by one's.
"""

from __future__ import annotations

import copy
import pickle
import random
from typing import Any

import numpy as np
import orjson
import pytest

from online_models.churn.model import ChurnModel
from online_models.customer.activity import DAY, Activity
from online_models.customer.profile import CHURN_FEATURES, OUTLIER_FEATURES
from online_models.scoring import batch_scoring
from online_models.scoring.batch_votes import NO_SEGMENT, Votes
from online_models.scoring.engine import ScoringEngine
from online_models.scoring.reasons import CANCELLED_REASONS, churn_reasons
from online_models.scoring.scorer import CustomerScore, CustomerScorer, ScoreOutcome, ScorerConfig
from online_models.scoring.state import CustomerState
from online_models.segments.density import UNUSUAL
from online_models.segments.kmeans import Segmenter
from online_models.value.spend import SPEND_FEATURES
from schemas import decode_event
from streams.commands.simulator import SimulationConfig, generate_events
from streams.convert import activity_of

CUSTOMERS = 300
EVENTS = 8_000
DAYS = 10
CLOSE = 1e-9
NUMBERS = (
    "churn_risk", "value", "p_alive", "expected_orders", "predicted_clv", "as_of", "outlier_score",
)  # fmt: skip


def close(a: float | None, b: float | None, tolerance: float = CLOSE) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))


@pytest.fixture(scope="module")
def world() -> tuple[bytes, float]:
    """A simulated population scored by the engine, pickled, and its last event time."""
    scorer = CustomerScorer(ScorerConfig())
    engine = ScoringEngine(scorer, {})
    last = 0.0
    for event in generate_events(SimulationConfig(customers=CUSTOMERS), limit=EVENTS):
        decoded = decode_event(orjson.dumps(event))
        activity = activity_of(decoded)
        engine.process(decoded.customer_id, activity)
        last = activity.time
    assert scorer.segmenter.ready and scorer.churn_model.labels_learned > 1000
    return pickle.dumps((scorer, dict(engine.states))), last


def rescore_days(world: tuple[bytes, float], mode: str) -> tuple[CustomerScorer, list[Any]]:
    """Ten days of daily re-scores of everyone: ``one`` by ``refresh``, ``single`` by
    ``refresh_many`` one customer at a time, ``batch`` by one ``refresh_many`` a day. Per day:
    the ids and outcomes, and a copy of the scorer after the day."""
    scorer, states = pickle.loads(world[0])
    ids = sorted(states)
    days = []
    for day in range(1, DAYS + 1):
        now = world[1] + day * DAY
        if mode == "one":
            outcomes = [scorer.refresh(c, states[c], now) for c in ids]
        elif mode == "single":
            outcomes = [scorer.refresh_many([(c, states[c])], now)[0] for c in ids]
        else:
            outcomes = scorer.refresh_many([(c, states[c]) for c in ids], now)
        days.append((ids, outcomes, pickle.loads(pickle.dumps((scorer, states)))))
    return scorer, days


@pytest.fixture(scope="module")
def one_by_one(world: tuple[bytes, float]) -> tuple[CustomerScorer, list[Any]]:
    return rescore_days(world, "one")


def assert_same_bookkeeping(a: ScoreOutcome, b: ScoreOutcome, *, clv: bool = True) -> None:
    assert a.labels == b.labels
    assert [e.time for e in a.state.pending] == [e.time for e in b.state.pending]
    for x, y in zip(a.state.pending, b.state.pending, strict=True):
        assert all(close(x.features[f], y.features[f]) for f in CHURN_FEATURES)
    assert [e[0] for e in a.state.value_pending] == [e[0] for e in b.state.value_pending]
    numbers = ("p_alive", "expected_orders", "value", "as_of")
    for name in (*numbers, "predicted_clv") if clv else numbers:
        assert close(getattr(a.score, name), getattr(b.score, name)), name
    if clv:  # the same value model served: the same value examples, forecasts included
        for x, y in zip(a.state.value_pending, b.state.value_pending, strict=True):
            assert all(close(u, v) for u, v in zip(x, y, strict=True))
    assert close(a.score.next_order_expected, b.score.next_order_expected)


def assert_same_value_reasons(a: CustomerScore, b: CustomerScore) -> None:
    """The factors behind ``predicted_clv``: the same words, the contributions close."""
    assert [(r.factor, r.reason) for r in a.value_reasons] == [
        (r.factor, r.reason) for r in b.value_reasons
    ]
    assert all(
        close(x.contribution, y.contribution)
        for x, y in zip(a.value_reasons, b.value_reasons, strict=True)
    )


@pytest.mark.slow
def test_the_array_path_gives_what_refresh_gives(world, one_by_one, monkeypatch):
    monkeypatch.setattr(batch_scoring, "MIN_BATCH", 1)  # batches of one through the arrays
    one, one_days = one_by_one
    single, single_days = rescore_days(world, "single")

    for day_one, day_single in zip(one_days, single_days, strict=True):
        ids, expected, got = day_one[0], day_one[1], day_single[1]
        for customer, a, b in zip(ids, expected, got, strict=True):
            assert_same_bookkeeping(a, b)
            assert all(close(getattr(a.score, n), getattr(b.score, n)) for n in NUMBERS), customer
            assert a.score.segment == b.score.segment
            assert a.score.segment_name == b.score.segment_name
            assert a.score.segment_outlier == b.score.segment_outlier
            assert [r.factor for r in a.score.churn_reasons] == [
                r.factor for r in b.score.churn_reasons
            ]
            assert [r.reason for r in a.score.churn_reasons] == [
                r.reason for r in b.score.churn_reasons
            ]
            assert_same_value_reasons(a.score, b.score)
            assert [(x.type, x.time) for x in a.alerts] == [(x.type, x.time) for x in b.alerts]
            assert a.changed == b.changed
        for customer in ids:
            a_state, b_state = states_after(day_one)[customer], states_after(day_single)[customer]
            assert a_state.placement_record() == b_state.placement_record(), customer
    assert one.churn_model.labels_learned == single.churn_model.labels_learned
    assert one.pending_labels == single.pending_labels
    assert_same_churn_model(one.churn_model, single.churn_model)
    assert np.allclose(one.segmenter._centers, single.segmenter._centers, rtol=0, atol=CLOSE)
    for a, b in zip(spread_of(one), spread_of(single), strict=True):
        assert np.allclose(a, b, rtol=CLOSE, atol=CLOSE)
    assert np.allclose(
        one.segmenter._live.distances, single.segmenter._live.distances, rtol=CLOSE, atol=CLOSE
    )
    sample_a, sample_b = one.lifetime_model._unsent, single.lifetime_model._unsent
    assert sample_a.keys() == sample_b.keys()
    assert all(np.allclose(sample_a[k], sample_b[k], rtol=CLOSE, atol=0) for k in sample_a)


def states_after(day: tuple[Any, ...]) -> dict[str, Any]:
    """The states as they were after a day of re-scores (from the day's copy)."""
    return day[2][1]


def spread_of(scorer: CustomerScorer) -> tuple[np.ndarray, ...]:
    spread = scorer.segmenter._live.spread
    return spread.weights, spread.sums, spread.squares


def assert_same_churn_model(a: ChurnModel, b: ChurnModel) -> None:
    wa, wb = a.weights(), b.weights()
    assert wa.keys() == wb.keys()
    assert all(close(wa[k], wb[k]) for k in wa)
    share_a, share_b = a._additive(), b._additive()
    assert np.allclose(share_a.g2, share_b.g2, rtol=CLOSE, atol=0)
    for x, y in zip(a._scaler_arrays(a._scaler), b._scaler_arrays(b._scaler), strict=True):
        assert np.allclose(x, y, rtol=CLOSE, atol=CLOSE)


def test_a_whole_population_batch_is_one_by_one_with_the_batchs_labels_learned_first(
    world, one_by_one
):
    one, one_days = one_by_one
    batch, batch_days = rescore_days(world, "batch")

    agree = outliers_agree = total = labelled_days = taken = 0
    for day, ((ids, expected, (one_after, one_states)), (_, got, _)) in enumerate(
        zip(one_days, batch_days, strict=True)
    ):
        assert len(got) == len(ids)
        labelled_days += any(a.labels for a in expected)
        now = world[1] + (day + 1) * DAY
        spend = one_after.spend_model
        for customer, a, b in zip(ids, expected, got, strict=True):
            # One by one serves each customer the value model of the labels before them (4%
            # apart in this world): the value forecast is compared with every label learned.
            assert_same_bookkeeping(a, b, clv=False)
            # The risk one by one's scorer gives with every label of the day learned.
            after = one_after.score_as_of(one_states[customer], now)
            assert close(after.churn_risk, b.score.churn_risk), customer
            # So is the value forecast: the calibration's sums take each label's forecast from
            # its example, not from the model of its mini-batch (8e-14 apart at most here).
            assert close(after.predicted_clv, b.score.predicted_clv), customer
            for example in b.state.value_pending:
                if example[0] == now:  # taken today: what that model served, unscaled too
                    x = dict(zip(SPEND_FEATURES, example[2:-2], strict=True))
                    assert close(example[-2], spend.predict_one(x)), customer
                    assert close(example[-1], spend.unscaled_one(x)), customer
                    taken += 1
            agree += a.score.segment == b.score.segment
            outliers_agree += a.score.segment_outlier == b.score.segment_outlier
            total += 1
    assert labelled_days, "some day's batch learns labels"
    assert taken and batch.spend_model.ready, "some day's batch takes value examples"
    assert_same_churn_model(one.churn_model, batch.churn_model)
    assert agree >= 0.95 * total
    assert outliers_agree >= 0.99 * total
    assert np.abs(one.segmenter._centers - batch.segmenter._centers).max() < 0.05
    # The spreads: the same points' weight, shared out a little differently between segments,
    # but for the few a segment's medians, read again only every 5% of its weight one by one,
    # trim as lone outliers in one path and not the other (0.002 of 488 in one run).
    assert close(spread_of(one)[0].sum(), spread_of(batch)[0].sum(), tolerance=1e-3)
    deviations = [scorer.segmenter._live.spread.yardsticks()[1] for scorer in (one, batch)]
    assert np.abs(deviations[0] - deviations[1]).max() < 0.05


def test_learn_many_takes_rivers_steps_example_by_example():
    rng = random.Random(3)
    examples = [
        (
            {name: rng.gauss(i % 3, 1.0 + j) for j, name in enumerate(CHURN_FEATURES)},
            rng.random() < 0.4,
        )
        for i in range(500)
    ]
    river, batched = ChurnModel(), ChurnModel()
    for x, y in examples:
        river.learn_one(x, y)
    for start in range(0, len(examples), 64):  # in mini-batches, as re-scores bring them
        chunk = examples[start : start + 64]
        batched.learn_many([x for x, _ in chunk], [y for _, y in chunk])

    assert_same_churn_model(river, batched)
    assert batched.labels_learned == river.labels_learned == 500
    probe = examples[7][0]
    assert close(river.risk(probe), batched.risk(probe))
    delta_a, delta_b = river.delta(), batched.delta()
    assert delta_a.labels == delta_b.labels
    for name in ("weights", "g2", "count", "mean", "var"):
        assert np.allclose(getattr(delta_a, name), getattr(delta_b, name), rtol=CLOSE, atol=CLOSE)
    # A model that learned in mini-batches pickles and predicts what it did.
    assert pickle.loads(pickle.dumps(batched)).risk(probe) == batched.risk(probe)


@pytest.mark.slow
def test_risks_and_terms_of_many_are_those_of_one_at_a_time(churn_world):
    model = churn_world.scorer.churn_model
    states = list(churn_world.states.values())[:50]
    rows = [state.profile.churn_features(state.profile.last_seen + 30 * DAY) for state in states]
    matrix = np.array([[row[name] for name in CHURN_FEATURES] for row in rows])

    risks, terms = model.risk_and_contributions_many(matrix)

    for row, risk, term in zip(rows, risks, terms, strict=True):
        one_risk, one_terms = model.risk_and_contributions(row)
        assert close(one_risk, float(risk))
        assert all(
            close(one_terms[name], float(t)) for name, t in zip(CHURN_FEATURES, term, strict=True)
        )


def test_segments_of_a_mini_batch_are_assigned_with_the_centres_before_it():
    rng = np.random.default_rng(5)
    segmenter = Segmenter(n_segments=3)
    segmenter.learn_predict_many(rng.random((40, 7)), np.zeros(40))  # seeds, one by one
    assert segmenter.ready
    before = pickle.loads(pickle.dumps(segmenter))
    points = rng.random((30, 7))  # the segment features, then the basket's two

    got = segmenter.learn_predict_many(points, np.full(30, 3_600.0))

    expected = [before.predict_one(dict(zip(OUTLIER_FEATURES, p, strict=True))) for p in points]
    assert got.tolist() == expected
    # Then each point nudged the centre it was assigned, as one weight-1 point of its time.
    before._advance(3_600.0)
    sums, weights = before._live.sums.copy(), before._live.weights.copy()
    for point, segment in zip(points, expected, strict=True):
        sums[segment] += point[:5]
        weights[segment] += 1.0
    assert np.allclose(segmenter._centers, sums / weights[:, None], rtol=1e-12, atol=0)
    assert segmenter.learned == before.learned + 30


def test_a_batch_whose_customers_cannot_be_rescored_scores_the_others():
    engine = ScoringEngine(CustomerScorer(), {})
    for n in range(40):
        engine.process(f"c{n:02d}", Activity("purchase", n, item_id="a", amount=5.0, quantity=1))
    engine.states["c07"].pending = [object()]  # type: ignore[list-item]
    engine.states["c11"].profile.views = "many"  # type: ignore[assignment]  # breaks the arrays

    scored = engine.process("late", Activity("view", 2 * DAY, item_id="a"))

    rescored = [s.customer_id for s in scored[1:]]
    assert rescored == [f"c{n:02d}" for n in range(40) if n not in (7, 11)]
    assert engine.rescore_errors == 2


def test_votes_counted_over_arrays_are_those_counted_state_by_state():
    rng = random.Random(11)
    states = [CustomerState.new(0.0) for _ in range(200)]
    alive = {0, 1, 2, 3}
    for score in range(12):
        placed = [rng.choice([0, 1, 2, 3, UNUSUAL]) for _ in states]
        outliers = [rng.random() < 0.3 for _ in states]
        gone = rng.choice([None, 1, 2])  # a region that merged away, for this score only
        current = alive - {gone}
        # Segment 3's row goes to another group every fourth score: its next generation.
        generations = {0: 0, 1: 0, 2: 0, 3: score // 4}

        def live(segment: int, generation: int) -> bool:
            return segment in current and generations[segment] == generation  # noqa: B023

        copies = [copy.deepcopy(state) for state in states]

        votes = Votes.of(copies)
        confirmed = votes.confirm(
            np.array(placed), np.array(outliers), 3, live, generation=generations.__getitem__
        )
        confirmed.votes.write(copies, confirmed.votes.changed(votes))

        for state, segment, outlier, left, became in zip(
            states, placed, outliers, confirmed.left.tolist(),
            confirmed.became_outlier.tolist(), strict=True,
        ):  # fmt: skip
            assert state.confirm_outlier(outlier, 3) == became
            expected_left = None
            if segment != UNUSUAL:
                if state.segment is not None and not live(state.segment, state.segment_generation):
                    state.segment, state.segment_candidate, state.segment_votes = None, None, 0
                expected_left = state.confirm_segment(segment, 3, generations[segment])
            assert (None if left == NO_SEGMENT else left) == expected_left
        assert [s.placement_record() for s in copies] == [s.placement_record() for s in states]


def test_reasons_phrased_when_read_are_those_of_the_profile_as_it_was_scored(world):
    scorer, states = pickle.loads(world[0])
    customers = sorted(states.items())[:64]
    now = world[1] + 20 * DAY
    outcomes = scorer.refresh_many(customers, now)
    model = scorer.churn_model  # as the batch left it: it scored with this one
    expected = {
        customer_id: churn_reasons(
            model.contributions(state.profile.churn_features(now)), state.profile, now
        )
        for customer_id, state in customers
    }
    checked = 0
    for (customer_id, state), outcome in zip(customers, outcomes, strict=True):
        state.profile.orders += 5  # a later event changes the profile: not the score's reasons
        reasons = outcome.score.churn_reasons
        if state.cancelled:
            assert reasons == CANCELLED_REASONS
            continue
        phrased = tuple(reasons)
        assert reasons == phrased and hash(reasons) == hash(phrased)
        assert pickle.loads(pickle.dumps(outcome.score)) == outcome.score
        logistic = [r.reason for r in phrased if r.factor != "expected_orders"]
        assert logistic == [
            r.reason for r in expected[customer_id] if r.factor in {p.factor for p in phrased}
        ]
        checked += bool(logistic)
    assert checked > 32
