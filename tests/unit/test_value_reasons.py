"""The reasons behind ``predicted_clv`` a CRM user reads: a big spender's and a newcomer's,
before the value regression serves and after, the same from a batch as one at a time."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import pytest

from online_models.customer.activity import DAY, Activity
from online_models.scoring import batch_scoring
from online_models.scoring.scorer import CustomerScore, CustomerScorer, ScorerConfig
from online_models.scoring.state import CustomerState
from online_models.value.spend import SpendModel, spend_features

T0 = 1_700_000_000.0
END = T0 + 400 * DAY


def purchase(time: float, amount: float) -> Activity:
    return Activity("purchase", time, item_id=f"sku-{int(amount) % 7}", amount=amount, quantity=1)


def shop(warmup_labels: int) -> tuple[CustomerScorer, dict[str, CustomerState]]:
    """Sixty customers buying for 400 days: ``c0`` .. ``c59`` spend and order more the higher
    their number; ``big`` orders weekly for 900 a basket; ``new`` places one small first order
    on the last day."""
    scorer = CustomerScorer(ScorerConfig(value_warmup_labels=warmup_labels, value_sample_days=10))
    rng = random.Random(7)
    states: dict[str, CustomerState] = {}
    for day in range(0, 400, 2):
        now = T0 + day * DAY
        for n in range(60):
            if rng.random() < 0.02 + 0.004 * n:
                name = f"c{n}"
                amount = rng.uniform(5, 20) * (1 + n / 6)
                states[name] = scorer.score(name, states.get(name), purchase(now, amount)).state
        if day % 7 == 0:
            states["big"] = scorer.score("big", states.get("big"), purchase(now, 900.0)).state
        if day % 10 == 0:
            for name, state in states.items():
                states[name] = scorer.refresh(name, state, now).state
    states["new"] = scorer.score("new", None, purchase(END, 12.0)).state
    return scorer, states


@pytest.fixture(scope="module")
def warm() -> tuple[CustomerScorer, dict[str, CustomerState]]:
    scorer, states = shop(warmup_labels=100)
    assert scorer.spend_model.ready
    return scorer, states


@pytest.fixture(scope="module")
def cold() -> tuple[CustomerScorer, dict[str, CustomerState]]:
    scorer, states = shop(warmup_labels=1_000_000)
    assert not scorer.spend_model.ready
    return scorer, states


def reasons_of(score: CustomerScore) -> list[tuple[str, float | None, str]]:
    return [(r.factor, r.contribution, r.reason) for r in score.value_reasons]


def test_after_the_warm_up_a_big_spender_reads_how_much_they_spent_against_everyone(warm):
    scorer, states = warm
    score = scorer.score_as_of(states["big"], END)

    (first, spent, text), (second, forecast, bgnbd) = reasons_of(score)
    assert (first, second) == ("log_spend_to_date", "log_bgnbd_value")
    # 58 weekly baskets of 900: more than every other customer of the shop (the top one of
    # n ranked sits at (n - 1/2) / n: half a tie with themself).
    ranked = scorer.value_model.customers
    top = math.floor(100 * (ranked - 0.5) / ranked)
    spent_to_date = states["big"].profile.net_monetary
    assert text == f"spent {spent_to_date:,.0f} to date, more than {top}% of customers"
    assert spent is not None and forecast is not None
    assert spent > 0 and forecast > 0 and abs(spent) >= abs(forecast)
    assert bgnbd.startswith("orders and spends per order like a customer BG/NBD expects ")
    assert bgnbd.endswith(" from in 90 days")


def test_after_the_warm_up_a_newcomer_reads_a_small_spend_pulling_the_forecast_down(warm):
    scorer, states = warm
    score = scorer.score_as_of(states["new"], END)

    reasons = reasons_of(score)
    spent = next(r for r in reasons if r[0] == "log_spend_to_date")
    assert spent[1] is not None and spent[1] < 0
    assert spent[2].startswith("spent 12 to date, more than ")
    assert int(spent[2].split("more than ")[1].split("%")[0]) < 10
    contributions = [abs(c) for _, c, _ in reasons if c is not None]
    assert contributions == sorted(contributions, reverse=True)  # strongest first


def test_the_terms_are_exact_on_the_log_scale_relative_to_the_average_customer():
    """With one batch of labels learned before the warm-up (no calibration: scale 1), two
    customers' terms differ by exactly the difference of their log1p forecasts, and a
    customer at the labels' weighted mean has no term."""
    rng = np.random.default_rng(3)
    x = spend_features(rng.lognormal(5, 1.5, 400), rng.lognormal(4, 1.0, 400))
    model = SpendModel(warmup_labels=400)
    model.learn_many(x, np.expm1(0.6 * x[:, 0] + 0.3 * x[:, 1] + rng.normal(0, 0.3, 400)),
                     np.zeros(400), model.unscaled_many(x))  # fmt: skip
    rows = x[:5]
    terms = model.terms_many(rows)

    logs = np.log1p(model.predict_many(rows))
    assert np.allclose(terms.sum(axis=1) - terms[0].sum(), logs - logs[0], atol=1e-9)
    mean = model.share().gram[-1, :-1] / model.share().gram[-1, -1]
    assert np.allclose(model.terms_many(mean[None, :]), 0.0, atol=1e-12)
    one = model.terms_one(dict(zip(("log_spend_to_date", "log_bgnbd_value"), rows[1], strict=True)))
    assert np.allclose(one, terms[1], rtol=1e-12)


