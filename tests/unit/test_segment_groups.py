"""Customers unlike the rest: robust spreads, outliers alike made a segment of their own, a
segment too young to tell, and a refund that makes no outlier."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from online_models.customer.profile import OUTLIER_FEATURES
from online_models.segments.centres import SegmentShare, merge_segments
from online_models.segments.groups import OutlierCells
from online_models.segments.kmeans import Segmenter
from online_models.segments.spread import SegmentSpread
from schemas import Score
from tests.unit.crowds import BASKETS, EXTREME, ORDINARY, T0, crowd

RESELLER = dict(zip(OUTLIER_FEATURES, (*EXTREME["reseller"], *BASKETS["reseller"]), strict=True))


def a_reseller(rng: random.Random) -> dict[str, float]:
    return {name: max(value + rng.gauss(0.0, 0.02), 0.0) for name, value in RESELLER.items()}


def test_a_tenth_of_a_segment_far_away_does_not_widen_its_spread() -> None:
    rng = np.random.default_rng(0)
    points = np.tile([1.0, 0.1, 0.5, 0.5, 0.1, 0.5, 0.4], (1_000, 1))
    points[:, 5] = rng.normal(0.5, 0.05, 1_000)
    points[900:, 5] = 1.2  # a tenth of the segment buys baskets 20 times the others'
    spread = SegmentSpread.empty(1)
    spread.add(np.zeros(1_000, dtype=int), np.ones(1_000), points)

    medians, deviations = spread.yardsticks()

    assert abs(medians[0, 5] - 0.5) < 0.03
    assert deviations[0, 5] < 0.08  # their standard deviation is over 0.2
    assert points[:, 5].std() > 0.2


@pytest.mark.slow  # about 12 s of CPU: not in make test-quick
def test_outliers_alike_get_a_segment_of_their_own_and_the_others_keep_their_ids() -> None:
    data = crowd(seed=11, ordinary=6_000, extremes=0)
    rng = random.Random(11)
    segmenter = Segmenter(n_segments=4, group_share=0.005)
    names_before: dict[int, str] = {}
    placed: list[tuple[bool, int, bool]] = []  # (reseller, segment, flagged)
    for n, (x, time) in enumerate(zip(data.points, data.times, strict=True)):
        if n == 1_500:
            names_before = segmenter.describe_all()
        if n >= 1_500 and n % 25 == 0:  # 4% of the points from here on
            p = segmenter.learn_place_one(a_reseller(rng), time)
            placed.append((True, p.segment, p.outlier))
        p = segmenter.learn_place_one(x, time)
        placed.append((False, p.segment, p.outlier))

    names = segmenter.describe_all()
    groups = [s for s in names if segmenter.in_group(s)]
    assert [names[s] for s in groups] == ["wholesale buyers"]
    assert {s: names[s] for s in names_before} == names_before  # ids stay put
    late = placed[len(placed) // 2 :]
    resellers = [(s, f) for r, s, f in late if r]
    assert sum(s == groups[0] for s, _ in resellers) >= 0.9 * len(resellers)
    assert all(f for s, f in resellers if s == groups[0])  # still outliers, together
    members = [r for r, s, _ in late if s == groups[0]]
    assert sum(members) >= 0.9 * len(members)  # the segment is theirs


def test_a_few_alike_outliers_stay_outliers_alone() -> None:
    data = crowd(seed=12, ordinary=4_000, extremes=0)
    rng = random.Random(12)
    segmenter = Segmenter(n_segments=4, group_share=0.005)
    flagged = []
    for n, (x, time) in enumerate(zip(data.points, data.times, strict=True)):
        if n >= 1_000 and n % 600 == 0:  # 5 of them: under the share
            flagged.append(segmenter.learn_place_one(a_reseller(rng), time).outlier)
        segmenter.learn_one(x, time)

    assert not any(segmenter.in_group(s) for s in segmenter.describe_all())
    assert all(flagged)


def test_the_group_model_proposes_the_group_and_older_workers_ignore_it() -> None:
    centres = np.array([[1.0, 0.05, 0.6, 0.55, 0.4], [1.0, 0.7, 0.3, 0.35, 0.1]])
    group = SegmentShare(centres * 100.0, np.array([100.0, 100.0]), time=T0, points=200)
    rng = np.random.default_rng(3)
    ordinary = np.vstack(
        [np.append(c, [0.41, 0.12]) + rng.normal(0, 0.03, (100, 7)) for c in centres]
    )
    group.spread.add(np.repeat([0, 1], 100), np.ones(200), ordinary)
    group.distances[100:130] = 200.0 / 30  # distances of about 1 spread
    delta = SegmentShare.empty(2)
    delta.time = T0
    delta.cells = OutlierCells.empty()
    resellers = [list(a_reseller(random.Random(n)).values()) for n in range(30)]
    delta.cells.add(np.array(resellers), np.ones(30))

    merged = merge_segments(group, delta, halflife_days=1.0, max_centres=2, group_share=0.05)

    assert merged.groups == 1 and len(merged.weights) == 3
    np.testing.assert_allclose(merged.centers()[:2], centres)  # ids stay put
    meta, arrays = merged.to_arrays()
    again = SegmentShare.from_arrays(meta, arrays, max_centres=2)
    assert again.groups == 1
    np.testing.assert_allclose(again.centers(), merged.centers())
    older = {k: v for k, v in arrays.items() if not k.startswith(("group_", "outlier_cell_"))}
    np.testing.assert_allclose(
        SegmentShare.from_arrays(meta, older, max_centres=2).centers(), centres
    )


def test_a_young_segment_says_unknown_not_typical() -> None:
    segmenter = Segmenter(n_segments=2)
    for n in range(3):
        segmenter.learn_one({"ordered": 1.0, "monetary": 0.1 * n}, T0 + n)

    placed = segmenter.place_one({"ordered": 1.0, "monetary": 0.1})

    assert math.isnan(placed.outlier_score) and not placed.outlier
    score = Score(
        customer_id="c-1", churn_risk=0.1, segment=placed.segment, segment_name="new",
        value=0.1, monetary=1.0, orders=1, recommendations=[], model_version="v",
        event_time="2025-01-01T00:00:00Z", updated_at="2025-01-01T00:00:00Z",
        outlier_score=None,
    )  # fmt: skip
    fields = score.to_redis()
    assert "outlier_score" not in fields
    assert Score.from_redis(fields).outlier_score is None


def test_a_full_refund_alone_does_not_make_an_outlier() -> None:
    data = crowd(seed=13, ordinary=3_000, extremes=0)
    segmenter = Segmenter(n_segments=4)
    for x, time in zip(data.points, data.times, strict=True):
        segmenter.learn_one(x, time)
    regular = dict(zip(OUTLIER_FEATURES, (*ORDINARY["regulars"], *BASKETS["regulars"]),
                       strict=True))  # fmt: skip

    # A full refund: net spend 0, so spend per order 0 too.
    refunded = segmenter.place_one(regular | {"monetary": 0.0, "basket_spend": 0.0})
    huge = segmenter.place_one(regular | {"basket_spend": 1.5})

    assert not refunded.outlier
    assert huge.outlier
