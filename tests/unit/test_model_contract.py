"""The contract every online model keeps: copies predict alike, odd inputs never crash.

A worker snapshots, restores and hands models around; a copy (``copy.deepcopy`` or a pickle
round trip) must answer exactly as the live model would have, and a customer the model never
saw, or a feature dict missing keys, must give an answer rather than an exception.
"""

from __future__ import annotations

import copy
import inspect
import math
import pickle
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from online_models.churn.model import ChurnModel
from online_models.customer.activity import DAY, Activity
from online_models.customer.profile import CustomerProfile
from online_models.recommend.content import ContentModel
from online_models.recommend.recommender import Recommender
from online_models.scoring.alert_policy import AlertThresholds
from online_models.scoring.engine import ScoringEngine
from online_models.scoring.scorer import CustomerScorer, ScorerConfig
from online_models.segments.density import UNUSUAL, DensitySegmenter
from online_models.segments.kmeans import Segmenter
from online_models.sentiment import SentimentModel
from online_models.value.ranks import ValueModel
from online_models.value.spend import SPEND_FEATURES, SpendModel

T0 = 1_735_689_600.0


def _activities(rng: random.Random, customer: int, start: float) -> list[Activity]:
    items = [f"sku-{rng.randrange(40)}" for _ in range(6)]
    out = []
    t = start
    for n, item in enumerate(items):
        out.append(Activity("view", t, item_id=item))
        if n % 2 == 0:
            out.append(
                Activity("purchase", t + 60, item_id=item, amount=5.0 + customer, quantity=1)
            )
        t += rng.uniform(1, 20) * DAY
    out.append(Activity("feedback", t, text="Slow delivery, quite disappointed.", rating=2))
    return out


def churn_features(rng: random.Random) -> dict[str, float]:
    profile = CustomerProfile.new(T0)
    for activity in _activities(rng, rng.randrange(10), T0):
        profile.record(activity, 0.1 if activity.text else None)
    return profile.churn_features(T0 + rng.uniform(0, 200) * DAY)


def segment_features(rng: random.Random) -> dict[str, float]:
    profile = CustomerProfile.new(T0)
    for activity in _activities(rng, rng.randrange(10), T0):
        profile.record(activity)
    return profile.segment_features(T0 + rng.uniform(0, 300) * DAY)


@dataclass
class Case:
    """How to build a trained model of one kind and ask it questions."""

    build: Callable[[], Any]
    predict: Callable[[Any], Any]  # same questions every time; may teach the model (scorer)
    odd_inputs: Callable[[Any], Any]  # unseen customers, missing features
    hyperparameters: dict[str, Any]


def build_churn() -> ChurnModel:
    rng = random.Random(1)
    model = ChurnModel()
    for _ in range(300):
        x = churn_features(rng)
        model.learn_one(x, x["log_days_since_order"] > 3.5)
    return model


def predict_churn(model: ChurnModel) -> list[Any]:
    rng = random.Random(2)
    probes = [churn_features(rng) for _ in range(20)]
    return [model.predict_proba_one(x) for x in probes] + [model.explain_one(probes[0])]


def odd_churn(model: ChurnModel) -> list[Any]:
    return [
        model.predict_proba_one({}),
        model.predict_proba_one({"log_orders": 1.0}),
        model.predict_proba_one({"never_seen_feature": 3.0}),
        *model.explain_one({}),
    ]


def build_segmenter() -> Segmenter:
    rng = random.Random(1)
    model = Segmenter()
    for _ in range(600):
        model.learn_one(segment_features(rng))
    return model


def predict_segmenter(model: Segmenter) -> list[Any]:
    rng = random.Random(2)
    return [model.predict_one(segment_features(rng)) for _ in range(50)] + [model.describe_all()]


def odd_segmenter(model: Segmenter) -> list[int]:
    segments = [
        model.predict_one({}),
        model.predict_one({"monetary": 0.5}),
        model.predict_one({"recency": 1.2, "frequency": 0.1}),
    ]
    assert all(0 <= s < model.n_segments for s in segments)
    return segments


def build_density() -> DensitySegmenter:
    rng = random.Random(1)
    model = DensitySegmenter(recluster_every=50)
    for n in range(600):
        model.learn_one(segment_features(rng), n * 60.0)
    return model


def predict_density(model: DensitySegmenter) -> list[Any]:
    rng = random.Random(2)
    return [model.place_one(segment_features(rng)) for _ in range(50)] + [model.describe_all()]


