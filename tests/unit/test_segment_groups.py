"""Customers unlike the rest: robust spreads, outliers alike made a segment of their own, a
segment too young to tell, and a refund that makes no outlier."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from online_models.customer.profile import OUTLIER_FEATURES
from online_models.segments.centres import (
    SegmentShare,
    merge_segments,
    propose_group,
    settle_segments,
)
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


_CENTRES = np.array([[1.0, 0.05, 0.6, 0.55, 0.4], [1.0, 0.7, 0.3, 0.35, 0.1]])


def _spread_share(seed: int = 4) -> SegmentShare:
    """Two ordinary segments (:data:`_CENTRES`) with spreads and a histogram of distances,
    no group yet."""
    share = SegmentShare(_CENTRES * 100.0, np.array([100.0, 100.0]), time=T0, points=200)
    rng = np.random.default_rng(seed)
    ordinary = np.vstack(
        [np.append(c, [0.41, 0.12]) + rng.normal(0, 0.03, (100, 7)) for c in _CENTRES]
    )
    share.spread.add(np.repeat([0, 1], 100), np.ones(200), ordinary)
    share.distances[100:130] = 200.0 / 30  # distances of about 1 spread
    return share


def test_the_group_model_proposes_the_group_and_older_workers_ignore_it() -> None:
    centres = _CENTRES
    group = _spread_share(seed=3)
    delta = SegmentShare.empty(2)
    delta.time = T0
    delta.cells = OutlierCells.empty()
    resellers = [list(a_reseller(random.Random(n)).values()) for n in range(30)]
    delta.cells.add(np.array(resellers), np.ones(30))

    merged = merge_segments(group, delta, halflife_days=1.0, max_centres=2)
    assert merged.groups == 0  # never inside a merge: once per version
    assert settle_segments(merged, max_centres=2, group_share=0.05)

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


def test_the_scattered_tail_of_a_segment_is_never_made_a_group() -> None:
    data = crowd(seed=14, ordinary=6_000, extremes=0)
    rng = random.Random(14)
    segmenter = Segmenter(n_segments=4, group_share=0.005)
    regular = (*ORDINARY["regulars"], *BASKETS["regulars"])
    flagged = []
    for n, (x, time) in enumerate(zip(data.points, data.times, strict=True)):
        if n >= 1_500 and n % 20 == 0:  # 5% of the points: regulars three times as spread
            noisy = [max(v + rng.gauss(0.0, 0.15), 0.0) for v in regular]
            far = dict(zip(OUTLIER_FEATURES, noisy, strict=True))
            flagged.append(segmenter.learn_place_one(far | {"ordered": 1.0}, time).outlier)
        segmenter.learn_one(x, time)

    assert not any(segmenter.in_group(s) for s in segmenter.describe_all())
    assert 0 < sum(flagged) < len(flagged)  # the farthest of them are outliers, alone


def test_a_group_that_drifts_into_a_segment_is_dissolved_and_its_id_goes_to_the_next() -> None:
    centres = np.array([[1.0, 0.05, 0.6, 0.55, 0.4], [1.0, 0.7, 0.3, 0.35, 0.1]])
    share = SegmentShare(centres * 100.0, np.array([100.0, 100.0]), time=T0, points=200)
    rng = np.random.default_rng(4)
    ordinary = np.vstack(
        [np.append(c, [0.41, 0.12]) + rng.normal(0, 0.03, (100, 7)) for c in centres]
    )
    share.spread.add(np.repeat([0, 1], 100), np.ones(200), ordinary)
    share.distances[100:130] = 200.0 / 30  # distances of about 1 spread
    resellers = np.array([list(a_reseller(random.Random(n)).values()) for n in range(30)])
    share.cells.add(resellers, np.ones(30))
    assert propose_group(share, 0.05) and share.groups == 1
    group = len(centres)
    # The group's customers turn into regulars: its mean sits in the first segment.
    share.spread.clear(group)
    share.spread.add(np.full(30, group), np.ones(30), ordinary[:30])
    bulk = resellers.copy()
    bulk[:, 2] = 0.2  # a group of one-off buyers of the same baskets
    share.cells.add(bulk, np.ones(30))

    assert propose_group(share, 0.05)  # dissolved: that review founds nothing
    assert np.isnan(share.group_means()[0]).all() and share.generations.tolist() == [1]

    assert propose_group(share, 0.05)  # the next review founds the new group

    assert share.groups == 1  # the dissolved group's id went to the new one
    assert share.generations.tolist() == [1]
    np.testing.assert_allclose(share.group_means()[0], bulk.mean(axis=0), atol=0.05)
    np.testing.assert_allclose(share.centers()[:2], centres)  # the others' ids stay put


def test_alike_customers_inside_the_outlier_fence_still_make_a_group() -> None:
    data = crowd(seed=15, ordinary=3_000, extremes=0)
    rng = random.Random(15)
    # A fence so far out that no one alone is an outlier: the group is founded from nearer.
    segmenter = Segmenter(n_segments=4, outlier_mads=10.0, group_share=0.005, group_mads=1.5)
    resellers = []
    for n, (x, time) in enumerate(zip(data.points, data.times, strict=True)):
        if n >= 750 and n % 25 == 0:
            resellers.append(segmenter.learn_place_one(a_reseller(rng), time))
        segmenter.learn_one(x, time)

    names = segmenter.describe_all()
    late = resellers[len(resellers) // 2 :]
    assert not any(p.outlier for p in resellers)
    assert sum(names[p.segment] == "wholesale buyers" for p in late) >= 0.9 * len(late)


def test_a_customer_typical_of_their_segment_stays_in_it_beside_a_group() -> None:
    share, typical, bigger_baskets = _share_with_group()  # the group within reach of typical
    group = len(share.weights) - share.groups
    segmenter = Segmenter(n_segments=2, group_share=0.005)
    segmenter.shared = True
    segmenter.apply(share)

    stays = segmenter.place_one(dict(zip(OUTLIER_FEATURES, typical, strict=True)))
    joins = segmenter.place_one(dict(zip(OUTLIER_FEATURES, bigger_baskets, strict=True)))

    assert stays.segment == 0
    assert joins.segment == group and segmenter.in_group(joins.segment)


def _share_with_group() -> tuple[SegmentShare, np.ndarray, np.ndarray]:
    """Two ordinary segments with spreads and one group segment (row 2) next to the first:
    the share, a customer typical of segment 0 and one of the group."""
    centres = np.array([[1.0, 0.05, 0.6, 0.55, 0.4], [1.0, 0.7, 0.3, 0.35, 0.1]])
    share = SegmentShare(centres * 100.0, np.array([100.0, 100.0]), time=T0, points=200)
    rng = np.random.default_rng(5)
    typical = np.append(centres[0], [0.41, 0.12])
    ordinary = np.vstack([np.append(c, [0.41, 0.12]) for c in centres]).repeat(100, axis=0)
    share.spread.add(np.repeat([0, 1], 100), np.ones(200), ordinary + rng.normal(0, 0.03, (200, 7)))
    share.distances[100:130] = 200.0 / 30
    member = typical + np.array([0, 0, 0, 0, 0, 0.2, 0])
    share.add_group(member)
    share.spread.add(np.full(30, 2), np.ones(30), member + rng.normal(0, 0.005, (30, 7)))
    return share, typical, member


def _worker(share: SegmentShare) -> Segmenter:
    worker = Segmenter(n_segments=2, group_share=0.005)
    worker.shared = True
    worker.apply(share.decayed(share.time, 1.0))
    return worker


def _same(a: SegmentShare, b: SegmentShare) -> None:
    for name in ("sums", "weights"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-9)
    for name in ("weights", "sums", "squares", "histograms"):
        np.testing.assert_allclose(getattr(a.spread, name), getattr(b.spread, name), atol=1e-9)
    assert a.generations.tolist() == b.generations.tolist() and a.groups == b.groups


def test_a_late_delta_neither_revives_a_dissolved_group_nor_feeds_the_next_one() -> None:
    share, _, member = _share_with_group()
    worker = _worker(share)
    for _ in range(20):
        worker.learn_one(dict(zip(OUTLIER_FEATURES, member, strict=True)), T0)
    late = worker.delta()  # sent before the worker heard of the dissolving
    assert late.weights[2] > 0
    unsent = _worker(share)  # a second worker, its points not sent yet
    for _ in range(20):
        unsent.learn_one(dict(zip(OUTLIER_FEATURES, member, strict=True)), T0)
    group = share.decayed(share.time, 1.0)
    group.dissolve_group(0)

    revived = merge_segments(group, late, halflife_days=1.0)

    assert revived.weights[2] == 0 and revived.spread.weights[2] == 0
    assert np.isnan(revived.group_means()[0]).all() and revived.generations.tolist() == [1]
    unsent.apply(revived)
    assert unsent.delta().weights[2] == 0  # its unsent points of the old group are dropped
    # A new group founded in the row takes nothing of the old one's.
    resellers = np.array(list(RESELLER.values()))
    group.add_group(resellers)
    assert group.groups == 1 and group.generations.tolist() == [1]
    fresh = group.empty_like()  # a worker that learned under the new generation
    fresh.sums[2] += 3.0 * resellers[:5]
    fresh.weights[2] += 3.0
    fresh.spread.add_one(2, 3.0, resellers)
    orders = [
        merge_segments(merge_segments(group, late, halflife_days=1.0), fresh, halflife_days=1.0),
        merge_segments(merge_segments(group, fresh, halflife_days=1.0), late, halflife_days=1.0),
        merge_segments(group, merge_segments(late, fresh, halflife_days=1.0), halflife_days=1.0),
    ]
    np.testing.assert_allclose(orders[0].group_means()[0], resellers, atol=1e-9)
    assert orders[0].spread.weights[2] == pytest.approx(4.0)
    for other in orders[1:]:
        _same(orders[0], other)


def test_deltas_merged_in_any_order_publish_the_same_groups() -> None:
    from online_models.group.model import GroupModel
    from online_models.group.parts import SEGMENTS, Delta, GroupPart
    from online_models.scoring.scorer import ScorerConfig

    config = ScorerConfig(segments=2, segment_group_share=0.05)
    resellers = np.array([list(a_reseller(random.Random(n)).values()) for n in range(40)])
    bulk = resellers.copy()
    bulk[:, 2] = 0.2  # one-off buyers of the same baskets: a second place
    deltas = []
    for worker, (points, count) in enumerate([(resellers, 40), (bulk, 30)]):
        delta = SegmentShare.empty(2)
        delta.time = T0
        delta.cells.add(points[:count], np.ones(count))  # each alone holds enough
        deltas.append(Delta(SEGMENTS, f"w{worker}", 1, delta))
    published = []
    for order in (deltas, deltas[::-1]):
        model = GroupModel(config, {SEGMENTS: GroupPart(SEGMENTS, _spread_share(), 1)}, 1)
        for delta in order:
            model.merge(delta)
            assert model.parts[SEGMENTS].share.groups == 0  # never inside a merge
        model.publish()
        share = model.parts[SEGMENTS].share
        assert isinstance(share, SegmentShare)
        published.append(share)

    assert published[0].groups == 1  # one review founds one group, at one of the places
    places = np.array([resellers.mean(axis=0), bulk[:30].mean(axis=0)])
    assert np.abs(places - published[0].group_means()[0]).max(axis=1).min() < 0.02
    _same(published[0], published[1])
    np.testing.assert_allclose(published[0].group_means(), published[1].group_means())


def _founded() -> tuple[SegmentShare, np.ndarray, float]:
    """A share whose review founded a group of resellers; the ordinary customers typical of
    segment 0 and the founders' fence."""
    from online_models.segments.groups import founders_fence

    share = _spread_share()
    resellers = np.array([list(a_reseller(random.Random(n)).values()) for n in range(30)])
    share.cells.add(resellers, np.ones(30))
    assert propose_group(share, 0.05) and share.groups == 1
    fence = founders_fence(share.distances, 1.5)
    assert fence is not None
    return share, resellers.mean(axis=0), fence


