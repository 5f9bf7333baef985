"""Who fits no k-means segment: ``segment_outlier`` and ``outlier_score`` on every score.

The outlier score is the percentile rank of a customer's distance to their segment (in units
of its spread, over the segment features and the basket) among the distances of the points the
segmenter learned; beyond ``outlier_mads`` (2.5) robust standard deviations of the log distances
above their median a customer is an outlier, while keeping their segment.
"""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime
from itertools import pairwise

import numpy as np
import pytest

from online_models.customer.activity import DAY
from online_models.customer.profile import SEGMENT_FEATURES
from online_models.scoring.engine import ScoringEngine
from online_models.scoring.scorer import CustomerScorer, ScorerConfig
from online_models.segments.centres import SegmentShare, merge_segments
from online_models.segments.kmeans import OUTLIER_FENCE_FLOOR, Segmenter
from online_models.segments.outliers import distance_ranks, readable_histogram
from schemas import Score
from schemas.model_records import ModelRecord, decode_record, encode_record
from streams.convert import score_of
from tests.unit.crowds import BASKETS, EXTREME, ORDINARY, T0, crowd, shop


def learned_crowd(seed: int, **kwargs: int) -> tuple[Segmenter, list[bool], list[bool]]:
    """A segmenter that learned a crowd, each point placed before it was learned: the
    segmenter, whether each point was flagged, and whether it was an extreme one."""
    data = crowd(seed, **kwargs)
    segmenter = Segmenter(n_segments=6)
    flagged = []
    for n, (x, time) in enumerate(zip(data.points, data.times, strict=True)):
        if n == len(data.points) // 4:
            assert segmenter.ready, "the segments formed before the first extreme customer"
        flagged.append(segmenter.learn_place_one(x, time).outlier)
    return segmenter, flagged, data.extreme


def test_extreme_customers_are_flagged_and_few_ordinary_ones_are() -> None:
    _, flagged, extreme = learned_crowd(seed=1)

    warm = len(flagged) // 4
    ordinary = [f for f, e in zip(flagged[warm:], extreme[warm:], strict=True) if not e]
    assert all(f for f, e in zip(flagged, extreme, strict=True) if e)
    # The fence comes from the distances' shape: a crowd with no far tail has (almost) no
    # one beyond it, where a 99th percentile would flag 1% of it whatever it looked like.
    assert sum(ordinary) <= 0.002 * len(ordinary)


def test_a_reseller_with_ordinary_rfm_but_huge_baskets_is_an_outlier() -> None:
    """Segments are formed on RFM and engagement; the basket is measured against theirs."""
    rng = random.Random(6)
    segmenter = Segmenter(n_segments=3)
    for n in range(3_000):
        centre = ORDINARY[("regulars", "occasional", "lapsing")[n % 3]]
        x = {
            name: max(c + rng.gauss(0.0, 0.05), 0.0)
            for name, c in zip(SEGMENT_FEATURES, centre, strict=True)
        }
        x |= {
            "ordered": 1.0,
            "basket_spend": rng.gauss(0.8, 0.08),
            "basket_units": rng.gauss(0.7, 0.1),
        }
        segmenter.learn_one(x, T0 + 60.0 * n)
    regular = point(ORDINARY["regulars"]) | {"basket_spend": 0.8, "basket_units": 0.7}
    # Fifteen times the baskets: log1p(15 x 250) / log1p(1000) is about 1.19.
    reseller = regular | {"basket_spend": 1.19, "basket_units": 1.1}

    assert not segmenter.place_one(regular).outlier
    placed = segmenter.place_one(reseller)
    assert placed.outlier and placed.outlier_score > 0.99
    assert placed.segment == segmenter.place_one(regular).segment
    reasons = segmenter.unusual_features(reseller, {"basket_spend": 3_750.0})
    assert reasons[0]["feature"] == "basket_spend"
    assert reasons[0]["reason"].startswith("spends 3,750 per order; typically")


def point(values: tuple[float, ...]) -> dict[str, float]:
    return dict(zip(SEGMENT_FEATURES, values, strict=True))