def odd_density(model: DensitySegmenter) -> list[int]:
    segments = [
        model.predict_one({}),
        model.predict_one({"monetary": 0.5}),
        model.predict_one({"recency": 1.2, "frequency": 0.1}),
        model.predict_one({"engagement": 1.5, "ordered": 1.0}),
    ]
    assert all(s == UNUSUAL or model.current(s) for s in segments)
    return segments


def build_value() -> ValueModel:
    rng = random.Random(1)
    model = ValueModel()
    for _ in range(500):
        model.observe(None, None, rng.uniform(0, 2_000), rng.randrange(0, 30))
    return model


def predict_value(model: ValueModel) -> list[float]:
    return [
        model.value(m, o, d)
        for m in (0.0, 10.0, 500.0, 5e6)
        for o in (0, 1, 7, 99)
        for d in (0.0, 45.0)
    ]


def odd_value(model: ValueModel) -> list[float]:
    values = [
        ValueModel().value(100.0, 3, 0.0),
        model.value(1e12, 10**6, 0.0),
        model.value(0.0, 1, 1e6),
    ]
    assert all(0.0 <= v <= 1.0 for v in values)
    return values


def build_spend() -> SpendModel:
    rng = random.Random(4)
    model = SpendModel(warmup_labels=10)
    for n in range(300):
        spent, forecast = rng.uniform(0, 5_000), rng.uniform(0, 800)
        x = {"log_spend_to_date": math.log1p(spent), "log_bgnbd_value": math.log1p(forecast)}
        # As the stream learns: with the forecast the model served when the example was taken.
        model.learn_one(x, rng.uniform(0, 2 * forecast), T0 + n * DAY, model.unscaled_one(x))
    return model


def predict_spend(model: SpendModel) -> list[float]:
    return [
        model.predict_one({"log_spend_to_date": s, "log_bgnbd_value": f})
        for s in (0.0, 3.0, 9.0)
        for f in (0.0, 2.0, 7.0)
    ]


def odd_spend(model: SpendModel) -> list[float]:
    forecasts = [
        SpendModel().predict_one(dict.fromkeys(SPEND_FEATURES, 1.0)),  # no labels: BG/NBD's
        model.predict_one({}),
        model.predict_one({"log_spend_to_date": 40.0, "log_bgnbd_value": 0.0}),
    ]
    assert all(f >= 0.0 and math.isfinite(f) for f in forecasts)
    return forecasts


def build_sentiment() -> SentimentModel:
    return SentimentModel(rating_weight=0.4)


def predict_sentiment(model: SentimentModel) -> list[float | None]:
    texts = ["Great stuff!", "Awful, never again.", "It arrived.", None]
    return [model.predict_one(t, r) for t in texts for r in (None, 1, 5)]


def odd_sentiment(model: SentimentModel) -> list[float | None]:
    return [model.predict_one(None), model.predict_one(""), model.predict_one("qwxz zzyv")]


def build_recommender() -> Recommender:
    rng = random.Random(1)
    model = Recommender(n_factors=8, seed=3)
    for n in range(1_500):
        user = f"user-{rng.randrange(60)}"
        model.learn_one(
            user,
            f"sku-{int(rng.paretovariate(1.2)) % 80}",
            time=T0 + n * 3_600.0,
            weight=rng.choice([1.0, 0.5, 0.2]),
            basket=[f"sku-{rng.randrange(80)}"],
        )
    return model


def build_content() -> ContentModel:
    rng = random.Random(2)
    words = ["red", "blue", "lamp", "mug", "tea", "heart", "candle", "glass", "wooden", "box"]
    model = ContentModel(dimensions=32)
    for n in range(120):
        model.upsert(
            f"sku-{n}",
            {
                "name": " ".join(rng.sample(words, 3)),
                "category": rng.choice(["home/lighting", "home/kitchen", "gifts"]),
                "price": rng.uniform(1, 50),
                "available": n % 9 != 0,
            },
        )
    model.remove("sku-5")
    return model


def predict_content(model: ContentModel) -> list[list[float]]:
    items = [f"sku-{n}" for n in range(0, 120, 3)]
    scores = model.scores([["sku-1", "sku-2"], ["sku-7"], []], items)
    return [*scores.round(6).tolist(), model.allowed(items).astype(float).tolist()]


def odd_content(model: ContentModel) -> list[list[float]]:
    scores = model.scores([["never-seen"], [], ["sku-5"]], ["sku-1", "unknown", "sku-5"])
    assert ((scores >= 0) & (scores <= 1)).all()
    model.upsert("odd", {"name": "!!! ???", "price": 0, "properties": {"a": None}})
    return [*scores.tolist(), model.allowed(["odd", "unknown", "sku-5"]).astype(float).tolist()]