def _move_group(share: SegmentShare, mean: np.ndarray) -> None:
    """The group's customers now sit around ``mean``."""
    rng = np.random.default_rng(9)
    share.spread.clear(2)
    share.spread.add(np.full(30, 2), np.ones(30), mean + rng.normal(0, 0.005, (30, 7)))


def test_a_group_between_the_dissolving_and_founding_fences_stays_over_many_reviews() -> None:
    share, resellers, fence = _founded()
    typical = np.append(share.centers()[0], share.spread.yardsticks()[0][0][5:])

    def distance(t: float) -> float:
        mean = typical + t * (resellers - typical)
        return float(np.nanmin(share.spread.distances(np.arange(2), np.tile(mean, (2, 1)))))

    low, high = 0.0, 1.0  # the place on the way from the segment to the group at 3/4 fence
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if distance(middle) < 0.75 * fence else (low, middle)
    between = typical + low * (resellers - typical)
    assert 0.7 * fence < distance(low) < fence  # inside the founders' fence, not well inside
    _move_group(share, between)

    for _ in range(10):  # founders keep arriving at the group's place
        share.cells.add(np.tile(between, (30, 1)), np.ones(30))
        propose_group(share, 0.05)
        assert share.generations.tolist() == [0] and share.groups == 1
        np.testing.assert_allclose(share.group_means()[0], between, atol=0.01)
    # Well inside the fence, it is dissolved.
    _move_group(share, typical)
    assert propose_group(share, 0.05) and share.generations.tolist() == [1]