def test_the_score_rises_with_the_distance_and_a_copy_scores_the_same() -> None:
    segmenter, _, _ = learned_crowd(seed=2, extremes=0)
    regular = point(ORDINARY["regulars"])
    start, end = np.array(BASKETS["regulars"]), np.array(BASKETS["reseller"])
    # A regular whose baskets grow to a reseller's: the regulars' centre stays the nearest.
    probes = [
        regular
        | dict(zip(("basket_spend", "basket_units"), start + t * (end - start), strict=True))
        for t in np.linspace(0.0, 1.0, 21)
    ]

    placements = [segmenter.place_one(x) for x in probes]

    scores = [p.outlier_score for p in placements]
    assert len({p.segment for p in placements}) == 1
    assert all(a <= b for a, b in pairwise(scores))
    assert scores[0] < 0.5 and scores[-1] == 1.0
    flags = [p.outlier for p in placements]
    assert flags == sorted(flags) and flags[-1] and not flags[0]  # beyond the fence, all out
    fence = segmenter.outlier_fence_score()
    assert fence is not None
    assert all(s >= fence for s, f in zip(scores, flags, strict=True) if f)
    assert all(s <= fence for s, f in zip(scores, flags, strict=True) if not f)
    copy = pickle.loads(pickle.dumps(segmenter))
    assert [copy.place_one(x) for x in probes] == placements


def test_placing_a_customer_learns_nothing() -> None:
    segmenter, _, _ = learned_crowd(seed=3, extremes=0)
    before = pickle.dumps(segmenter)

    segmenter.place_one(point(EXTREME["bot"]))

    assert pickle.dumps(segmenter) == before


def test_two_workers_distances_merge_into_one_segmenters() -> None:
    data = crowd(seed=4, extremes=6)
    one, a, b = Segmenter(n_segments=4), Segmenter(n_segments=4), Segmenter(n_segments=4)
    for segmenter in (one, a, b):
        segmenter.shared = True
        segmenter.apply(one.delta())  # no centre yet: only points, no seeds of their own
    rng = random.Random(4)
    for x, time in zip(data.points, data.times, strict=True):
        one.learn_one(x, time)
        (a if rng.random() < 0.5 else b).learn_one(x, time)

    merged = merge_segments(a.delta(), b.delta(), halflife_days=1.0)

    whole = one.delta()
    np.testing.assert_allclose(merged.distances, whole.distances, rtol=1e-9)
    np.testing.assert_allclose(merged.spread.squares, whole.spread.squares, rtol=1e-9)
    np.testing.assert_allclose(merged.spread.weights, whole.spread.weights, rtol=1e-9)


@pytest.mark.slow
def test_an_enormous_single_order_is_an_outlier_in_the_score_and_the_redis_hash() -> None:
    scorer = CustomerScorer(ScorerConfig(segments=3, recommender_factors=4))
    engine = ScoringEngine(scorer, {})  # silent customers re-scored daily, as by the worker
    scores = {}
    for customer, activity in shop(seed=5, whale_day=45.0):
        if customer == "whale":
            assert scorer.segmenter.ready, "every centre seeded: the whale cannot become one"
        for scored in engine.process(customer, activity):
            if activity.time >= T0 + 30 * DAY:  # every centre seeded, a month learned
                scores[scored.customer_id, scored.outcome.score.as_of] = scored.outcome.score

    whales = [score for (customer, _), score in scores.items() if customer == "whale"]
    others = [score for (customer, _), score in scores.items() if customer != "whale"]
    assert whales[0].segment_outlier and whales[0].outlier_score >= 0.99
    assert sum(score.segment_outlier for score in others) <= 0.02 * len(others)
    assert np.median([score.outlier_score for score in others]) < 0.75
    updated = datetime(2025, 3, 1, tzinfo=UTC)
    fields = score_of("whale", whales[0], [], updated).to_redis()
    assert fields["segment_outlier"] == "true"
    assert float(fields["outlier_score"]) == round(whales[0].outlier_score, 6)
    assert Score.from_redis(fields).segment_outlier is True
    unflagged = next(score for score in others if not score.segment_outlier)
    assert score_of("c", unflagged, [], updated).to_redis()["segment_outlier"] == "false"


