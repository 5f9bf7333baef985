"""What a customer is worth and why they are at risk: BG/NBD, Gamma-Gamma, reasons, cohorts.

The lifetime model is checked against the BG/NBD paper's own numbers, its fit against data
simulated from known parameters, its sample's merge for exactness; the reasons against
customers whose risk has one obvious cause; the live AUC against the cohorts it judges.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy import special

from online_models.churn.quality import ChurnQuality
from online_models.customer.activity import DAY, Activity
from online_models.customer.profile import CustomerProfile
from online_models.evaluation.measures import roc_auc
from online_models.scoring.reasons import churn_reasons
from online_models.scoring.scorer import CustomerScorer, ScorerConfig
from online_models.value.lifetime import LifetimeModel, _expected_orders
from online_models.value.lifetime_fit import (
    LifetimeShare,
    _bgnbd_nll,
    _gamma_gamma_nll,
    _Repeats,
    fit_lifetime,
    merge_lifetime,
)

T0 = 1_735_689_600.0


def test_expected_orders_match_the_bgnbd_paper() -> None:
    """Fader, Hardie and Lee (2005), CDNOW, in weeks: a customer with x = 2, t_x = 30.43,
    T = 38.86 is expected to make 1.226 orders in the next 39 weeks."""
    r, alpha, a, b = 0.243, 4.414, 0.793, 2.426
    x, t_x, age = 2.0, 30.43, 38.86
    dropped = (a / (b + x - 1)) * ((alpha + age) / (alpha + t_x)) ** (r + x)
    assert _expected_orders(r, alpha, a, b, x, t_x, age, 39.0, dropped) == pytest.approx(
        1.226, abs=5e-4
    )


def simulate(customers: int, seed: int) -> list[tuple[float, float, int, float]]:
    """Customers drawn from BG/NBD (r=0.8, alpha=20 days, a=1.5, b=6) with Gamma-Gamma spend
    (p=4, q=5, gamma=40), observed for 300 days: (first, last, orders, spend)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(customers):
        rate = rng.gamma(0.8, 1 / 20.0)
        dropout = rng.beta(1.5, 6.0)
        scale = rng.gamma(5.0, 1 / 40.0)  # per-order spend rate nu
        first = rng.uniform(0, 100) * DAY
        t, last, orders, spend = first, first, 1, rng.gamma(4.0, 1 / scale)
        while True:
            if rng.random() < dropout:
                break
            t += rng.exponential(1 / rate) * DAY
            if t > 300 * DAY:
                break
            last, orders = t, orders + 1
            spend += rng.gamma(4.0, 1 / scale)
        out.append((first, last, orders, spend))
    return out


def test_the_fit_recovers_the_parameters_data_was_drawn_from() -> None:
    model = LifetimeModel(sample_size=5_000)
    for n, (first, last, orders, spend) in enumerate(simulate(4_000, seed=1)):
        model.observe(f"c{n}", first, last, orders, spend, now=300 * DAY)
    model.fit(300 * DAY)
    r, alpha, a, b, p, q, gamma = model.params
    # Maximum likelihood on 4,000 customers: the rate and dropout means come back closely.
    assert r / alpha == pytest.approx(0.8 / 20, rel=0.25)
    assert a / (a + b) == pytest.approx(1.5 / 7.5, rel=0.35)
    assert gamma * p / (q - 1) == pytest.approx(40 * 4 / 4, rel=0.25)


def bgnbd_log_likelihood(
    r: Any, alpha: Any, a: Any, b: Any, x: np.ndarray, t_x: np.ndarray, age: np.ndarray
) -> np.ndarray:
    """BG/NBD's log-likelihood per customer, as Fader, Hardie and Lee (2005) write it."""
    common = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    alive = common + special.betaln(a, b + x) - special.betaln(a, b) - (r + x) * np.log(alpha + age)
    gone = common + special.betaln(a + 1, b + np.maximum(x - 1, 0)) - special.betaln(a, b)
    gone = np.where(x > 0, gone - (r + x) * np.log(alpha + t_x), -np.inf)
    return np.logaddexp(alive, gone)


