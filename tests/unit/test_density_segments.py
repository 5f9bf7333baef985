"""Density segments (``CRM_SEGMENT_MODEL=density``): dense regions with stable ids, and the
customers in none of them, who are ``unusual``.
"""

from __future__ import annotations

import math
import random

import numpy as np
import orjson
import pytest
from river import cluster

from online_models.customer.activity import DAY
from online_models.customer.profile import SEGMENT_FEATURES
from online_models.scoring import batch_scoring
from online_models.scoring.engine import ScoringEngine
from online_models.scoring.scorer import CustomerScorer, ScorerConfig
from online_models.segments.density import UNUSUAL, DensitySegmenter
from online_models.segments.regions import NO_REGION, Registry, recluster
from schemas import decode_event
from streams.commands.simulator import SimulationConfig, generate_events
from streams.convert import activity_of
from tests.unit.crowds import ORDINARY, T0, crowd, shop

DENSITY = ScorerConfig(segment_model="density", recommender_factors=4)


def point(values: tuple[float, ...], rng: random.Random | None = None, spread: float = 0.0):
    noise = (lambda: rng.gauss(0.0, spread)) if rng else (lambda: 0.0)
    return {name: max(v + noise(), 0.0) for name, v in zip(SEGMENT_FEATURES, values, strict=True)}


def test_extreme_customers_are_unusual_and_most_ordinary_ones_are_not() -> None:
    data = crowd(seed=1)
    segmenter = DensitySegmenter()

    placements = [
        segmenter.learn_place_one(x, time) for x, time in zip(data.points, data.times, strict=True)
    ]

    warm = len(placements) // 4
    extremes = [p for p, e in zip(placements, data.extreme, strict=True) if e]
    ordinary = [p for p, e in zip(placements[warm:], data.extreme[warm:], strict=True) if not e]
    assert all(p.outlier and p.segment == UNUSUAL for p in extremes)
    assert all(p.outlier_score >= 0.99 for p in extremes)
    assert sum(p.outlier for p in ordinary) <= 0.05 * len(ordinary)
    assert segmenter.describe(UNUSUAL) == "unusual"
    # Each ordinary group is a dense region of its own, named like k-means's segments.
    regions = {g: segmenter.predict_one(point(c)) for g, c in ORDINARY.items()}
    assert len(set(regions.values())) == len(ORDINARY) and UNUSUAL not in regions.values()
    assert segmenter.describe(regions["browsers"]) in {"browsers", "inactive browsers"}
    assert segmenter.describe(regions["regulars"]) == "loyal big spenders"


def test_the_learning_step_is_rivers_dbstream() -> None:
    """With time counted in points, as River counts it, the micro-clusters, their weights and
    shared densities are River's (cleanup off on both sides)."""
    fading = 0.01
    river = cluster.DBSTREAM(clustering_threshold=0.2, fading_factor=fading, cleanup_interval=10**9)
    ours = DensitySegmenter(
        clustering_threshold=0.2, halflife_days=1 / (fading * DAY), cleanup_days=1e9
    )
    rng = random.Random(2)
    groups = list(ORDINARY.values())
    steps = 800
    for t in range(steps):
        x = point(groups[rng.randrange(len(groups))], rng, 0.08)
        river.learn_one(x)
        ours.learn_one(x, float(t))

    share = ours.delta()  # everything it learned, as of its latest point
    last = steps - 1
    micro = list(river.micro_clusters.values())
    assert len(micro) == len(share.weights) > 10
    np.testing.assert_allclose(
        share.centres, [[mc.center[n] for n in SEGMENT_FEATURES] for mc in micro], atol=1e-12
    )
    np.testing.assert_allclose(
        share.weights, [mc.weight * 2 ** (-fading * (last - mc.last_update)) for mc in micro]
    )
    ids = list(river.micro_clusters)
    densities = {
        (ids.index(i), ids.index(j)): value * 2 ** (-fading * (last - river.s_t[i][j]))
        for i, row in river.s.items()
        for j, value in row.items()
    }
    assert {tuple(p) for p in share.pairs.tolist()} == set(densities)
    for pair, value in zip(share.pairs.tolist(), share.shared.tolist(), strict=True):
        assert value == pytest.approx(densities[tuple(pair)], rel=1e-12)


def blobs_stream(segmenter: DensitySegmenter, groups, start: float, points: int, seed: int):
    rng = random.Random(seed)
    for n in range(points):
        segmenter.learn_one(point(groups[n % len(groups)], rng, 0.04), start + 20.0 * n)
    return start + 20.0 * points


def test_a_region_keeps_its_id_and_a_new_dense_region_gets_a_new_one() -> None:
    segmenter = DensitySegmenter(recluster_every=64)
    first = [ORDINARY["regulars"], ORDINARY["browsers"]]
    now = blobs_stream(segmenter, first, T0, 2_000, seed=3)
    ids = [segmenter.predict_one(point(g)) for g in first]
    seen = {ids[0], ids[1]}
    assert UNUSUAL not in ids and ids[0] != ids[1]

    for day in range(5):  # five days of updates: every region reclustered many times
        now = blobs_stream(segmenter, first, now, 2_000, seed=10 + day)
        assert [segmenter.predict_one(point(g)) for g in first] == ids
    lapsing = ORDINARY["lapsing"]
    assert segmenter.predict_one(point(lapsing)) == UNUSUAL  # nobody there yet
    blobs_stream(segmenter, [*first, lapsing], now, 3_000, seed=20)

    new = segmenter.predict_one(point(lapsing))
    assert new not in (*seen, UNUSUAL) and new > max(seen)
    assert [segmenter.predict_one(point(g)) for g in first] == ids
    assert segmenter.current(new) and segmenter.describe(new) == "lapsing"


