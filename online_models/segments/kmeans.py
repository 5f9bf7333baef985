"""Customer segmentation: online k-means over decayed sums and counts, with ids that stay put."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from online_models.customer.activity import DAY
from online_models.customer.profile import OUTLIER_FEATURES, SEGMENT_FEATURES
from online_models.segments.centres import SegmentShare, merge_segments, propose_group
from online_models.segments.groups import founders_fence, groups_of, share_names
from online_models.segments.names import outlier_vector, segment_vector
from online_models.segments.outliers import (
    OUTLIER_FENCE_FLOOR,
    Placement,
    Placements,
    add_distances,
    distance_bin,
    distance_rank,
    distance_ranks,
    outlier_fence,
    unusual_features,
)

__all__ = ["OUTLIER_FENCE_FLOOR", "Segmenter"]

logger = logging.getLogger(__name__)

_SEGMENT_COLUMNS = len(SEGMENT_FEATURES)
# The outlier fence is read again from the distance histogram after this many points learned
# (and at every group version): its median and MAD move by a point's share of the weight.
_FENCE_EVERY = 16


class Segmenter:
    """Online k-means over RFM and engagement features on fixed scales (Flink ML's online
    k-means, with event-time decay): each centre is the decayed mean of the points assigned
    to it, kept as sums and weights, so what two workers learned merges exactly.

    Centres are seeded from the first points at least ``min_seed_distance`` from every
    centre, instead of River's random draw (random centres far from the data never win a
    point and stay empty); centre ``i`` stays segment ``i``, and a point nudges only its
    nearest centre, by its share of that centre's weight. A point ``d`` days older than the
    newest weighs ``2**(-d / halflife_days)``, so centres follow where customers are now.

    A segmenter of a worker in a group (``shared = True``) never seeds a centre itself: it
    proposes candidates in its :meth:`delta`, and the group's model creates centres, so a
    segment id names the same segment on every worker.

    k-means puts every customer in a segment; :meth:`place_one` also says how far from it they
    sit, in units of the segment's own spread, over the segment features and the basket
    (:mod:`online_models.segments.spread`). Their ``outlier_score`` is the percentile rank of
    that distance among the distances of the points learned (decayed as the centres are), and
    they are an outlier beyond ``outlier_mads`` robust standard deviations of the log distances
    above their median (:func:`online_models.segments.outliers.distance_fence`; once the histogram
    holds 100 points' weight).

    Customers alike far from their segment make a segment of their own
    (:mod:`online_models.segments.groups`; ``group_share``, ``group_mads``,
    ``group_tightness``), added after the ordinary ones (by the group's model, for a shared
    segmenter); its customers are placed in it, flagged if beyond the fence, as anyone. A
    segment whose spread holds under 5 points' weight cannot tell who is unusual in it: the
    ``outlier_score`` of its customers is NaN (unknown; absent from the score).

    >>> segmenter = Segmenter(n_segments=2)
    >>> low = {"monetary": 0.1, "frequency": 0.1}
    >>> high = {"monetary": 0.9, "frequency": 0.8}
    >>> segmenter.learn_predict_one(low), segmenter.learn_predict_one(high)
    (0, 1)
    >>> segmenter.predict_one({"monetary": 0.85, "frequency": 0.9})
    1
    """

    def __init__(
        self,
        n_segments: int = 6,
        halflife_days: float = 1.0,
        min_seed_distance: float = 0.15,
        outlier_mads: float = 2.5,
        group_share: float = 0.0,
        group_mads: float = 1.5,
        group_tightness: float = 0.5,
    ) -> None:
        if (
            n_segments < 1
            or not halflife_days > 0
            or not outlier_mads > 0
            or not group_mads >= 0
            or not group_tightness > 0
        ):
            msg = (
                "n_segments must be >= 1, halflife_days, outlier_mads and group_tightness > 0 "
                f"and group_mads >= 0, got {n_segments}, {halflife_days}, {outlier_mads}, "
                f"{group_tightness}, {group_mads}"
            )
            raise ValueError(msg)
        self.n_segments = n_segments
        self.halflife_days = halflife_days
        self.min_seed_distance = min_seed_distance
        self.outlier_mads = outlier_mads
        self.group_share = group_share
        self.group_mads = group_mads
        self.group_tightness = group_tightness
        #: In a group: centres come from the group's model, never from this segmenter alone.
        self.shared = False
        self._live = SegmentShare.empty()
        self._unsent = SegmentShare.empty()
        self._centers = np.zeros((0, len(SEGMENT_FEATURES)))
        self._names: dict[int, str] = {}
        self._names_at = -1
        self._fence: float | None = None
        self._founders_fence: float | None = None
        self._fence_at = self._groups_at = -_FENCE_EVERY

    @property
    def learned(self) -> int:
        """Points learned so far (by the whole group, for a shared segmenter)."""
        return self._live.points

    @property
    def ready(self) -> bool:
        """Whether every centre has been seeded from data."""
        return len(self._centers) >= self.n_segments

    def centers(self) -> dict[int, dict[str, float]]:
        """Each segment's centre (only seeded ones)."""
        return {
            i: dict(zip(SEGMENT_FEATURES, row.tolist(), strict=True))
            for i, row in enumerate(self._centers)
        }

    def predict_one(self, x: Mapping[str, float]) -> int:
        """The segment nearest to ``x`` among seeded centres (0 before any)."""
        nearest, _ = self._nearest(segment_vector(x))
        return nearest

    def place_one(self, x: Mapping[str, float]) -> Placement:
        """The segment nearest to ``x``, its outlier score and whether it is an outlier,
        learning nothing.

        >>> segmenter = Segmenter(n_segments=1)
        >>> for n in range(200):
        ...     segmenter.learn_one({"monetary": 0.5 + 0.01 * (n % 50), "basket_spend": 0.8})
        >>> segmenter.place_one({"monetary": 0.7, "basket_spend": 0.8}).outlier
        False
        >>> segmenter.place_one({"monetary": 0.7, "basket_spend": 1.4})
        Placement(segment=0, outlier_score=1.0, outlier=True)
        """
        vector = outlier_vector(x)
        nearest, _ = self._nearest(vector[:_SEGMENT_COLUMNS])
        standardised = self._standardised(nearest, vector)
        placement = self._placement(nearest, standardised)
        return placement._replace(segment=self._segment_of(placement, vector, standardised))

    def learn_one(self, x: Mapping[str, float], time: float | None = None) -> None:
        """Learn the point ``x`` seen at event time ``time`` (None: as of the newest)."""
        self._learn_point(outlier_vector(x), time)

    def learn_predict_one(self, x: Mapping[str, float], time: float | None = None) -> int:
        """Learn ``x`` (at event time ``time``) and return its segment."""
        return self._learn_point(outlier_vector(x), time).segment

    def learn_place_one(self, x: Mapping[str, float], time: float | None = None) -> Placement:
        """:meth:`place_one` of ``x`` with the model as it is, then ``x`` learned."""
        return self._learn_point(outlier_vector(x), time)

    def learn_predict_many(self, points: np.ndarray, times: np.ndarray) -> np.ndarray:
        """The segments of ``points`` (rows in ``OUTLIER_FEATURES`` order, seen at event
        ``times``), then the points learned as one mini-batch (:meth:`learn_place_many`).

        >>> segmenter = Segmenter(n_segments=2)
        >>> segmenter.learn_predict_many(np.array([[0.1] * 7, [0.9] * 7, [0.8] * 7]),
        ...                              np.zeros(3)).tolist()
        [0, 1, 1]
        """
        return self.learn_place_many(points, times).segments

    def learn_place_many(self, points: np.ndarray, times: np.ndarray) -> Placements:
        """The placements of ``points`` (rows in ``OUTLIER_FEATURES`` order: the segment
        features, then the basket; seen at event ``times``), then the points learned as one
        mini-batch, as Flink ML's online k-means learns a batch: every point is assigned and
        ranked with the centres, spreads and distances as they were before it, and each
        nudges its nearest centre. While centres are still being seeded, points are learned
        one by one (:meth:`learn_place_one`), as seeding depends on the order."""
        if not self.ready:
            return Placements.of(
                [self._learn_point(p, float(t)) for p, t in zip(points, times, strict=True)]
            )
        self._advance(float(times.max()))
        weights = 0.5 ** ((self._live.time - times) / (self.halflife_days * DAY))
        segment_points = points[:, :_SEGMENT_COLUMNS]
        ordinary = self._centers[: self.n_segments]
        squared = ((ordinary[None, :, :] - segment_points[:, None, :]) ** 2).sum(axis=2)
        nearest = squared.argmin(axis=1)
        distances = self._live.spread.distances(nearest, points)
        # NaN: the segment is too young to tell (unknown), not typical.
        scores = np.where(
            np.isnan(distances), np.nan, distance_ranks(self._live.distances, distances)
        )
        fence = self.outlier_fence()
        outliers = np.zeros(len(points), bool) if fence is None else distances > fence
        groups = self._groups_of(points, distances)
        alone = outliers & (groups < 0)
        # The far customers' grid, only where groups are on (a np.unique; a shared segmenter
        # never reads its live one, made again from the group's at every version).
        founders = self._founders(distances) & (groups < 0)
        nearest = np.where(groups >= 0, self.n_segments + groups, nearest)
        # Trimmed: an outlier alone moves no centre and no spread (a group of them would
        # widen their segment until it held them); it adds its distance, and its place to
        # the outliers' grid. Per centre, once for both shares: the weight of the points
        # kept, their weighted outlier features and weighted squares.
        kept = weights * ~alone
        weighted = kept[:, None] * points
        totals = _totals_by(
            nearest, np.column_stack([kept, weighted, weighted * points]), len(self._centers)
        )
        features = points.shape[1]
        added = totals[:, 0]
        sums, squares = totals[:, 1 : 1 + features], totals[:, 1 + features :]
        known = ~np.isnan(distances)
        for share in (self._live, self._unsent):
            share.points += len(points)
            share.sums += sums[:, :_SEGMENT_COLUMNS]
            share.weights += added
            share.spread.add_totals(added, sums, squares)
            share.spread.add_histograms(nearest[~alone], weights[~alone], points[~alone])
            add_distances(share.distances, distances[known], weights[known])
            if share is self._unsent or not self.shared:
                share.cells.add(points[founders], weights[founders])
        moved = np.unique(nearest[~alone])
        moved = moved[self._live.weights[moved] > 0]
        self._centers[moved] = self._live.sums[moved] / self._live.weights[moved, None]
        self._propose_group()
        return Placements(nearest, scores, outliers)

    def outlier_fence(self) -> float | None:
        """The distance (in units of a segment's spread) beyond which a customer is an
        outlier: ``outlier_mads`` robust standard deviations of the learned points' log
        distances above their median; None before 100 points' weight."""
        if self._live.points - self._fence_at >= _FENCE_EVERY:
            self._fence = self._fence_at_mads(self.outlier_mads)
            if self.group_share > 0.0 or self._live.groups:
                self._founders_fence = founders_fence(self._live.distances, self.group_mads)
            self._fence_at = self._live.points
        return self._fence

    def _founders(self, distances: np.ndarray) -> np.ndarray:
        """Whether each of ``distances`` (to a point's segment) is beyond the founders' fence
        (:func:`~online_models.segments.groups.founders_fence`; never while groups are off)."""
        self.outlier_fence()
        if self.group_share <= 0.0 or self._founders_fence is None:
            return np.zeros(len(distances), dtype=bool)
        return np.nan_to_num(distances) > self._founders_fence

    def outlier_fence_score(self, mads: float | None = None) -> float | None:
        """The ``outlier_score`` at the fence for ``mads`` (default ``outlier_mads``): a
        customer scoring above it is an outlier at that many MADs; None before 100 points'
        weight."""
        fence = self.outlier_fence() if mads is None else self._fence_at_mads(mads)
        return None if fence is None else distance_rank(self._live.distances, fence)

    def _fence_at_mads(self, mads: float) -> float | None:
        return outlier_fence(self._live.distances, mads)

    def unusual_features(
        self, x: Mapping[str, float], quantities: Mapping[str, float]
    ) -> list[dict[str, Any]]:
        """The features making ``x`` far from its segment, in units of the segment's spread
        (see :func:`online_models.segments.outliers.unusual_features`)."""
        vector = outlier_vector(x)
        nearest, _ = self._nearest(vector[:_SEGMENT_COLUMNS])
        if not len(self._centers):
            return []
        means, deviations = self._live.spread.deviations(nearest, vector)
        if np.isnan(deviations).any():
            return []
        return unusual_features(
            vector, means, OUTLIER_FEATURES, quantities, self.describe(nearest), deviations
        )

    def current(self, segment: int, generation: int = 0) -> bool:
        """Whether ``segment``, adopted under ``generation`` (:meth:`generation`), still names
        that segment: an ordinary k-means segment always does, a group segment while it holds
        weight under the same generation (a dissolved group's row is empty until another group
        is founded in it, under its next generation), so its members are placed again, with no
        vote and no alert for a segment that went, nor one named after the next group."""
        if segment < self.n_segments:
            return True
        return (
            segment < len(self._live.weights)
            and bool(self._live.spread.weights[segment] > 0)
            and self.generation(segment) == generation
        )

    def generation(self, segment: int) -> int:
        """The generation of ``segment``'s row: how many groups were dissolved in it (0 for
        an ordinary segment)."""
        offset = segment - (len(self._live.weights) - self._live.groups)
        if segment < self.n_segments or not 0 <= offset < len(self._live.generations):
            return 0
        return int(self._live.generations[offset])

    def _standardised(self, nearest: int, vector: np.ndarray) -> float:
        """The distance of ``vector`` to segment ``nearest`` in units of its spread (NaN
        before it has one, or before any segment)."""
        if nearest >= len(self._live.spread.weights):
            return math.nan
        return float(self._live.spread.distances(np.array([nearest]), vector[None, :])[0])

    def _placement(self, nearest: int, distance: float) -> Placement:
        if math.isnan(distance):
            return Placement(nearest, math.nan, False)
        score = distance_rank(self._live.distances, distance)
        fence = self.outlier_fence()
        return Placement(nearest, score, fence is not None and distance > fence)

    def _learn_point(self, vector: np.ndarray, time: float | None) -> Placement:
        weight = self._advance(time)
        point = vector[:_SEGMENT_COLUMNS]
        nearest, distance = self._nearest(point)
        standardised = self._standardised(nearest, vector)
        placement = self._placement(nearest, standardised)
        placement = placement._replace(segment=self._segment_of(placement, vector, standardised))
        self._live.points += 1
        self._unsent.points += 1
        if len(self._centers) < self.n_segments and distance >= self.min_seed_distance:
            if not self.shared:
                return Placement(self._seed(vector, weight), math.nan, False)
            if self._proposable(point):
                self._unsent.candidates = np.vstack([self._unsent.candidates, point])
        if not len(self._centers):
            return placement
        segment = placement.segment
        alone = placement.outlier and segment == nearest
        fence = self._founders_fence if self.group_share > 0.0 else None
        founder = segment == nearest and fence is not None and standardised > fence
        for share in (self._live, self._unsent):
            if not math.isnan(standardised):
                share.distances[distance_bin(standardised)] += weight
            if founder and (share is self._unsent or not self.shared):
                share.cells.add(vector[None, :], np.array([weight]))
            if alone:  # trimmed, as in learn_place_many
                continue
            share.sums[segment] += weight * point
            share.weights[segment] += weight
            share.spread.add_one(segment, weight, vector)
        if not alone:
            self._centers[segment] = self._live.sums[segment] / self._live.weights[segment]
        self._propose_group()
        return placement

    def _groups_of(self, points: np.ndarray, distances: np.ndarray) -> np.ndarray:
        """The group segment each of ``points`` belongs to (:func:`groups_of`), -1 for none."""
        fence, due = self._founders_fence, self._live.points - self._fence_at >= _FENCE_EVERY
        if due and self._live.groups:  # read again, not kept: placing learns nothing
            fence = founders_fence(self._live.distances, self.group_mads)
        return groups_of(self._live, points, distances, fence)

    def _segment_of(self, placement: Placement, vector: np.ndarray, distance: float) -> int:
        """The segment of a point placed at ``placement``, ``distance`` from it: a group's if
        it belongs to one, else its nearest."""
        group = self._groups_of(vector[None, :], np.array([distance]))[0]
        return placement.segment if group < 0 else self.n_segments + int(group)

    def in_group(self, segment: int) -> bool:
        """Whether ``segment`` is a group segment: outliers alike, apart from the rest."""
        return segment >= self.n_segments

    def _propose_group(self) -> None:
        """A segmenter alone makes (and dissolves) group segments itself, as often as it reads
        the fence again (a shared one leaves them to the group's model)."""
        if self.shared or len(self._centers) < self.n_segments:
            return
        if self._live.points - self._groups_at < _FENCE_EVERY:
            return
        self._groups_at = self._live.points
        if not propose_group(
            self._live, self.group_share, mads=self.group_mads, tightness=self.group_tightness
        ):
            return
        self._unsent = merge_segments(
            self._unsent, SegmentShare.empty(len(self._live.weights)),
            halflife_days=self.halflife_days,
        )  # fmt: skip
        self._unsent.groups = self._live.groups
        self._unsent.forget_stale(len(self._live.weights) - self._live.groups,
                                  self._live.generations)  # fmt: skip
        self._centers = self._live.centers()
        self._names = self.describe_all()
        self._names_at = self.learned

    def delta(self) -> SegmentShare:
        """What this segmenter learned since its last delta (and the centres it proposes)."""
        # Learned next under the generations known (in the delta: rows of dissolved ones drop).
        delta, self._unsent = self._unsent, self._live.empty_like()
        return delta

    def apply(self, group: SegmentShare, pending: Sequence[SegmentShare] = ()) -> None:
        """Score with the group's centres plus what the group has not merged yet of this
        segmenter's: its ``pending`` deltas and what it learned since the last one."""
        # The group's generations hold: a row this worker has under another one is dropped (a
        # group dissolved since, or a merger from before generations: its rows read as 0).
        ordinary = len(group.weights) - group.groups
        live = group
        for share in (*pending, self._unsent):
            if share is not self._unsent:
                share = share.decayed(share.time, self.halflife_days)  # a copy
            share.follow(ordinary, group.generations)
            live = merge_segments(live, share, halflife_days=self.halflife_days)
        live.candidates = np.zeros((0, len(SEGMENT_FEATURES)))
        self._live = live
        # What is unsent stays as of the live time: later points weigh against that time.
        self._unsent = self._unsent.decayed(live.time, self.halflife_days)
        if len(self._unsent.weights) < len(live.weights):
            self._unsent = merge_segments(
                self._unsent,
                SegmentShare.empty(len(live.weights)),
                halflife_days=self.halflife_days,
            )
        # A group dissolved since: what is unsent of it was dropped above, not sent.
        self._unsent.groups = live.groups
        self._unsent.follow(len(live.weights) - live.groups, live.generations)
        self._centers = live.centers()
        # The group's model's names (from a merger before them: the group's centres'):
        self._names = dict(group.names) if group.names else share_names(group)
        self._names_at = live.points
        self._fence_at = -_FENCE_EVERY

    def describe(self, segment: int) -> str:
        """The segment in CRM words (names are refreshed as the centres move)."""
        # Centres move by a point's share of their weight: renaming every few dozen points is
        # plenty. A shared segmenter names them as it applies a version (a dissolved group: none).
        groups = self._live.spread.weights[self.n_segments :]
        dissolved = int((groups <= 0.0).sum()) if len(groups) else 0  # no count without groups
        named = len(self._centers) - dissolved
        stale = len(self._names) != named or self.learned - self._names_at >= 32
        if stale and not self.shared:
            self._names = self.describe_all()
            self._names_at = self.learned
        return self._names.get(segment, "new customers")

    def describe_all(self) -> dict[int, str]:
        """A distinct CRM name for every seeded segment, from where its centre sits and the
        names it had (see :func:`segment_names`), and for every group segment from its
        features (:func:`group_name`)."""
        return share_names(self._live, self._names)

    def _advance(self, time: float | None) -> float:
        """Decay to the later event time ``time``; the weight of a point seen at ``time``."""
        if time is None:
            return 1.0
        if time > self._live.time:
            self._live = self._live.decayed(time, self.halflife_days)
            self._unsent = self._unsent.decayed(time, self.halflife_days)
            return 1.0
        return float(0.5 ** ((self._live.time - time) / (self.halflife_days * DAY)))

    def _nearest(self, point: np.ndarray) -> tuple[int, float]:
        if not len(self._centers):
            return 0, math.inf
        distances = ((self._centers[: self.n_segments] - point) ** 2).sum(axis=1)
        nearest = int(distances.argmin())
        return nearest, math.sqrt(float(distances[nearest]))

    def _seed(self, vector: np.ndarray, weight: float) -> int:
        point = vector[:_SEGMENT_COLUMNS]
        for share in (self._live, self._unsent):
            share.sums = np.vstack([share.sums, weight * point])
            share.weights = np.append(share.weights, weight)
            share.spread = share.spread.padded(len(share.weights))
            share.spread.add_one(len(share.weights) - 1, weight, vector)
        self._centers = np.vstack([self._centers, point])
        return len(self._centers) - 1

    def _proposable(self, point: np.ndarray) -> bool:
        proposed = self._unsent.candidates
        if len(self._centers) + len(proposed) >= self.n_segments:
            return False
        if not len(proposed):
            return True
        return bool(np.sqrt(((proposed - point) ** 2).sum(axis=1)).min() >= self.min_seed_distance)


def _totals_by(groups: np.ndarray, rows: np.ndarray, count: int) -> np.ndarray:
    """The sums of ``rows`` by their group (0 to ``count`` - 1), each group's rows added in
    order: ``np.add.at`` into zeros, without its cost per row.

    >>> _totals_by(np.array([1, 0, 1]), np.array([[1.0], [2.0], [4.0]]), 3).ravel().tolist()
    [2.0, 5.0, 0.0]
    """
    order = np.argsort(groups, kind="stable")
    ordered = groups[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    totals = np.zeros((count, rows.shape[1]))
    totals[ordered[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    return totals