def gamma_gamma_log_likelihood(
    p: Any, q: Any, gamma: Any, n: np.ndarray, mean: np.ndarray
) -> np.ndarray:
    """Gamma-Gamma's log-likelihood per customer (Fader, Hardie and Lee 2005, iso-value)."""
    return (
        special.gammaln(p * n + q) - special.gammaln(p * n) - special.gammaln(q)
        + q * np.log(gamma) + p * n * np.log(n) + (p * n - 1) * np.log(mean)
        - (p * n + q) * np.log(gamma + mean * n)
    )  # fmt: skip


def central_difference(
    function: Callable[[np.ndarray], float], point: np.ndarray, step: float = 1e-5
) -> np.ndarray:
    """The gradient of ``function`` at ``point`` by central differences."""
    steps = np.eye(len(point)) * step
    return np.array([(function(point + h) - function(point - h)) / (2 * step) for h in steps])


@pytest.mark.parametrize(
    "params", [(0.5, 30.0, 0.5, 5.0), (2.0, 5.0, 0.1, 50.0), (1e4, 2e5, 0.2, 0.8)]
)
def test_the_bgnbd_fit_climbs_the_papers_likelihood_along_its_true_gradient(
    params: tuple[float, ...],
) -> None:
    rng = np.random.default_rng(3)
    x = rng.poisson(2.0, 500).astype(float)
    age = rng.uniform(30.0, 365.0, 500)
    t_x = np.where(x > 0, age * rng.uniform(0.0, 1.0, 500), 0.0)
    log_params = np.log(params)
    nll, gradient = _bgnbd_nll(log_params, _Repeats.of(x), t_x, age)
    assert nll == pytest.approx(-np.mean(bgnbd_log_likelihood(*params, x, t_x, age)), rel=1e-12)
    numeric = central_difference(
        lambda lp: -np.mean(bgnbd_log_likelihood(*np.exp(lp), x, t_x, age)), log_params
    )
    np.testing.assert_allclose(gradient, numeric, rtol=1e-4, atol=1e-6)


def test_the_gamma_gamma_fit_climbs_the_papers_likelihood_along_its_true_gradient() -> None:
    rng = np.random.default_rng(4)
    orders = rng.poisson(2.0, 500) + 1.0
    mean = rng.gamma(3.0, 20.0, 500)
    log_params = np.log([3.0, 3.0, 100.0])
    nll, gradient = _gamma_gamma_nll(log_params, _Repeats.of(orders), mean)
    expected = -np.mean(gamma_gamma_log_likelihood(3.0, 3.0, 100.0, orders, mean))
    assert nll == pytest.approx(expected, rel=1e-12)
    numeric = central_difference(
        lambda lp: -np.mean(gamma_gamma_log_likelihood(*np.exp(lp), orders, mean)), log_params
    )
    np.testing.assert_allclose(gradient, numeric, rtol=1e-4, atol=1e-6)


