"""Segment names a CRM user can rely on: a segment's name changes when its own centre clearly
moves into another name, not when another segment moves, nor when a centre hovers on a
boundary or two near-equal centres trade places; every worker serves the group's names."""

from __future__ import annotations

import numpy as np

from online_models.segments.centres import SegmentShare, merge_segments, settle_segments
from online_models.segments.kmeans import Segmenter
from online_models.segments.names import segment_names
from tests.unit.crowds import T0

# Centres as (ordered, recency, frequency, monetary, engagement), as a shop's k-means holds them
# in spring: a lapsing segment, the occasional buyers, browsers, the loyal and the regulars.
SPRING = np.array(
    [
        [1.0, 0.79, 0.20, 0.60, 0.0],
        [1.0, 0.37, 0.22, 0.63, 0.0],
        [0.0, 0.91, 0.00, 0.00, 0.0],
        [1.0, 0.05, 0.64, 0.98, 0.0],
        [1.0, 0.10, 0.32, 0.71, 0.0],
    ]
)


def named_over(steps: list[np.ndarray]) -> list[dict[int, str]]:
    """The names at each step, each named from the step before's, as the group's model does."""
    names: dict[int, str] = {}
    seen = []
    for centres in steps:
        names = segment_names(centres, names)
        seen.append(names)
    return seen


def test_a_segment_going_lapsing_renames_itself_not_the_segments_it_leaves() -> None:
    lapsed = SPRING.copy()
    lapsed[1, 1] = 0.5  # the occasional buyers' centre, silent for three months now

    before, after = named_over([SPRING, lapsed])

    assert before == {
        0: "hibernating",
        1: "occasional buyers",
        2: "inactive browsers",
        3: "loyal big spenders",
        4: "regulars",
    }
    assert after[1] == "lapsing big spenders"
    # Nothing about the regulars changed: they are not renamed "occasional buyers" because
    # the segment below them left the active ones.
    assert {i: after[i] for i in (0, 2, 3, 4)} == {i: before[i] for i in (0, 2, 3, 4)}


def test_a_centre_hovering_on_a_boundary_keeps_its_name_until_it_clearly_crosses() -> None:
    steps = []
    for recency in (0.749, 0.756, 0.748, 0.757, 0.75, 0.9):
        centres = SPRING.copy()
        centres[0, 1] = recency
        steps.append(centres)

    seen = named_over(steps)

    assert [names[0] for names in seen] == ["lapsing big spenders"] * 5 + ["hibernating"]


def test_two_near_equal_centres_trading_places_keep_their_names() -> None:
    close = SPRING.copy()
    close[4, 2:4] = [0.65, 0.98]  # the regulars now as loyal as the loyal, a hair ahead
    overtaken = SPRING.copy()
    overtaken[4, 2:4] = [0.75, 1.10]  # and now clearly ahead

    before, near, far = named_over([SPRING, close, overtaken])

    assert near == before
    assert (far[3], far[4]) == ("regulars", "loyal big spenders")


def test_when_one_of_two_alike_segments_leaves_the_other_keeps_its_number() -> None:
    alike = np.vstack([SPRING, [1.0, 0.12, 0.30, 0.68, 0.0], [1.0, 0.14, 0.27, 0.66, 0.0]])
    left = alike.copy()
    left[5, 1] = 0.6  # the first of them goes quiet

    before, after = named_over([alike, left])

    assert (before[5], before[6]) == ("promising", "promising 2")
    assert after[6] == "promising 2"
    assert {i: after[i] for i in (0, 2, 3, 4)} == {i: before[i] for i in (0, 2, 3, 4)}


def _share(centres: np.ndarray) -> SegmentShare:
    return SegmentShare(centres * 100.0, np.full(len(centres), 100.0), time=T0, points=500)


def _worker(group: SegmentShare) -> Segmenter:
    worker = Segmenter(n_segments=len(SPRING))
    worker.shared = True
    worker.apply(group)
    return worker


def test_every_worker_serves_the_group_models_names_even_one_that_joined_late() -> None:
    share = _share(SPRING)
    settle_segments(share, max_centres=len(SPRING))
    early = _worker(share)
    lapsed = SPRING.copy()
    lapsed[1, 1] = 0.5
    # The next version: the group's model merges a delta that moves centre 1 on, then names.
    delta = SegmentShare.empty(len(SPRING))
    delta.time, delta.sums[1], delta.weights[1] = T0, lapsed[1] * 1e6, 1e6
    moved = merge_segments(share, delta, halflife_days=30.0, max_centres=len(SPRING))
    settle_segments(moved, max_centres=len(SPRING))
    np.testing.assert_allclose(moved.centers()[1], lapsed[1], atol=1e-3)
    meta, arrays = moved.to_arrays()
    published = SegmentShare.from_arrays(meta, arrays, max_centres=len(SPRING))
    early.apply(published)
    late = _worker(published)  # never saw the version before

    served = [[w.describe(s) for s in range(len(SPRING))] for w in (early, late)]

    assert served[0] == served[1]
    assert served[0][4] == "regulars"
    assert served[0][1] == "lapsing big spenders"


def test_a_record_without_names_is_named_from_its_centres() -> None:
    """A merger from before names were published: its workers name the centres themselves."""
    meta, arrays = _share(SPRING).to_arrays()
    meta.pop("names", None)

    worker = _worker(SegmentShare.from_arrays(meta, arrays, max_centres=len(SPRING)))

    fresh = segment_names(SPRING)
    assert [worker.describe(s) for s in range(len(SPRING))] == [fresh[s] for s in range(5)]
