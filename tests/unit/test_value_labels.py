"""Value labels the stream makes, the value regression learning them, and its forecast served."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import orjson
import pytest

from online_models.customer.activity import DAY, Activity
from online_models.group.model import GroupModel
from online_models.group.parts import SPEND, Delta, share_from_arrays
from online_models.scoring.engine import ScoringEngine
from online_models.scoring.scorer import CustomerScorer, ScorerConfig
from online_models.scoring.state import CustomerState
from online_models.value.quality import ValueQuality
from online_models.value.spend import SpendModel, SpendShare, merge_spend, spend_features

T0 = 1_700_000_000.0
HORIZON = 90 * DAY


def purchase(time: float, amount: float, item: str = "sku-1") -> Activity:
    return Activity("purchase", time, item_id=item, amount=amount, quantity=1)


def learned_spend(model: SpendModel, features: list[float]) -> float:
    """The spend of a model's one label, read back from its statistics: the target's weighted
    mean is log1p(spend) less the label's log BG/NBD forecast."""
    share = model.share()
    return math.expm1(share.moment[-1] / share.gram[-1, -1] + features[1])


def test_a_value_label_is_made_only_once_its_horizon_has_closed_in_event_time():
    scorer = CustomerScorer()
    state = scorer.score("ann", None, purchase(T0, 50.0)).state
    state = scorer.score("ann", state, purchase(T0 + 30 * DAY, 100.0)).state
    first, second = (list(example) for example in state.value_pending)
    assert [first[0], second[0]] == [T0, T0 + 30 * DAY]

    state = scorer.score("ann", state, Activity("view", T0 + 89 * DAY, item_id="sku-2")).state
    state = scorer.refresh("ann", state, T0 + HORIZON - 1.0).state
    assert scorer.spend_model.labels_learned == 0  # a second short of the horizon: no label

    state = scorer.refresh("ann", state, T0 + HORIZON).state
    assert scorer.spend_model.labels_learned == 1
    # Her spend in (T0, T0 + 90 days]: the second basket, not the first.
    assert learned_spend(scorer.spend_model, first[2:4]) == pytest.approx(100.0)
    # The second waits, and the one the view left.
    assert [example[0] for example in state.value_pending] == [T0 + 30 * DAY, T0 + 89 * DAY]


def test_an_event_after_the_horizon_labels_before_it_is_recorded():
    scorer = CustomerScorer(ScorerConfig(value_sample_days=365.0))
    state = scorer.score("ann", None, purchase(T0, 50.0)).state
    (example,) = state.value_pending
    # A basket on the horizon's last second counts; the one that labels it comes after.
    state = scorer.score("ann", state, purchase(T0 + HORIZON, 70.0)).state
    assert scorer.spend_model.labels_learned == 0
    scorer.score("ann", state, purchase(T0 + HORIZON + DAY, 1_000.0, "sku-2"))
    assert scorer.spend_model.labels_learned == 1
    assert learned_spend(scorer.spend_model, list(example[2:4])) == pytest.approx(70.0)


def test_refunds_in_the_horizon_come_off_the_label():
    scorer = CustomerScorer(ScorerConfig(value_sample_days=365.0))
    state = scorer.score("ann", None, purchase(T0, 50.0)).state
    (example,) = state.value_pending
    state = scorer.score("ann", state, purchase(T0 + 10 * DAY, 300.0)).state
    refund = Activity("return", T0 + 20 * DAY, item_id="sku-1", amount=120.0)
    state = scorer.score("ann", state, refund).state
    scorer.refresh("ann", state, T0 + HORIZON + 2 * DAY)
    assert learned_spend(scorer.spend_model, list(example[2:4])) == pytest.approx(180.0)


def test_an_erased_customers_value_examples_go_with_their_state():
    engine = ScoringEngine(CustomerScorer(), {})
    for n in range(4):
        engine.process("ann", purchase(T0 + n * 10 * DAY, 40.0))
        engine.process("bob", purchase(T0 + n * 10 * DAY + 60, 25.0))
    ann_examples = len(engine.states["ann"].value_pending)
    assert ann_examples

    removed = engine.forget("ann")
    assert removed["value_labels"] == ann_examples
    # Every horizon passes: only Bob's examples become labels.
    bobs = {example[0] for example in engine.states["bob"].value_pending}
    for day in range(31, 300):
        engine.advance(T0 + day * DAY, limit=None)
        bobs |= {example[0] for example in engine.states["bob"].value_pending}
    labels = engine.scorer.spend_model.labels_learned
    assert labels == len(bobs) - len(engine.states["bob"].value_pending) > 0
    assert engine.scorer.value_quality.labels == labels