def predict_recommender(model: Recommender) -> list[list[str]]:
    return [
        model.rank(f"user-{u}", 10, exclude={"sku-1"}, recent=["sku-2"]) for u in range(0, 60, 7)
    ]


def odd_recommender(model: Recommender) -> list[list[str]]:
    users = model.n_users
    stranger = model.rank("never-seen-user", 10)
    assert len(stranger) == 10  # falls back to popularity
    assert model.n_users == users  # asking did not create the user
    return [stranger, model.rank("never-seen-user", 5, recent=["unknown-sku"], exclude={"x"})]


SCORER_CONFIG = ScorerConfig(
    churn_horizon_days=30.0,
    segments=4,
    recommender_factors=8,
    alerts=AlertThresholds(churn_min_labels=5),
)


def build_scorer_world() -> dict[str, Any]:
    """A scorer that saw 40 customers through the engine, and the customer table it keeps.

    They are copied and pickled together, like a snapshot: the states travel with the model.
    """
    rng = random.Random(1)
    engine = ScoringEngine(CustomerScorer(SCORER_CONFIG), {})
    stream = sorted(
        (
            (a, f"c{c}")
            for c in range(40)
            for a in _activities(rng, c, T0 + rng.uniform(0, 60) * DAY)
        ),
        key=lambda pair: pair[0].time,
    )
    for activity, customer in stream:
        engine.process(customer, activity)
    assert engine.scorer.churn_model.labels_learned > 0
    return {"scorer": engine.scorer, "states": engine.states}


def predict_scorer(world: dict[str, Any]) -> list[Any]:
    """Score the same next events; each is scored on a copy of the customer's state."""
    later = T0 + 200 * DAY
    events = [
        ("c3", Activity("purchase", later, item_id="sku-5", amount=30.0, quantity=2)),
        ("c7", Activity("support_ticket", later + 60, text="Broken again, terrible support!")),
        ("c11", Activity("view", later + 120, item_id="sku-1")),
    ]
    scorer = world["scorer"]
    results = []
    for customer, activity in events:
        state = copy.deepcopy(world["states"][customer])
        outcome = scorer.score(customer, state, activity)
        recommendations = scorer.recommend(customer, outcome.state)
        results.append((outcome.score, outcome.alerts, outcome.labels, outcome.state))
        results.append(recommendations)
    silent = scorer.refresh("c1", copy.deepcopy(world["states"]["c1"]), later + 180)
    results.append((silent.score, silent.alerts, silent.labels, silent.state, silent.changed))
    return results


def odd_scorer(world: dict[str, Any]) -> list[Any]:
    scorer = world["scorer"]
    later = T0 + 300 * DAY
    outcomes = [
        scorer.score("newcomer", None, Activity("view", later, item_id="sku-never-seen")),
        scorer.score("newcomer-2", None, Activity("return", later, item_id="sku-9", amount=50.0)),
        scorer.score("newcomer-3", None, Activity("feedback", later, rating=1)),
        scorer.score("newcomer-4", None, Activity("subscription_cancel", later)),
        scorer.refresh("c1", copy.deepcopy(world["states"]["c1"]), later),
        # Asked about a moment before the customer's latest event: scored as of that event.
        scorer.refresh("c2", copy.deepcopy(world["states"]["c2"]), T0),
    ]
    for outcome in outcomes:
        assert 0.0 <= outcome.score.churn_risk <= 1.0
        assert 0.0 <= outcome.score.value <= 1.0
        assert outcome.score.monetary >= 0.0
        assert outcome.score.as_of >= outcome.score.event_time
    assert len(scorer.recommend("never-seen", outcomes[0].state)) == SCORER_CONFIG.top_k
    return [o.score for o in outcomes]