def test_before_the_warm_up_the_reasons_are_bgnbds_orders_and_gamma_gammas_spend(cold):
    scorer, states = cold
    big = scorer.score_as_of(states["big"], END)
    new = scorer.score_as_of(states["new"], END)
    orders, per_order = scorer.lifetime_model.newcomer(90.0)

    big_reasons = {factor: (c, text) for factor, c, text in reasons_of(big)}
    assert set(big_reasons) == {"expected_orders", "spend_per_order"}
    c, text = big_reasons["expected_orders"]
    assert text == (
        f"{big.expected_orders:.1f} orders expected in the next 90 days "
        f"({orders:.1f} from a new customer)"
    )
    assert c == pytest.approx(math.log(big.expected_orders / orders))
    c, text = big_reasons["spend_per_order"]
    assert c is not None and c > 0  # 900 a basket: far above the population's mean
    assert text.startswith("expected to spend ") and text.endswith(" from a new customer)")
    # expected orders x spend per order: the terms add up to the forecast over a newcomer's
    total = sum(c for c, _ in big_reasons.values() if c is not None)
    forecast = big.expected_orders * float(
        text.split("spend ")[1].split(" per")[0].replace(",", "")
    )
    assert math.exp(total) == pytest.approx(forecast / (orders * per_order), rel=0.01)

    new_spend = next(r for r in reasons_of(new) if r[0] == "spend_per_order")
    assert new_spend[1] is not None and new_spend[1] < 0  # a basket of 12


def test_a_cancelled_customer_and_one_who_never_ordered_read_one_rule_each(warm):
    scorer, states = warm
    scorer_copy, state = pickle.loads(pickle.dumps((scorer, states["big"])))
    cancelled = scorer_copy.score("big", state, Activity("subscription_cancel", END + DAY)).score
    browser = scorer_copy.score("bob", None, Activity("view", END, item_id="sku-1")).score

    assert cancelled.predicted_clv == 0.0
    assert reasons_of(cancelled) == [
        ("subscription_cancel", None, "cancelled the subscription: no spend expected")
    ]
    assert reasons_of(browser) == [("has_ordered", None, "has not ordered yet: no spend expected")]


@pytest.mark.parametrize("phase", ["cold", "warm"])
def test_the_array_path_gives_the_reasons_one_at_a_time_does(phase, request, monkeypatch):
    """As the batch scoring's pinning test: each customer through the arrays (a batch learns
    the labels due of all its customers before scoring any, one at a time each learns those
    before it, so a whole batch's forecasts differ by what those labels taught)."""
    monkeypatch.setattr(batch_scoring, "MIN_BATCH", 1)
    world = pickle.dumps(request.getfixturevalue(phase))
    (one, one_states), (many, many_states) = pickle.loads(world), pickle.loads(world)
    ids = sorted(one_states)
    now = END + 3 * DAY

    singles = [one.refresh(c, one_states[c], now).score for c in ids]
    batch = [many.refresh_many([(c, many_states[c])], now)[0].score for c in ids]

    assert len({r.factor for s in singles for r in s.value_reasons}) >= 2
    for a, b in zip(singles, batch, strict=True):
        assert [(r.factor, r.reason) for r in a.value_reasons] == [
            (r.factor, r.reason) for r in b.value_reasons
        ]
        for x, y in zip(a.value_reasons, b.value_reasons, strict=True):
            assert (x.contribution is None) == (y.contribution is None)
            if x.contribution is not None:
                assert x.contribution == pytest.approx(y.contribution, rel=1e-9, abs=1e-9)
