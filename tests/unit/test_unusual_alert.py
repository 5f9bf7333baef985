"""The ``unusual_customer`` alert: raised when a customer has been an outlier for as many
scores in a row as a segment change needs, not while they stay one, at most once per segment
cooldown, never when turned off; its details name the features that make them unusual.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from online_models.customer.activity import DAY, Activity
from online_models.scoring.alert_policy import AlertThresholds
from online_models.scoring.engine import ScoringEngine
from online_models.scoring.scorer import CustomerScorer, ScoreOutcome, ScorerConfig
from online_models.scoring.state import CustomerState
from tests.unit.crowds import T0, crowd, shop

CONFIG = ScorerConfig(segments=4, recommender_factors=4)


def background(scorer: CustomerScorer, start: float, seed: int) -> float:
    """An ordinary crowd learned by the segmenter from ``start``; when it ends."""
    data = crowd(seed, ordinary=2_000, extremes=0)
    for x, time in zip(data.points, data.times, strict=True):
        scorer.segmenter.learn_one(x, time - T0 + start)
    return data.times[-1] - T0 + start


def a_regular(until: float) -> CustomerState:
    """Ten baskets of about 16, the last 9 days before ``until``, and seven views: where the
    crowd's regulars are."""
    state = CustomerState.new(until - 100 * DAY)
    for n in range(10):
        when = until - (100 - 10 * n) * DAY + 9 * DAY
        state.profile.record(Activity("purchase", when, item_id="sku-1", amount=15.7, quantity=1))
    for n in range(7):
        state.profile.record(Activity("view", until - 9 * DAY - n * 3600.0, item_id="sku-2"))
    return state


def unusual(outcome: ScoreOutcome) -> list:
    return [alert for alert in outcome.alerts if alert.type == "unusual_customer"]


def buy(scorer: CustomerScorer, state: CustomerState, when: float, amount: float):
    activity = Activity("purchase", when, item_id="sku-1", amount=amount, quantity=1)
    return scorer.score("r", state, activity)


def refund(scorer: CustomerScorer, state: CustomerState, when: float, amount: float):
    return scorer.score("r", state, Activity("return", when, item_id="sku-1", amount=amount))


def whale_for_days(scorer: CustomerScorer, state: CustomerState, when: float) -> list:
    """An order of 1,000,000 at ``when``, then the customer re-scored a day and two days on,
    the crowd going on around them: three scores in a row, as many as a segment change needs
    (``segment_confirmations``)."""
    scores = [buy(scorer, state, when, 1_000_000.0)]
    for day in (1, 2):
        background(scorer, when + (day - 1) * DAY + 60.0, seed=day)
        scores.append(scorer.refresh("r", state, when + day * DAY))
    return scores


def test_the_alert_fires_once_an_outlier_stays_one_and_once_per_cooldown() -> None:
    scorer = CustomerScorer(CONFIG)
    now = background(scorer, T0, seed=1)
    state = a_regular(now)
    settled = scorer.refresh("r", state, now)
    assert not settled.score.segment_outlier and not unusual(settled)

    first, second, third = whale_for_days(scorer, state, now + 3600.0)

    # Flagged at once; alerted on the third outlier score in a row, not before.
    assert all(o.score.segment_outlier for o in (first, second, third))
    assert not unusual(first) and not unusual(second)
    (alert,) = unusual(third)
    assert alert.severity == "info"
    assert alert.details["score"] == pytest.approx(third.score.outlier_score, abs=1e-6)
    # The outlier_score at the fence (median + 2.5 MADs of the log distances).
    assert alert.details["threshold"] == pytest.approx(
        scorer.segmenter.outlier_fence_score(), abs=1e-6
    )
    assert 0.9 < alert.details["threshold"] <= third.score.outlier_score
    assert alert.details["segment"] == third.score.segment
    assert alert.details["case"] == "alone"  # one whale, no group of them
    features = {feature["feature"]: feature for feature in alert.details["features"]}
    assert "basket_spend" in features
    assert features["basket_spend"]["typical"] < 1_000.0
    assert any(reason.startswith("spends ") for reason in alert.details["reasons"])

    still = buy(scorer, state, now + 3 * DAY, 1_000_000.0)  # stays an outlier
    assert still.score.segment_outlier and not unusual(still)
    back = refund(scorer, state, now + 3 * DAY + 3600.0, 2_000_000.0)  # ordinary again
    assert not back.score.segment_outlier
    again = whale_for_days(scorer, state, now + 4 * DAY)
    assert again[-1].score.segment_outlier
    assert not any(unusual(o) for o in again)  # within the 30-day cooldown

    later = background(scorer, now + 31 * DAY, seed=2)
    refund(scorer, state, later, 1_000_000.0)
    after_cooldown = whale_for_days(scorer, state, later + 3600.0)
    assert [len(unusual(o)) for o in after_cooldown] == [0, 0, 1]