def test_value_examples_survive_the_state_records_and_older_records_read_as_none():
    scorer = CustomerScorer()
    state = scorer.score("ann", None, purchase(T0, 50.0)).state
    assert state.value_pending
    assert CustomerState.decode(state.encode()) == state
    assert CustomerState.from_dict(state.to_dict()) == state
    # A record from before the field (and the segment's generation after it, which came later).
    older = orjson.dumps(orjson.loads(state.encode())[:-2])
    assert CustomerState.decode(older).value_pending == []


def random_labels(seed: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels as the stream brings them: features, the spend that followed, the time served
    and the unscaled forecast kept in the example (0 for a fifth, taken before it served)."""
    rng = np.random.default_rng(seed)
    spent = rng.lognormal(6.0, 1.5, count)
    forecast = rng.lognormal(5.0, 1.0, count)
    spend = np.where(rng.random(count) < 0.4, 0.0, forecast * rng.lognormal(0.3, 1.0, count))
    times = T0 + rng.uniform(0, 300 * DAY, count)
    unscaled = np.where(rng.random(count) < 0.2, 0.0, forecast * rng.lognormal(0.0, 0.5, count))
    return spend_features(spent, forecast), spend, times, unscaled


def assert_same_share(a: SpendShare, b: SpendShare) -> None:
    """Sums in another order: equal to a relative 1e-12 (forward-decay weights near 2**80)."""
    for name in ("gram", "moment", "calibration"):
        assert np.allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=0), name
    assert a.labels == b.labels


def test_two_workers_statistics_merge_into_one_learners_within_float_rounding():
    x, y, times, unscaled = random_labels(1, 4_000)
    one = SpendModel(warmup_labels=0)
    one.learn_many(x, y, times, unscaled)
    workers = [SpendModel(warmup_labels=0), SpendModel(warmup_labels=0)]
    workers[0].learn_many(x[::2], y[::2], times[::2], unscaled[::2])
    workers[1].learn_many(x[1::2], y[1::2], times[1::2], unscaled[1::2])

    group = merge_spend(merge_spend(SpendShare.zero(), workers[0].delta()), workers[1].delta())
    alone = one.share()
    assert_same_share(group, alone)
    assert group.labels == 4_000 and alone.calibration[1] > 0
    workers[0].apply(group)
    assert np.allclose(workers[0].predict_many(x), one.predict_many(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("size", [1, 7, 100, 1_000])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_mini_batches_of_any_size_on_any_workers_learn_one_learners_statistics(size, workers):
    """The calibration's forecasts come with the labels, so neither where a fetch ends nor how
    many workers learn moves the scale served: each worker learns its labels in mini-batches
    of ``size``, sends its delta every few batches and applies the group's share."""
    x, y, times, unscaled = random_labels(4, 1_000)
    one = SpendModel(warmup_labels=50)
    one.learn_many(x, y, times, unscaled)

    models = [SpendModel(warmup_labels=50) for _ in range(workers)]
    group = SpendShare.zero()
    for step, start in enumerate(range(0, len(y), size)):
        part = slice(start, start + size)
        model = models[step % workers]
        model.learn_many(x[part], y[part], times[part], unscaled[part])
        if step % 3 == 2:  # a delta sent and the group's share applied (none pending)
            group = merge_spend(group, model.delta())
            model.apply(group)
    for model in models:
        group = merge_spend(group, model.delta())
    assert_same_share(group, one.share())
    models[0].apply(group)
    assert models[0].ready and one.ready
    assert np.allclose(models[0].predict_many(x), one.predict_many(x), rtol=1e-9, atol=0)


def test_an_example_keeps_the_unscaled_forecast_served_and_an_old_one_counts_as_none():
    config = ScorerConfig(value_warmup_labels=1)
    scorer = CustomerScorer(config)
    state = scorer.score("ann", None, purchase(T0, 50.0)).state
    assert state.value_pending[0][-1] == 0.0  # taken before the regression served
    state = scorer.score("ann", state, purchase(T0 + 30 * DAY, 100.0)).state
    state = scorer.score("ann", state, purchase(T0 + HORIZON + DAY, 80.0)).state
    model = scorer.spend_model
    assert model.ready and model.labels_learned == 1 and len(state.value_pending) == 2
    _, _, *features, forecast, unscaled = state.value_pending[-1]
    x = dict(zip(("log_spend_to_date", "log_bgnbd_value"), features, strict=True))
    assert unscaled > 0 and unscaled == model.unscaled_one(x)
    assert forecast == pytest.approx(model.predict_one(x), rel=1e-12)
    later = purchase(T0 + 2 * HORIZON + 2 * DAY, 10.0)
    # Labelled, the example served by the regression enters the calibration...
    kept_scorer, kept_state = pickle.loads(pickle.dumps((scorer, state)))
    kept_scorer.score("ann", kept_state, later)
    weight = model.weight(np.array([T0 + HORIZON + DAY]))[0]
    assert kept_scorer.spend_model.share().calibration[1] == pytest.approx(weight * unscaled**2)
    # ...and one of a record from before the unscaled forecast was kept is learned, out of it.
    record = orjson.loads(state.encode())
    record[-2] = [example[:-1] for example in record[-2]]  # the generation is last
    state = CustomerState.decode(orjson.dumps(record))
    assert [example[-1] for example in state.value_pending] == [0.0, 0.0]
    before = model.share().calibration.copy()
    scorer.score("ann", state, later)
    assert model.labels_learned == 3
    assert np.array_equal(model.share().calibration, before)


def test_the_group_model_merges_spend_deltas_once_and_the_record_round_trips():
    x, y, times, unscaled = random_labels(2, 500)
    worker = SpendModel()
    worker.learn_many(x, y, times, unscaled)
    delta = worker.delta()
    group = GroupModel(ScorerConfig())
    assert group.merge(Delta(SPEND, "w1", 1, delta))
    assert not group.merge(Delta(SPEND, "w1", 1, delta))  # delivered twice, counted once
    _, (part,) = group.publish()
    meta, arrays = part.share.to_arrays()
    back = share_from_arrays(SPEND, meta, arrays, ScorerConfig())
    assert isinstance(back, SpendShare) and back.labels == 500
    assert np.array_equal(back.gram, delta.gram)
    with pytest.raises(ValueError, match="shapes"):
        share_from_arrays(SPEND, meta, {**arrays, "moment": np.zeros(5)}, ScorerConfig())


def test_a_pickled_value_model_forecasts_what_the_live_one_did():
    x, y, times, unscaled = random_labels(3, 800)
    model = SpendModel(warmup_labels=100)
    model.learn_many(x, y, times, unscaled)
    copy = pickle.loads(pickle.dumps(model))
    assert np.array_equal(copy.predict_many(x), model.predict_many(x))
    scorer = CustomerScorer()
    scorer.score("ann", None, purchase(T0, 50.0))
    assert pickle.loads(pickle.dumps(scorer)).spend_model.labels_learned == 0


def test_the_forecast_is_bgnbds_until_the_warm_up_and_the_regressions_after():
    config = ScorerConfig(value_warmup_labels=30, value_sample_days=10.0)
    scorer = CustomerScorer(config)
    rng = random.Random(5)
    states: dict[str, CustomerState | None] = {}
    served_before = []
    for day in range(0, 400, 5):
        for n in range(12):
            name = f"c{n}"
            if rng.random() < 0.1 + 0.05 * n:
                amount = rng.uniform(10, 40) * (1 + n)
                outcome = scorer.score(name, states.get(name), purchase(T0 + day * DAY, amount))
                states[name] = outcome.state
                if not scorer.spend_model.ready:
                    lifetime = scorer.lifetime_model.predict(
                        first=outcome.state.profile.first_order_at,
                        last=outcome.state.profile.last_order_at,
                        orders=outcome.state.profile.orders,
                        spend=outcome.state.profile.net_monetary, now=T0 + day * DAY,
                        horizon_days=90, clv_days=365,
                    )  # fmt: skip
                    served_before.append((outcome.score.predicted_clv, lifetime.predicted_clv))
        for name, state in states.items():
            if state is not None:
                states[name] = scorer.refresh(name, state, T0 + day * DAY).state
    assert served_before
    assert all(served == pytest.approx(bgnbd) for served, bgnbd in served_before)
    assert scorer.spend_model.ready
    state = next(s for s in states.values() if s is not None and s.profile.orders > 1)
    score = scorer.score_as_of(state, T0 + 400 * DAY)
    [forecast] = scorer.value_forecasts([state], T0 + 400 * DAY)
    assert score.predicted_clv == pytest.approx(forecast * 365 / 90)
    assert scorer.value_quality.labels == scorer.spend_model.labels_learned


def test_the_live_rank_correlation_counts_a_day_only_once_its_horizon_closed():
    quality = ValueQuality(horizon_days=90.0, cohort_days=2)
    served_at = np.full(4, T0)
    quality.update_many(
        np.array([1.0, 2, 3, 4]), np.array([0.0, 5, 9, 20]), served_at, T0 + HORIZON
    )
    assert math.isnan(quality.cohort_rank_correlation)  # labelled, but the day not closed
    # A day later that day has closed; the next day's forecast (far off) is not counted yet.
    quality.update_many(np.array([9.0]), np.array([0.0]), np.array([T0 + DAY]), T0 + HORIZON + DAY)
    assert quality.cohort_rank_correlation == pytest.approx(1.0)
    quality.update_many(np.array([]), np.array([]), np.array([]), T0 + HORIZON + 2 * DAY)
    assert quality.cohort_rank_correlation < 1.0


def test_a_malformed_value_example_in_a_stored_state_is_dropped_and_fails_no_other_label():
    scorer = CustomerScorer()
    ann = scorer.score("ann", None, purchase(T0, 50.0)).state
    bob = scorer.score("bob", None, purchase(T0, 80.0)).state
    record = orjson.loads(ann.encode())
    good = record[-2][0]  # the value examples, before the segment's generation
    record[-2] = [good, [T0 + DAY, None, 1.0], [T0 + 2 * DAY, *good[1:]]]  # short, then fine
    ann = CustomerState.decode(orjson.dumps(record))
    assert ann.value_pending == [good, [T0 + 2 * DAY, *good[1:]]]

    # A label row that is not finite (say, a forecast gone NaN) is dropped with the others kept.
    scorer._value_due.append([T0, 1.0, math.nan, 1.0, 1.0, 5.0])
    scorer.refresh("ann", ann, T0 + HORIZON + 2 * DAY)
    scorer.refresh("bob", bob, T0 + HORIZON + 2 * DAY)
    assert scorer.spend_model.labels_learned == 3  # ann's two good examples and bob's
    assert np.isfinite(scorer.spend_model.share().gram).all()


def test_a_customer_who_never_comes_back_has_every_value_example_labelled_before_rescores_stop():
    scorer = CustomerScorer()
    state = scorer.score("ann", None, purchase(T0, 50.0)).state
    now, taken = T0, {example[0] for example in state.value_pending}
    while (when := scorer.next_refresh(state, now)) is not None:
        state, now = scorer.refresh("ann", state, when).state, when
        taken |= {example[0] for example in state.value_pending}

    assert state.value_pending == []  # none left waiting for a return that never comes
    assert scorer.spend_model.labels_learned == len(taken) > 13  # each labelled: no spend
    assert max(taken) - T0 <= 2 * HORIZON


def test_a_baskets_further_lines_count_before_its_example_not_in_its_label():
    scorer = CustomerScorer(ScorerConfig(value_sample_days=365.0))
    state = scorer.score("ann", None, purchase(T0, 50.0, "sku-1")).state
    state = scorer.score("ann", state, purchase(T0, 30.0, "sku-2")).state  # the same basket
    (example,) = state.value_pending
    assert example[1] == pytest.approx(80.0)  # spent by the example's time: the whole basket
    assert example[2] == pytest.approx(math.log1p(80.0))  # and its spend feature
    state = scorer.score("ann", state, purchase(T0 + 10 * DAY, 100.0)).state
    scorer.refresh("ann", state, T0 + HORIZON + DAY)
    assert learned_spend(scorer.spend_model, list(example[2:4])) == pytest.approx(100.0)