def test_a_segments_part_from_before_outlier_scores_is_still_read() -> None:
    """A rolling upgrade: the models topic holds k-means parts with no distance histogram."""
    share = SegmentShare(np.eye(5)[:2], np.ones(2), time=T0, points=2)
    meta, arrays = share.to_arrays()
    del arrays["standardised_distances"]
    record = ModelRecord("part", {"header": {}, "share": meta}, arrays)

    back = SegmentShare.from_arrays(meta, decode_record(encode_record(record)).arrays,
                                    max_centres=6)  # fmt: skip

    np.testing.assert_array_equal(back.sums, share.sums)
    assert not back.distances.any()


def test_a_segments_part_from_before_standardised_distances_is_read_as_empty() -> None:
    """A rolling upgrade: parts with 128 bins of plain distances and no spreads."""
    share = SegmentShare(np.eye(5)[:2], np.ones(2), time=T0, points=2)
    meta, arrays = share.to_arrays()
    for name in ("spread_weights", "spread_sums", "spread_squares"):
        del arrays[name]
    arrays["distances"] = np.ones(128)
    record = ModelRecord("part", {"header": {}, "share": meta}, arrays)

    back = SegmentShare.from_arrays(meta, decode_record(encode_record(record)).arrays,
                                    max_centres=6)  # fmt: skip

    assert back.distances.shape == (256,) and not back.distances.any()
    assert back.spread.weights.shape == (2,) and not back.spread.weights.any()


def test_a_part_with_a_broken_spread_is_refused() -> None:
    share = SegmentShare.empty(2)
    meta, arrays = share.to_arrays()
    arrays["spread_squares"] = -np.ones_like(arrays["spread_squares"])

    with pytest.raises(ValueError, match="segment spread"):
        SegmentShare.from_arrays(meta, arrays, max_centres=6)


def test_a_crowd_half_of_one_kind_does_not_make_everyone_else_an_outlier() -> None:
    """Over half the weight at one distance (one-view visitors, all alike) makes the MAD
    nought; the fence stays at least two of a segment's standard deviations out."""
    rng = random.Random(7)
    segmenter = Segmenter(n_segments=2)
    flagged = []
    for n in range(6_000):
        if n % 10 < 6:
            x = {"recency": 0.0, "engagement": 0.13}  # a first view, no order
        else:
            centre = ORDINARY["regulars"]
            x = {
                name: max(c + rng.gauss(0.0, 0.05), 0.0)
                for name, c in zip(SEGMENT_FEATURES, centre, strict=True)
            }
            x |= {"basket_spend": rng.gauss(0.41, 0.05), "basket_units": rng.gauss(0.12, 0.03)}
        placement = segmenter.learn_place_one(x, T0 + 60.0 * n)
        if n >= 3_000 and "basket_spend" in x:
            flagged.append(placement.outlier)

    fence = segmenter.outlier_fence()
    assert fence is not None and fence >= OUTLIER_FENCE_FLOOR
    assert sum(flagged) <= 0.01 * len(flagged)


def test_a_segments_part_keeps_its_histogram_where_older_workers_do_not_look() -> None:
    """Workers from before standardised distances read a part with no "distances" as one
    with an empty histogram, and would refuse one of 256 bins: new parts name it otherwise."""
    segmenter, _, _ = learned_crowd(seed=8, extremes=0)
    _, arrays = segmenter.delta().to_arrays()

    assert "distances" not in arrays
    assert arrays["standardised_distances"].shape == (256,)
    assert arrays["standardised_distances"].sum() > 0


def test_a_density_histogram_of_128_bins_is_rebinned_not_dropped() -> None:
    legacy = np.zeros(128)
    legacy[40:80] = 1.0  # plain distances between about 0.013 and 0.19

    rebinned = readable_histogram(legacy)

    assert rebinned.shape == (256,) and rebinned.sum() == pytest.approx(40.0)
    ranks = distance_ranks(rebinned, np.array([0.01, 0.05, 0.5]))
    assert ranks[0] == 0.0 and 0.3 < ranks[1] < 0.7 and ranks[2] == 1.0