def test_a_customer_flagged_by_one_score_only_is_not_alerted() -> None:
    scorer = CustomerScorer(CONFIG)
    now = background(scorer, T0, seed=1)
    state = a_regular(now)
    scorer.refresh("r", state, now)

    whale = buy(scorer, state, now + 3600.0, 1_000_000.0)
    back = refund(scorer, state, now + 7200.0, 1_000_000.0)

    assert whale.score.segment_outlier and not back.score.segment_outlier
    assert not unusual(whale) and not unusual(back)
    assert state.outlier_streak == 0


def test_the_alert_can_be_turned_off_and_waits_for_the_segmenter_to_settle() -> None:
    for config in (
        replace(CONFIG, alerts=AlertThresholds(unusual_customer=False)),
        replace(CONFIG, alerts=AlertThresholds(segment_warmup=10**6)),
    ):
        scorer = CustomerScorer(config)
        now = background(scorer, T0, seed=1)
        state = a_regular(now)
        scorer.refresh("r", state, now)

        scores = whale_for_days(scorer, state, now + 3600.0)

        assert scores[-1].score.segment_outlier and not any(unusual(o) for o in scores)


@pytest.mark.slow
def test_a_bot_becoming_unusual_in_density_segments_is_alerted_once() -> None:
    scorer = CustomerScorer(replace(CONFIG, segment_model="density"))
    engine = ScoringEngine(scorer, {})
    alerts = []
    for customer, activity in shop(seed=5, bot=True):
        for scored in engine.process(customer, activity):
            alerts += [(scored.customer_id, a) for a in unusual(scored.outcome)]

    bots = [alert for customer, alert in alerts if customer == "bot"]
    assert len(bots) == 1
    assert bots[0].details["threshold"] is None
    assert "engagement" in {feature["feature"] for feature in bots[0].details["features"]}
    assert engine.states["bot"].outlier
    assert len(alerts) <= 0.1 * 260  # a few ordinary customers at the edges, not everyone


@pytest.mark.slow
def test_a_bot_viewing_a_thousand_items_a_day_stays_unusual_in_kmeans_segments() -> None:
    """Segments learn one point per customer per day: the bot's thousands of views do not
    drag a centre (and its spread) onto the bot until it looks ordinary."""
    scorer = CustomerScorer(CONFIG)
    engine = ScoringEngine(scorer, {})
    alerts, flood = [], []
    for customer, activity in shop(seed=5, bot=True, bot_days=3.0):
        for scored in engine.process(customer, activity):
            alerts += [(scored.customer_id, a) for a in unusual(scored.outcome)]
            if scored.customer_id == "bot" and activity.time >= T0 + 30.5 * DAY:
                flood.append(scored.outcome.score.segment_outlier)

    assert len(flood) > 1_000 and all(flood)  # from half a day in, every score of the flood
    bots = [alert for customer, alert in alerts if customer == "bot"]
    assert len(bots) == 1
    assert "engagement" in {feature["feature"] for feature in bots[0].details["features"]}
    assert len(alerts) <= 0.1 * 260


def test_the_segments_learn_one_point_per_customer_per_day_however_many_events() -> None:
    scorer = CustomerScorer(CONFIG)
    now = background(scorer, T0, seed=1)
    learned = scorer.segmenter.learned
    state = CustomerState.new(now)
    day = (now // DAY + 1) * DAY

    for n in range(1_000):  # a bot's day: a thousand views
        scorer.score("bot", state, Activity("view", day + 60.0 * n, item_id=f"sku-{n}"))
    scorer.score("bot", state, Activity("view", day + DAY, item_id="sku-1"))  # the next day

    assert scorer.segmenter.learned == learned + 2


def test_the_lines_of_one_basket_are_one_score_of_the_streak() -> None:
    scorer = CustomerScorer(CONFIG)
    now = background(scorer, T0, seed=1)
    state = a_regular(now)
    scorer.refresh("r", state, now)
    when = now + 3600.0

    lines = [buy(scorer, state, when, 400_000.0) for _ in range(3)]  # one basket, three lines

    assert all(o.score.segment_outlier for o in lines)
    assert not any(unusual(o) for o in lines) and state.outlier_streak == 1
    background(scorer, when + 60.0, seed=1)
    assert not unusual(scorer.refresh("r", state, when + DAY))
    background(scorer, when + DAY + 60.0, seed=2)
    assert len(unusual(scorer.refresh("r", state, when + 2 * DAY))) == 1