def test_a_group_is_not_dissolved_while_no_segment_has_a_spread_to_measure_it_by() -> None:
    share, resellers, _ = _founded()
    for segment in (0, 1):
        share.spread.clear(segment)  # the distances to every ordinary segment are unknown

    for _ in range(3):
        propose_group(share, 0.05)

    assert share.generations.tolist() == [0]
    np.testing.assert_allclose(share.group_means()[0], resellers, atol=0.01)


def test_a_place_apart_but_as_spread_as_a_segment_is_no_group() -> None:
    share = _spread_share()
    rng = np.random.default_rng(12)
    resellers = np.array(list(RESELLER.values()))
    # Alike enough to share a place on the grid, and beyond the fence: as spread as the
    # segments themselves (standard deviation 0.03 on every feature), not tight.
    scattered = resellers + rng.normal(0.0, 0.03, (60, 7))
    share.cells.add(scattered, np.ones(60))
    loose = share.decayed(share.time, 1.0)

    assert not propose_group(share, 0.05, tightness=0.5)
    assert share.groups == 0
    assert propose_group(loose, 0.05, tightness=2.0)  # without the tightness check: a group
    assert loose.groups == 1


def test_members_of_a_dissolved_group_are_placed_again_with_no_alert_and_no_made_up_name() -> None:
    from online_models.scoring.batch_votes import NO_SEGMENT, Votes
    from online_models.scoring.scorer import CustomerScorer, ScorerConfig
    from online_models.scoring.state import CustomerState

    share, _, member = _share_with_group()
    worker = _worker(share)
    x = dict(zip(OUTLIER_FEATURES, member, strict=True))
    assert worker.place_one(x).segment == 2 and worker.current(2)
    ordinary_names = set(segment_names_of(worker))
    dissolved = share.decayed(share.time, 1.0)
    dissolved.dissolve_group(0)
    worker.apply(dissolved)

    placed = worker.place_one(x)
    assert placed.segment in (0, 1) and not worker.current(2)
    assert 2 not in worker.describe_all()
    assert set(worker.describe_all().values()) <= ordinary_names
    # One at a time (the scorer's rule) and over arrays (a batch's): no segment change.
    scorer = CustomerScorer(ScorerConfig(segments=2, segment_group_share=0.005))
    scorer._segmenter = worker
    state = CustomerState.new(T0)
    state.segment = 2
    votes = Votes(*np.array([[2], [NO_SEGMENT], [0], [0], [0]]))
    for _ in range(4):
        moved = scorer._place(state, placed)
        assert moved.left is None and state.segment == placed.segment
        confirmed = votes.confirm(np.array([placed.segment]), np.array([False]), 3, worker.current)
        votes = confirmed.votes
        assert confirmed.left.tolist() == [NO_SEGMENT]
        assert votes.segment.tolist() == [placed.segment]
        assert worker.describe(int(votes.segment[0])) in ordinary_names


def segment_names_of(segmenter: Segmenter) -> list[str]:
    """The names of the ordinary segments."""
    return [name for s, name in segmenter.describe_all().items() if not segmenter.in_group(s)]
