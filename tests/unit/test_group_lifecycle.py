"""A group segment's life: a row's id reused by the next group, young groups, records of
workers from before generations, and what a member of a group that went is told."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from online_models.customer.profile import OUTLIER_FEATURES
from online_models.group.parts import SEGMENTS, merge_part
from online_models.scoring.batch_votes import NO_SEGMENT, Votes
from online_models.scoring.scorer import CustomerScorer, ScorerConfig
from online_models.scoring.state import CustomerState
from online_models.segments.centres import SegmentShare, propose_group
from online_models.segments.groups import founders_fence
from online_models.segments.kmeans import Segmenter
from tests.unit.crowds import T0
from tests.unit.test_segment_groups import RESELLER, _share_with_group, _spread_share, _worker


def test_a_member_of_a_dissolved_group_is_not_alerted_under_the_next_group_in_its_row() -> None:
    share, _, member = _share_with_group()
    worker = _worker(share)
    x = dict(zip(OUTLIER_FEATURES, member, strict=True))
    placed_in_group = worker.place_one(x)
    assert placed_in_group.segment == 2
    scorer = CustomerScorer(ScorerConfig(segments=2, segment_group_share=0.005))
    scorer._segmenter = worker
    state = CustomerState.new(T0)
    scorer._place(state, placed_in_group)  # a member of the group, row 2, generation 0
    votes = Votes.of([state])
    assert state.segment == 2 and votes.segment.tolist() == [2]
    old_name = worker.describe(2)
    # While the member is not scored, the group is dissolved and a group of other customers
    # (resellers) is founded in its row: the same id, the next generation.
    refounded = share.decayed(share.time, 1.0)
    refounded.dissolve_group(0)
    resellers = np.array(list(RESELLER.values()))
    resellers[2] = 0.2  # one-off buyers of huge baskets
    refounded.add_group(resellers)
    jitter = np.random.default_rng(3).normal(0, 0.005, (30, 7))
    refounded.spread.add(np.full(30, 2), np.ones(30), resellers + jitter)
    assert refounded.groups == 1 and refounded.generations.tolist() == [1]
    worker.apply(refounded)
    new_name = worker.describe(2)
    assert new_name != old_name
    placed = worker.place_one(x)
    assert placed.segment in (0, 1)  # the old member is far from the resellers' group

    # One at a time (the scorer's rule) and over arrays (a batch's): placed again at once,
    # never served the new group's id, never alerted as leaving it.
    for _ in range(4):
        moved = scorer._place(state, placed)
        assert moved.left is None
        assert state.segment == placed.segment
        assert scorer._served(state, placed) == placed.segment
        confirmed = votes.confirm(
            np.array([placed.segment]), np.array([False]), 3, worker.current,
            generation=worker.generation,
        )  # fmt: skip
        votes = confirmed.votes
        assert confirmed.left.tolist() == [NO_SEGMENT]
        assert votes.segment.tolist() == [placed.segment]
    # A member of the new group is placed in it and keeps it.
    joiner = CustomerState.new(T0)
    in_new = worker.place_one(dict(zip(OUTLIER_FEATURES, resellers, strict=True)))
    assert in_new.segment == 2
    for _ in range(3):
        assert scorer._place(joiner, in_new).left is None
        assert joiner.segment == 2 and joiner.segment_generation == 1


def test_a_state_keeps_its_segment_s_generation_and_older_records_read_as_generation_0() -> None:
    state = CustomerState.new(T0)
    state.segment, state.segment_generation = 7, 3

    assert CustomerState.decode(state.encode()).segment_generation == 3
    assert CustomerState.from_dict(state.to_dict()).segment_generation == 3
    # A record of a worker from before generations: one trailing field fewer.
    older = orjson.dumps(orjson.loads(state.encode())[:-1])
    assert CustomerState.decode(older).segment_generation == 0
    named = state.to_dict()
    del named["segment_generation"]
    assert CustomerState.from_dict(named).segment_generation == 0


def test_a_young_group_takes_only_founders_and_so_does_not_flap() -> None:
    share = _spread_share()
    fence = founders_fence(share.distances, 1.5)
    assert fence is not None
    typical = np.append(share.centers()[0], share.spread.yardsticks()[0][0][5:])
    resellers = np.array(list(RESELLER.values()))

    def distance(t: float) -> float:
        point = typical + t * (resellers - typical)
        return float(np.nanmin(share.spread.distances(np.arange(2), np.tile(point, (2, 1)))))

    low, high = 0.0, 1.0  # a place just beyond the founders' fence from segment 0
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if distance(middle) < 1.2 * fence else (low, middle)
    place = typical + high * (resellers - typical)
    share.cells.add(np.tile(place, (30, 1)), np.ones(30))
    assert propose_group(share, 0.05) and share.groups == 1
    segmenter = Segmenter(n_segments=2, group_share=0.01)
    segmenter.apply(share)  # not shared: it founds and dissolves groups itself
    rng = np.random.default_rng(21)
    taken = 0
    for n in range(3_000):
        founder = n % 40 == 0  # the group's customers keep coming, a few at a time
        centre = place if founder else typical
        point = np.maximum(centre + rng.normal(0.0, 0.005 if founder else 0.03, 7), 0.0)
        x = dict(zip(OUTLIER_FEATURES, point, strict=True))
        segment = segmenter.learn_place_one(x, T0 + 60.0 * n).segment
        taken += not founder and segment == 2

    # Before young groups took founders only: dissolved at once, founded and dissolved twice more.
    assert segmenter._live.generations.tolist() == [0] and segmenter._live.groups == 1
    np.testing.assert_allclose(segmenter._live.group_means()[0], place, atol=0.02)
    assert taken <= 0.01 * 3_000  # the segment's customers stay in it


def test_a_worker_keeps_the_groups_of_a_merger_from_before_generations() -> None:
    share, _, member = _share_with_group()
    newer = share.decayed(share.time, 1.0)
    newer.dissolve_group(0)  # generation 1: this release's merger dissolved the first group
    newer.add_group(member)
    newer.spread.add(np.full(30, 2), np.ones(30), member + np.zeros((30, 7)))
    worker = _worker(newer)
    x = dict(zip(OUTLIER_FEATURES, member, strict=True))
    for _ in range(5):
        worker.learn_one(x, T0)  # unsent, learned under generation 1
    late = worker.delta()
    for _ in range(5):
        worker.learn_one(x, T0)
    # A 0.4.0 merger takes over: its records carry the group rows, no generations.
    meta, arrays = newer.decayed(newer.time, 1.0).to_arrays()
    del arrays["group_generations"]
    older = SegmentShare.from_arrays(meta, arrays, max_centres=2)
    assert older.generations.tolist() == [0]  # read as generation 0

    worker.apply(older)

    assert worker._live.spread.weights[2] >= older.spread.weights[2]  # not dropped
    assert worker.place_one(x).segment == 2
    assert worker.current(2, worker.generation(2))
    assert worker.delta().generations.tolist() == [0]  # it learns under the merger's
    # Nor does this release's merger, taking over from the older one, drop them for a delta
    # learned under generation 1.
    merged = merge_part(SEGMENTS, older, late, ScorerConfig(segments=2))
    assert isinstance(merged, SegmentShare)
    assert merged.spread.weights[2] >= older.spread.weights[2]
    assert merged.generations.tolist() == [0]
    bad = dict(arrays, group_generations=np.array([0.5]))
    with pytest.raises(ValueError, match="group_generations"):
        SegmentShare.from_arrays(meta, bad, max_centres=2)


def test_a_group_whose_customers_went_silent_is_dissolved_and_its_row_freed() -> None:
    """A group that lost its customers decays until its spread is too young to judge; it is
    not kept for good (with two such groups no other could ever be founded): under a point's
    weight it is dissolved, its row free for the next group under a new generation."""
    share, typical, _ = _share_with_group()
    row = len(share.weights) - share.groups
    share.spread.add(np.full(200, row), np.ones(200), np.tile(typical, (200, 1)))
    aged = share.decayed(share.time + 30 * 86_400, 5.0)  # six half-lives without a point
    assert aged.spread.young()[row:].all() and aged.weights[row] < 1.0
    generation = int(aged.generations[0])

    assert propose_group(aged, 0.005)

    assert aged.generations[0] == generation + 1
    assert aged.weights[row] == 0.0 and (aged.spread.weights[row:] <= 0.0).any()