CASES = {
    "ChurnModel": Case(
        build_churn,
        predict_churn,
        odd_churn,
        {"learning_rate": 0.02, "l2": 0.01, "kind": "hoeffding_tree"},
    ),
    "Segmenter": Case(
        build_segmenter,
        predict_segmenter,
        odd_segmenter,
        {
            "n_segments": 4,
            "halflife_days": 7.0,
            "min_seed_distance": 0.2,
            "outlier_mads": 3.0,
            "group_share": 0.01,
            "group_mads": 2.0,
            "group_tightness": 0.4,
        },
    ),
    "DensitySegmenter": Case(
        build_density,
        predict_density,
        odd_density,
        {
            "clustering_threshold": 0.25,
            "halflife_days": 7.0,
            "intersection_factor": 0.4,
            "minimum_weight": 2.0,
            "minimum_weight_share": 0.01,
            "cleanup_days": 2.0,
            "max_micro_clusters": 256,
            "recluster_every": 32,
        },
    ),
    "ValueModel": Case(build_value, predict_value, odd_value, {"recency_halflife_days": 14.0}),
    "SpendModel": Case(
        build_spend,
        predict_spend,
        odd_spend,
        {"half_life_days": 90.0, "ridge": 5.0, "warmup_labels": 50},
    ),
    "SentimentModel": Case(
        build_sentiment, predict_sentiment, odd_sentiment, {"rating_weight": 0.3}
    ),
    "Recommender": Case(
        build_recommender,
        predict_recommender,
        odd_recommender,
        {
            "n_factors": 4,
            "learning_rate": 0.1,
            "l2": 0.01,
            "negative_samples": 2,
            "popularity_halflife_days": 7.0,
            "co_purchase_neighbors": 5,
            "cf_weight": 0.5,
            "popularity_weight": 0.1,
            "co_purchase_weight": 0.2,
            "content_weight": 0.7,
            "new_item_slots": 2,
            "seed": 9,
            "buckets": 8,
        },
    ),
    "ContentModel": Case(
        build_content,
        predict_content,
        odd_content,
        {"dimensions": 16, "catalogue_only": False},
    ),
    "CustomerScorer": Case(
        build_scorer_world, predict_scorer, odd_scorer, {"config": SCORER_CONFIG}
    ),
}
MODEL_CLASSES = {
    "ChurnModel": ChurnModel,
    "Segmenter": Segmenter,
    "DensitySegmenter": DensitySegmenter,
    "ValueModel": ValueModel,
    "SpendModel": SpendModel,
    "SentimentModel": SentimentModel,
    "Recommender": Recommender,
    "ContentModel": ContentModel,
    "CustomerScorer": CustomerScorer,
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request) -> tuple[str, Case]:
    return request.param, CASES[request.param]


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_predicts_exactly_what_the_live_model_does(case, how):
    _, spec = case
    live = spec.build()
    if how == "deepcopy":
        clone = copy.deepcopy(live)
    else:
        clone = pickle.loads(pickle.dumps(live, protocol=pickle.HIGHEST_PROTOCOL))

    expected = spec.predict(live)

    assert spec.predict(clone) == expected


def test_a_copy_is_independent_of_the_live_model(case):
    _, spec = case
    live = spec.build()
    clone = copy.deepcopy(live)
    reference = copy.deepcopy(live)

    spec.predict(live)  # may teach the live model (the scorer learns every event)
    spec.odd_inputs(live)

    assert spec.predict(clone) == spec.predict(reference)


def test_unseen_or_missing_features_do_not_crash(case):
    _, spec = case
    model = spec.build()

    answers = spec.odd_inputs(model)

    assert answers is not None


def test_constructor_hyperparameters_are_kept_under_their_names(case):
    name, spec = case
    cls = MODEL_CLASSES[name]
    parameters = set(inspect.signature(cls).parameters)

    model = cls(**spec.hyperparameters)

    assert parameters == set(spec.hyperparameters), "every hyperparameter is checked"
    for parameter, value in spec.hyperparameters.items():
        assert getattr(model, parameter) == value


def test_default_hyperparameters_are_kept_too(case):
    name, _ = case
    cls = MODEL_CLASSES[name]

    model = cls()

    for parameter in inspect.signature(cls).parameters.values():
        if parameter.default is not None:
            assert getattr(model, parameter.name) == parameter.default


@pytest.mark.parametrize("extreme", [1e9, -1e9, 1e300, -1e300, 0.0])
def test_churn_probabilities_stay_in_the_unit_interval(extreme):
    model = build_churn()
    names = list(churn_features(random.Random(0)))

    everything = model.predict_proba_one(dict.fromkeys(names, extreme))
    one_at_a_time = [model.predict_proba_one({name: extreme}) for name in names]
    mixed = model.predict_proba_one({n: extreme * (-1) ** i for i, n in enumerate(names)})

    for p in [everything, mixed, *one_at_a_time]:
        assert set(p) == {False, True}
        assert 0.0 <= p[True] <= 1.0
        assert p[False] + p[True] == pytest.approx(1.0)


def test_churn_model_stays_sane_after_learning_extreme_examples():
    model = build_churn()
    names = list(churn_features(random.Random(0)))

    model.learn_one(dict.fromkeys(names, 1e9), True)
    model.learn_one(dict.fromkeys(names, -1e9), False)

    for x in (churn_features(random.Random(5)), {}, dict.fromkeys(names, 1e9)):
        p = model.predict_proba_one(x)
        assert 0.0 <= p[True] <= 1.0
        assert p[False] + p[True] == pytest.approx(1.0)
        assert model.predict_one(x) == (p[True] > 0.5)
