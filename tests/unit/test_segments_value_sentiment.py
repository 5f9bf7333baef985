"""Unit tests of the segmenter, the value model and the sentiment model on synthetic data."""

from __future__ import annotations

import pickle
import random
from itertools import pairwise

import pytest

from online_models.segments.kmeans import Segmenter
from online_models.sentiment import SentimentModel
from online_models.value.ranks import ValueModel

# Three kinds of customer on the segment features' fixed scales.
BLOBS = {
    "loyal": {
        "ordered": 1.0,
        "recency": 0.02,
        "frequency": 0.9,
        "monetary": 0.85,
        "engagement": 0.6,
    },
    "casual": {
        "ordered": 1.0,
        "recency": 0.1,
        "frequency": 0.3,
        "monetary": 0.3,
        "engagement": 0.2,
    },
    "browser": {
        "ordered": 0.0,
        "recency": 0.8,
        "frequency": 0.0,
        "monetary": 0.0,
        "engagement": 0.5,
    },
}


def blob_point(rng: random.Random, blob: str, spread: float = 0.02) -> dict[str, float]:
    return {k: max(v + rng.gauss(0.0, spread), 0.0) for k, v in BLOBS[blob].items()}


def blob_stream(rng: random.Random, n: int) -> list[tuple[str, dict[str, float]]]:
    names = list(BLOBS)
    return [(blob, blob_point(rng, blob)) for blob in (rng.choice(names) for _ in range(n))]


@pytest.fixture
def trained_segmenter() -> tuple[Segmenter, random.Random]:
    rng = random.Random(3)
    segmenter = Segmenter(n_segments=3)
    for _, x in blob_stream(rng, 300):
        segmenter.learn_one(x)
    return segmenter, rng


def test_segmenter_separates_well_separated_blobs(trained_segmenter):
    segmenter, rng = trained_segmenter

    predicted = {
        blob: {segmenter.predict_one(blob_point(rng, blob)) for _ in range(50)} for blob in BLOBS
    }

    assert all(len(segments) == 1 for segments in predicted.values())
    assert len(set.union(*predicted.values())) == 3


def test_segment_ids_stay_put_as_more_customers_arrive(trained_segmenter):
    segmenter, rng = trained_segmenter
    probes = {blob: dict(center) for blob, center in BLOBS.items()}
    before = {blob: segmenter.predict_one(x) for blob, x in probes.items()}

    for _, x in blob_stream(rng, 2_000):
        segmenter.learn_one(x)

    assert {blob: segmenter.predict_one(x) for blob, x in probes.items()} == before


def test_learn_predict_agrees_with_the_blob(trained_segmenter):
    segmenter, rng = trained_segmenter
    by_blob = {blob: segmenter.predict_one(center) for blob, center in BLOBS.items()}

    assert all(segmenter.learn_predict_one(x) == by_blob[blob] for blob, x in blob_stream(rng, 200))


def test_segments_get_distinct_crm_names(trained_segmenter):
    segmenter, _ = trained_segmenter

    names = segmenter.describe_all()

    assert len(names) == 3
    assert len(set(names.values())) == 3
    assert names[segmenter.predict_one(BLOBS["loyal"])] == "loyal big spenders"
    assert names[segmenter.predict_one(BLOBS["casual"])] == "occasional buyers"
    assert names[segmenter.predict_one(BLOBS["browser"])] == "inactive browsers"
    assert segmenter.describe(segmenter.predict_one(BLOBS["loyal"])) == "loyal big spenders"


def test_lapsing_buyers_are_named_by_spend():
    segmenter = Segmenter(n_segments=4)
    for x in (
        {**BLOBS["loyal"]},
        {**BLOBS["casual"]},
        {**BLOBS["loyal"], "recency": 0.5},
        {**BLOBS["casual"], "recency": 0.5},
    ):
        segmenter.learn_one(x)

    names = segmenter.describe_all()

    assert sorted(names.values()) == [
        "lapsing",
        "lapsing big spenders",
        "loyal big spenders",
        "occasional buyers",
    ]


def test_buyers_silent_for_many_months_are_hibernating_then_lost():
    segmenter = Segmenter(n_segments=4)
    for x in (
        {**BLOBS["loyal"]},
        {**BLOBS["loyal"], "recency": 0.5},
        {**BLOBS["casual"], "recency": 0.8},
        {**BLOBS["casual"], "recency": 1.3},
    ):
        segmenter.learn_one(x)

    names = segmenter.describe_all()

    assert sorted(names.values()) == [
        "hibernating",
        "lapsing big spenders",
        "lost",
        "loyal big spenders",
    ]


def test_an_untrained_segmenter_answers_segment_zero():
    segmenter = Segmenter()

    assert segmenter.predict_one(BLOBS["loyal"]) == 0
    assert segmenter.describe_all() == {}
    assert segmenter.describe(0) == "new customers"


def customer_totals(rng: random.Random, n: int) -> list[tuple[float, int]]:
    """Order counts and spend of ``n`` customers; spend grows with orders."""
    totals = []
    for _ in range(n):
        orders = 1 + int(rng.paretovariate(1.5))
        totals.append((sum(rng.uniform(5.0, 80.0) for _ in range(orders)), orders))
    return totals