# --- merges and splits: the registry's rules, on micro-clusters built by hand ----------------

CENTRES = np.array(
    [[1, 0.1, 0.5, 0.5, 0.3], [1, 0.1, 0.5, 0.65, 0.3], [1, 0.1, 0.5, 0.8, 0.3],
     [1, 0.1, 0.5, 0.95, 0.3]], dtype=float,
)  # fmt: skip
WEIGHTS = np.array([40.0, 40.0, 10.0, 10.0])


def regions(shared_12: float, labels: np.ndarray, registry: Registry):
    """Micro-clusters 0-1 and 2-3 dense together; 1-2 as dense as ``shared_12`` says."""
    pairs = np.array([[0, 1], [1, 2], [2, 3]])
    shared = np.array([30.0, shared_12, 8.0])
    return recluster(
        CENTRES, WEIGHTS, pairs, shared, labels, registry, intersection_factor=0.3,
        minimum_weight=1.0, minimum_weight_share=0.0, match_radius=0.4,
    )  # fmt: skip


def test_merged_regions_keep_the_heavier_id_and_a_split_gives_it_back() -> None:
    apart, registry = regions(0.0, np.full(4, NO_REGION), Registry.empty(5))
    assert apart.tolist() == [0, 0, 1, 1]

    merged, registry = regions(20.0, apart, registry)  # shared density joins 1 and 2: a merge

    assert merged.tolist() == [0, 0, 0, 0]  # region 0 carried more weight: it survives
    assert registry.current(np.array([1])).tolist() == [0]  # 1 retired into 0
    assert registry.successors[registry.ids == 1].tolist() == [0]

    split, registry = regions(0.0, merged, registry)  # and apart again: a split

    # The part nearest region 0's centre keeps 0; the other is where region 1 was: it is 1 again.
    assert split.tolist() == [0, 0, 1, 1]
    assert registry.current(np.array([1])).tolist() == [1]
    assert registry.next_id == 2


def test_a_split_part_elsewhere_gets_a_new_id_never_an_old_one() -> None:
    labels, registry = regions(20.0, np.full(4, NO_REGION), Registry.empty(5))
    assert labels.tolist() == [0, 0, 0, 0]

    split, registry = regions(0.0, labels, registry)

    # Region 0's centre sat between the two halves, nearer the heavier one, which keeps 0.
    assert split.tolist() == [0, 0, 1, 1] and registry.ids.tolist() == [0, 1]
    again, registry = regions(0.0, split, registry)
    assert again.tolist() == split.tolist()  # ids stay put while nothing changes


# --- the scorer -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_density_scorer_serves_unusual_customers_as_segment_minus_one() -> None:
    scorer = CustomerScorer(DENSITY)
    engine = ScoringEngine(scorer, {})
    events = shop(seed=5, bot=True)  # a bot viewing a hundred items a day for a month
    scores = {}
    for customer, activity in events:
        for scored in engine.process(customer, activity):
            scores[scored.customer_id] = scored.outcome.score

    bot = scores["bot"]
    assert (bot.segment, bot.segment_name, bot.segment_outlier) == (UNUSUAL, "unusual", True)
    ordinary = [score for customer, score in scores.items() if customer != "bot"]
    assert sum(score.segment_outlier for score in ordinary) <= 0.05 * len(ordinary)
    assert all(
        s.segment >= 0 and s.segment_name != "unusual" for s in ordinary if not s.segment_outlier
    )
    assert engine.segment_counts().get("unusual", 0) == sum(
        s.segment_outlier for s in scores.values()
    )
    assert bot.outlier_score >= 0.99


@pytest.mark.slow
def test_batched_rescores_place_customers_as_one_at_a_time(monkeypatch) -> None:
    scorer = CustomerScorer(DENSITY)
    engine = ScoringEngine(scorer, {})
    last = 0.0
    for event in generate_events(SimulationConfig(customers=150), limit=4_000):
        decoded = decode_event(orjson.dumps(event))
        activity = activity_of(decoded)
        engine.process(decoded.customer_id, activity)
        last = activity.time
    assert scorer.segmenter.ready
    import pickle

    monkeypatch.setattr(batch_scoring, "MIN_BATCH", 1)  # batches of one through the arrays
    one, one_states = pickle.loads(pickle.dumps((scorer, engine.states)))
    ids = sorted(one_states)
    for day in range(1, 4):
        now = last + day * DAY
        for customer in ids:
            a = one.refresh(customer, one_states[customer], now).score
            [b] = scorer.refresh_many([(customer, engine.states[customer])], now)
            assert (a.segment, a.segment_name, a.segment_outlier) == (
                b.score.segment, b.score.segment_name, b.score.segment_outlier,
            )  # fmt: skip
            assert math.isclose(a.outlier_score, b.score.outlier_score, abs_tol=1e-9)