def test_customers_who_all_buy_at_one_rate_keep_that_rate_at_the_bound() -> None:
    """Every customer orders every 10 days: BG/NBD's gamma of rates narrows to a point, r and
    alpha grow together towards the bound, and their ratio, the rate predicted with, stays
    one order per 10 days (a clipped search once kept the bound for both and halved it)."""
    model = LifetimeModel(sample_size=1_000)
    rng = np.random.default_rng(5)
    for n in range(400):
        first = rng.uniform(0.0, 100.0) * DAY
        orders = int((300 * DAY - first) // (10 * DAY)) + 1
        last = first + (orders - 1) * 10 * DAY
        model.observe(f"c{n}", first, last, orders, 30.0 * orders, now=300 * DAY)
    model.fit(300 * DAY)
    r, alpha, *_ = model.params
    assert max(r, alpha) > 1_000.0  # homogeneous: the shape went far out
    assert r / alpha == pytest.approx(0.1, rel=0.05)


def test_two_workers_samples_merge_into_one_models_sample() -> None:
    data = simulate(600, seed=2)
    one, left, right = (LifetimeModel(sample_size=200) for _ in range(3))
    for n, (first, last, orders, spend) in enumerate(data):
        for model in (one, left if n % 2 else right):
            model.observe(f"c{n}", first, last, orders, spend, now=300 * DAY)
    merged = merge_lifetime(left.delta(), right.delta(), sample_size=200)
    whole = merge_lifetime(LifetimeShare.empty(), one.delta(), sample_size=200)
    assert merged.keys.tolist() == whole.keys.tolist()
    np.testing.assert_array_equal(merged.summaries, whole.summaries)


def test_a_newer_summary_of_a_customer_replaces_the_older() -> None:
    model = LifetimeModel(sample_size=10)
    model.observe("c1", 0.0, 0.0, 1, 10.0, now=DAY)
    model.observe("c1", 0.0, 5 * DAY, 2, 25.0, now=6 * DAY)
    share = model.delta()
    assert len(share.keys) == 1 and share.summaries[0, 2] == 2


@pytest.mark.slow
def test_a_grouped_model_never_fits_alone_the_group_does() -> None:
    from online_models.group.local import LocalGroup

    group = LocalGroup(ScorerConfig(), workers=2, sync_seconds=3_600.0)
    rng = random.Random(3)
    for n in range(3_000):
        customer = f"c{rng.randrange(300)}"
        activity = Activity("purchase", T0 + n * 2_400.0, item_id="a",
                            amount=rng.uniform(5, 100), quantity=1)  # fmt: skip
        group.process(customer, activity, worker=n % 2)
    group.sync()
    params = {scorer.lifetime_model.params for scorer in group.scorers}
    assert len(params) == 1  # the group's fit, on every worker
    assert params.pop() != LifetimeModel().params  # fitted, not the prior


def test_predictions_of_a_lapsed_and_a_regular_customer() -> None:
    model = LifetimeModel()
    model._live = fit_lifetime(  # a population that drops out: a/(a+b) well above zero
        LifetimeShare(
            np.arange(len(sim := simulate(2_000, seed=4)), dtype=np.int64),
            np.array([[f, la, o, s, 300 * DAY] for f, la, o, s in sim]),
        ),
        now=300 * DAY,
    )
    regular = model.predict(first=0.0, last=290 * DAY, orders=20, spend=800.0, now=300 * DAY,
                            horizon_days=90, clv_days=365)  # fmt: skip
    lapsed = model.predict(first=0.0, last=30 * DAY, orders=20, spend=800.0, now=300 * DAY,
                           horizon_days=90, clv_days=365)  # fmt: skip
    assert regular.p_alive > 0.9 > lapsed.p_alive
    assert regular.expected_orders > lapsed.expected_orders
    assert regular.predicted_clv > lapsed.predicted_clv > 0
    assert regular.next_order_expected is not None
    # The next order is due about the mean gap (15 days) after now, for an active customer.
    assert 5 * DAY < regular.next_order_expected - 300 * DAY < 30 * DAY


# --- reasons --------------------------------------------------------------------------------


def trained_scorer(complaints_churn: bool) -> CustomerScorer:
    """A scorer whose churn model learned that silence (and, if asked, complaints) is churn."""
    scorer = CustomerScorer()
    rng = random.Random(5)
    for _ in range(3_000):
        profile = CustomerProfile.new(T0)
        silent = rng.random() < 0.5
        unhappy = complaints_churn and rng.random() < 0.3
        for n in range(rng.randint(2, 8)):
            profile.record(Activity("purchase", T0 + n * 10 * DAY, item_id="a", amount=20.0,
                                    quantity=1))  # fmt: skip
        if unhappy:
            profile.record(Activity("support_ticket", profile.last_seen + DAY, text="x"), -0.9)
        now = profile.last_order_at + (rng.uniform(60, 150) if silent else rng.uniform(1, 8)) * DAY
        scorer.churn_model.learn_one(profile.churn_features(now), silent or unhappy)
    return scorer


def test_a_long_silent_customers_top_reason_is_the_silence() -> None:
    scorer = trained_scorer(complaints_churn=False)
    profile = CustomerProfile.new(T0)
    for n in range(6):
        profile.record(Activity("purchase", T0 + n * 12 * DAY, item_id="a", amount=20.0,
                                quantity=1))  # fmt: skip
    now = profile.last_order_at + 63 * DAY
    features = profile.churn_features(now)
    reasons = churn_reasons(scorer.churn_model.contributions(features), profile, now)
    assert reasons[0].factor in {"log_days_since_order", "overdue_ratio"}
    assert reasons[0].reason == "no order for 63 days; usually orders every 12"
    assert all(reason.contribution > 0 for reason in reasons)


def test_a_complaining_customers_top_reason_is_the_complaint() -> None:
    scorer = trained_scorer(complaints_churn=True)
    profile = CustomerProfile.new(T0)
    for n in range(5):
        profile.record(Activity("purchase", T0 + n * 10 * DAY, item_id="a", amount=20.0,
                                quantity=1))  # fmt: skip
    profile.record(Activity("support_ticket", profile.last_seen + DAY, text="x"), -0.9)
    now = profile.last_seen + 2 * DAY
    contributions = scorer.churn_model.contributions(profile.churn_features(now))
    reasons = churn_reasons(contributions, profile, now)
    assert reasons[0].factor in {"sentiment", "log_tickets"}
    assert "ticket" in reasons[0].reason or "unhappy" in reasons[0].reason
    pulling_down = {name for name, value in contributions.items() if value <= 0}
    assert not pulling_down & {reason.factor for reason in reasons}


def test_the_purchase_rhythm_reason_says_how_likely_no_order_is() -> None:
    # A regular buyer: BG/NBD's half of the blend can raise a very low logistic risk a little
    # (its chance that the customer has stopped buying), and the reason must say that, not
    # read as reassurance.
    profile = CustomerProfile.new(T0)
    for n in range(6):
        profile.record(Activity("purchase", T0 + n * 9 * DAY, item_id="a", amount=20.0,
                                quantity=1))  # fmt: skip
    now = profile.last_order_at + 6 * DAY
    contributions = {"expected_orders": 0.4, "log_orders": -1.0}
    reasons = churn_reasons(
        contributions, profile, now, expected_orders=7.2, horizon_days=90, no_order_chance=0.042
    )
    assert [r.factor for r in reasons] == ["expected_orders"]
    assert reasons[0].reason == (
        "no order for 6 days; usually orders every 9: 4% chance of no order in the next "
        "90 days (7.2 orders expected)"
    )


def test_a_served_score_phrases_the_blend_with_its_chance_of_no_order() -> None:
    scorer = trained_scorer(complaints_churn=False)
    outcome = None
    for n in range(8):
        activity = Activity("purchase", T0 + n * 9 * DAY, item_id="a", amount=30.0, quantity=1)
        outcome = scorer.score("c1", outcome.state if outcome else None, activity)
    assert outcome is not None
    later = scorer.refresh("c1", outcome.state, T0 + 7 * 9 * DAY + 40 * DAY).score
    blend = [r for r in later.churn_reasons if r.factor == "expected_orders"]
    assert blend, later.churn_reasons
    assert "chance of no order in the next 90 days" in blend[0].reason


def test_contributions_add_up_to_the_risk() -> None:
    scorer = trained_scorer(complaints_churn=True)
    profile = CustomerProfile.new(T0)
    profile.record(Activity("purchase", T0, item_id="a", amount=20.0, quantity=1))
    features = profile.churn_features(T0 + 40 * DAY)
    model = scorer.churn_model
    logit = sum(model.contributions(features).values()) + model.weights()["intercept"]
    assert 1 / (1 + math.exp(-logit)) == pytest.approx(model.risk(features), abs=1e-9)


def test_every_score_carries_its_outlook_and_reasons() -> None:
    scorer = trained_scorer(complaints_churn=False)
    outcome = scorer.score("c1", None, Activity("purchase", T0, item_id="a", amount=30.0,
                                                quantity=1))  # fmt: skip
    later = scorer.refresh("c1", outcome.state, T0 + 80 * DAY)
    score = later.score
    assert 0 <= score.p_alive <= 1 and score.expected_orders >= 0 and score.predicted_clv >= 0
    assert score.next_order_expected is not None and score.next_order_expected > T0
    assert score.churn_reasons and score.churn_reasons[0].reason.startswith("no order for 80")
    assert score.value_at_risk == pytest.approx(score.churn_risk * score.predicted_clv)


# --- live AUC by cohort ---------------------------------------------------------------------


def test_the_live_auc_judges_closed_cohorts_of_one_day_together() -> None:
    quality = ChurnQuality(horizon_days=90.0, cohort_days=7)
    rng = random.Random(6)
    served: list[tuple[float, bool]] = []
    for day in range(30):
        for _ in range(50):
            churned = rng.random() < 0.4
            risk = min(max(rng.gauss(0.65 if churned else 0.35, 0.2), 0), 1)
            # Churned labels come a horizon later, "stayed" ones within days.
            label_at = T0 + (day + (90 if churned else rng.uniform(1, 20))) * DAY
            quality.update(risk, churned, served_at=T0 + day * DAY + 3600, now=label_at)
            if 22 <= day <= 28:
                served.append((risk, churned))
        if day == 0:
            assert math.isnan(quality.cohort_roc_auc)  # no day's horizon has closed yet
    # The latest label is day 29's, a horizon on: days up to 28 are whole, 22..28 judged.
    expected = roc_auc(np.array([c for _, c in served]), np.array([r for r, _ in served]))
    assert quality.cohort_roc_auc == pytest.approx(expected)
    assert 0.7 < quality.cohort_roc_auc < 0.95


@pytest.mark.slow
def test_a_fit_made_off_the_event_loop_keeps_the_customers_merged_meanwhile() -> None:
    from online_models.group.local import LocalGroup
    from online_models.group.parts import LIFETIME

    group = LocalGroup(ScorerConfig(), workers=2, sync_seconds=1e9)  # merged by hand below
    rng = random.Random(5)

    def buy(customers: range, start: float) -> None:
        for n in range(2_000):
            activity = Activity("purchase", start + n * 2_400.0, item_id="a",
                                amount=rng.uniform(5, 100), quantity=1)  # fmt: skip
            group.process(f"c{rng.choice(customers)}", activity, worker=n % 2)
        for worker_sync in group.syncs:
            for delta in worker_sync.deltas():
                group.merger.merge(delta)

    buy(range(200), T0)
    due = group.merger.lifetime_fit_due()
    assert due is not None  # a sample, never fitted
    sample, now = due
    buy(range(200, 400), T0 + 60 * DAY)  # merged while the fit runs elsewhere
    fitted = fit_lifetime(sample, now=now)
    group.merger.take_lifetime_fit(fitted)
    share = group.merger.parts[LIFETIME].share
    assert share.params == fitted.params and share.fitted_at == now
    assert len(share.keys) > len(sample.keys)  # the newer customers are still in the sample
    assert group.merger.lifetime_fit_due() is None or group.merger.lifetime_fit_due()[1] > now


@pytest.mark.parametrize("a", [1 - 1.1e-6, 1 + 1e-9, 1 - 5e-5, 1 + 9e-5])
def test_expected_orders_next_to_a_equal_one_agree_between_paths_and_are_continuous(a):
    """BG/NBD's expected orders divide by a - 1: next to 1 both paths agree to 1e-12 and
    the value joins those a little further away (the fit of a simulated world gave
    a = 1 - 1.1e-6, where the formula as written lost 8 digits)."""
    from online_models.value.lifetime import _expected_orders, _expected_orders_many

    args = (3.5, 90.9, a, 93.3)
    x, t_x, age, days, dropped = 6.0, 200.0, 300.0, 90.0, 0.02
    scalar = _expected_orders(*args, x, t_x, age, days, dropped)
    many = _expected_orders_many(
        *args, np.array([x]), np.array([t_x]), np.array([age]), days, np.array([dropped])
    )[0]
    assert scalar == pytest.approx(many, rel=1e-12)
    for further in (1 - 1e-3, 1 + 1e-3):
        away = _expected_orders(3.5, 90.9, further, 93.3, x, t_x, age, days, dropped)
        assert scalar == pytest.approx(away, rel=1e-3)