def test_the_top_spender_is_top_value_and_the_median_one_is_not():
    rng = random.Random(11)
    totals = customer_totals(rng, 1_000)
    model = ValueModel()
    for monetary, orders in totals:
        model.observe(None, None, monetary, orders)
    ranked = sorted(totals)

    top = model.value(*ranked[-1], days_since_order=0.0)
    median = model.value(*ranked[len(ranked) // 2], days_since_order=0.0)

    assert model.customers == 1_000
    assert top > 0.8
    assert median < top
    assert 0.0 <= median <= 1.0


def test_value_decays_with_days_since_the_last_order():
    model = ValueModel(recency_halflife_days=30.0)
    for spend in (10.0, 100.0, 1_000.0):
        model.observe(None, None, spend, 3)

    values = [model.value(100.0, 3, days_since_order=d) for d in (0.0, 30.0, 90.0, 720.0)]

    assert values == sorted(values, reverse=True)
    assert values[0] - values[1] == pytest.approx(0.1)  # recency weight 0.2, halved
    assert values[-1] > 0.0  # spend and frequency still count


def test_a_customer_without_orders_has_no_value():
    model = ValueModel()
    model.observe(None, None, 0.0, 0)
    model.observe(None, None, 50.0, 2)

    assert model.value(0.0, 0, days_since_order=0.0) == 0.0
    # A refund-only history: money moved but no basket.
    assert model.value(25.0, 0, days_since_order=0.0) == 0.0


def test_moving_a_customers_totals_does_not_double_count():
    rng = random.Random(5)
    journeys = [[(0.0, 0)] for _ in range(200)]
    for journey in journeys:
        for _ in range(rng.randrange(1, 8)):
            monetary, orders = journey[-1]
            journey.append((monetary + rng.uniform(1.0, 200.0), orders + 1))
    # A few refunds move spend down again.
    for journey in journeys[:20]:
        monetary, orders = journey[-1]
        journey.append((monetary / 2, orders))

    moved = ValueModel()
    for journey in journeys:
        moved.observe(None, None, *journey[0])
        for old, new in pairwise(journey):
            moved.observe(old[0], old[1], *new)
    direct = ValueModel()
    for journey in journeys:
        direct.observe(None, None, *journey[-1])

    assert moved.customers == direct.customers == 200
    for monetary, orders in (journey[-1] for journey in journeys):
        assert moved.value(monetary, orders, 3.0) == direct.value(monetary, orders, 3.0)


def test_a_lone_customer_sits_mid_range_not_at_the_top():
    model = ValueModel()
    model.observe(None, None, 80.0, 2)

    assert model.value(80.0, 2, days_since_order=0.0) == pytest.approx(0.5 * 0.5 + 0.3 * 0.5 + 0.2)


@pytest.fixture(scope="module")
def sentiment() -> SentimentModel:
    return SentimentModel()


def test_clearly_negative_text_is_negative(sentiment):
    tone = sentiment.predict_one(
        "Terrible experience, the item broke after a day. I want a refund!"
    )

    assert tone < -0.3


def test_clearly_positive_text_is_positive(sentiment):
    tone = sentiment.predict_one("Excellent quality and super fast delivery, thank you so much!")

    assert tone > 0.3


def test_the_star_rating_blends_in(sentiment):
    text = "The parcel arrived on Tuesday."
    neutral = sentiment.predict_one(text)

    assert sentiment.predict_one(text, rating=5) > neutral + 0.3
    assert sentiment.predict_one(text, rating=1) < neutral - 0.3
    assert sentiment.predict_one(text, rating=3) == pytest.approx(0.5 * neutral)
    assert sentiment.predict_one(None, rating=1) == -1.0
    assert sentiment.predict_one("   ", rating=5) == 1.0


def test_a_bad_rating_pulls_down_glowing_words(sentiment):
    words = "Great, love it, wonderful!"

    assert sentiment.predict_one(words, rating=1) < sentiment.predict_one(words)


@pytest.mark.parametrize("text", [None, "", "   \n\t"])
def test_no_text_and_no_rating_gives_no_sentiment(sentiment, text):
    assert sentiment.predict_one(text) is None


def test_very_long_text_is_handled(sentiment):
    text = "The delivery was awful and late. " * 32_000  # about 1 MB

    tone = sentiment.predict_one(text)

    assert tone is not None
    assert -1.0 <= tone < 0.0


def test_sentiment_is_always_in_range(sentiment):
    texts = ["!!!!", "NO NO NO HATE HATE", "love love love :) :) :)", "12345", "ü ñ 漢字 🙂"]

    for text in texts:
        for rating in (None, 1, 2, 3, 4, 5):
            tone = sentiment.predict_one(text, rating)
            assert tone is None or -1.0 <= tone <= 1.0


def test_pickle_keeps_rating_weight_and_predictions():
    model = SentimentModel(rating_weight=0.8)

    clone = pickle.loads(pickle.dumps(model))

    assert clone.rating_weight == 0.8
    text = "Not bad at all, decent service."
    assert clone.predict_one(text, rating=2) == model.predict_one(text, rating=2)
    assert len(pickle.dumps(model)) < 1_000  # the lexicon is not copied along


def test_centres_learn_before_every_segment_is_seeded():
    segmenter = Segmenter(n_segments=5)
    segmenter.learn_one({"monetary": 0.0, "frequency": 0.0})
    for _ in range(20):
        segmenter.learn_one({"monetary": 0.05, "frequency": 0.05})
    assert not segmenter.ready
    # The centre is the mean of the points it won, its seed included.
    assert segmenter.centers()[0]["monetary"] == pytest.approx(20 * 0.05 / 21)
    before = segmenter.centers()
    segmenter.predict_one({"unknown_feature": 3.0})
    assert segmenter.centers() == before  # predicting never changes the model
