"""The k-means segments' share of the group model: decayed centre sums and weights, merged."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from online_models.customer.activity import DAY
from online_models.customer.profile import OUTLIER_FEATURES, SEGMENT_FEATURES
from online_models.segments.groups import (
    GROUP_DISSOLVE_SHARE,
    GROUP_FADED_WEIGHT,
    GROUP_MIN_WEIGHT,
    MAX_GROUPS,
    OutlierCells,
    founders_fence,
    share_names,
)
from online_models.segments.outliers import (
    DISTANCE_BINS,
    empty_histogram,
)
from online_models.segments.spread import SPREAD_BINS, SegmentSpread

__all__ = ["SegmentShare", "merge_segments", "propose_group", "settle_segments"]

logger = logging.getLogger(__name__)

# The arrays with a row per centre (group segments' rows travel as "group_" + the name).
_ROWS = (
    "sums", "weights", "spread_weights", "spread_sums", "spread_squares", "spread_histograms",
)  # fmt: skip


@dataclass(slots=True)
class SegmentShare:
    """The segmenter's shared part, or what one worker learned since its last delta.

    Each centre is ``sums[i] / weights[i]``: the decayed sum and weight of the points assigned
    to it, both as of event time ``time`` (a point ``d`` days older weighs ``2**(-d /
    halflife)``). ``points`` counts points learned. ``candidates`` are points far from every
    centre that a delta proposes as new centres; only the group's model creates centres.
    ``spread`` holds the decayed moments of each centre's points' outlier features
    (:mod:`online_models.segments.spread`) and ``distances`` the decayed histogram of the
    learned points' distances to their segment in units of that spread
    (:mod:`online_models.segments.outliers`), which outlier scores are ranked against.
    The last ``groups`` centres are group segments, made of outliers alike, and ``cells`` the
    decayed grid of the outliers in no group (:mod:`online_models.segments.groups`).
    ``generations`` counts, per group row, the groups dissolved in it: what a share learned in
    a row under an older generation (a dissolved group's points) is dropped when it meets a
    newer one (:meth:`forget_stale`), so a worker's late delta never revives a dissolved group
    nor pours its points into the next group founded in that row.
    ``names`` are the group's model's names of the centres (:func:`settle_segments`), each
    named from the last ones, which every worker serves as they are; a delta carries none.
    """

    sums: np.ndarray  # (centres, features)
    weights: np.ndarray  # (centres,)
    time: float = -math.inf
    points: int = 0
    candidates: np.ndarray = field(default_factory=lambda: np.zeros((0, len(SEGMENT_FEATURES))))
    distances: np.ndarray = field(default_factory=empty_histogram)
    spread: SegmentSpread = field(default_factory=SegmentSpread.empty)
    #: How many of the last centres are group segments (after the ordinary ones).
    groups: int = 0
    cells: OutlierCells = field(default_factory=OutlierCells.empty)
    #: Per group row (``groups`` of them), how many groups were dissolved in it.
    generations: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: Each named centre's CRM name, by row (none for a dissolved group).
    names: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A share made with centres but no spread has empty spreads for them.
        if len(self.spread.weights) < len(self.weights):
            self.spread = self.spread.padded(len(self.weights))
        if len(self.generations) != self.groups:
            self.generations = _padded(self.generations, self.groups)

    @classmethod
    def empty(cls, centres: int = 0, features: int = len(SEGMENT_FEATURES)) -> SegmentShare:
        """No centre (or ``centres`` empty ones) and no point."""
        return cls(
            np.zeros((centres, features)), np.zeros(centres), spread=SegmentSpread.empty(centres)
        )

    def decayed(self, time: float, halflife_days: float) -> SegmentShare:
        """This share as of the later event time ``time`` (a copy)."""
        if time <= self.time or not math.isfinite(self.time):
            return SegmentShare(
                self.sums.copy(), self.weights.copy(), max(self.time, time), self.points,
                self.candidates.copy(), self.distances.copy(), self.spread.copy(), self.groups,
                self.cells.copy(), self.generations.copy(), dict(self.names),
            )  # fmt: skip
        factor = 0.5 ** ((time - self.time) / (halflife_days * DAY))
        return SegmentShare(
            self.sums * factor, self.weights * factor, time, self.points, self.candidates.copy(),
            self.distances * factor, self.spread.scaled(factor), self.groups,
            self.cells.scaled(factor), self.generations.copy(), dict(self.names),
        )  # fmt: skip

    def empty_like(self) -> SegmentShare:
        """No point, with this share's centres (empty), groups and generations: what a worker
        learns next, under the generations it knows."""
        share = SegmentShare.empty(len(self.weights), self.sums.shape[1])
        share.time, share.groups = self.time, self.groups
        share.generations = self.generations.copy()
        return share

    def forget_stale(self, ordinary: int, generations: np.ndarray) -> None:
        """In place: take ``generations`` (per group row, rows from ``ordinary`` on, none
        older than this share's), emptying every group row this share learned under an older
        generation: that group was dissolved since."""
        self._take_generations(ordinary, generations, np.less)

    def follow(self, ordinary: int, generations: np.ndarray) -> None:
        """In place: take the group's ``generations`` (per group row, rows from ``ordinary``
        on) whatever this share's, emptying every group row this share learned under another
        generation: a worker's view of the group's model (its pending deltas and what it has
        not sent), where the published version is the truth, even one of a merger from before
        generations (read as generation 0 for every row)."""
        self._take_generations(ordinary, generations, np.not_equal)

    def _take_generations(
        self, ordinary: int, generations: np.ndarray, stale: Callable[..., np.ndarray]
    ) -> None:
        """Take ``generations``, emptying the group rows whose own generation is ``stale``
        against theirs."""
        own = _padded(self.generations, len(generations))
        for offset in np.flatnonzero(stale(own, generations)).tolist():
            if ordinary + offset < len(self.weights):
                self._clear_row(ordinary + offset)
        self.generations = generations.copy()

    def group_means(self) -> np.ndarray:
        """Each group segment's mean outlier features (rows; NaN for one without weight: a
        dissolved group)."""
        start = len(self.weights) - self.groups
        weights = self.spread.weights[start:, None]
        sums = self.spread.sums[start:]
        return np.divide(sums, weights, out=np.full_like(sums, np.nan), where=weights > 0)

    def add_group(self, mean: np.ndarray) -> None:
        """A new group segment at ``mean`` (outlier features), with the weight of one point:
        in the place of a dissolved group (:meth:`dissolve_group`) if there is one, else after
        every centre; the grid forgets the outliers it is made of."""
        start = len(self.weights) - self.groups
        free = np.flatnonzero(self.spread.weights[start:] <= 0.0)
        if len(free):
            row = start + int(free[0])
        else:
            self.sums = np.vstack([self.sums, np.zeros(self.sums.shape[1])])
            self.weights = np.append(self.weights, 0.0)
            self.spread = self.spread.padded(len(self.weights))
            self.groups += 1
            self.generations = _padded(self.generations, self.groups)
            row = len(self.weights) - 1
        self.sums[row] = mean[: self.sums.shape[1]]
        self.weights[row] = 1.0
        self.spread.add_one(row, 1.0, mean)
        self.cells = self.cells.without(mean)

    def dissolve_group(self, offset: int) -> None:
        """Forget group segment ``offset`` (0 for the first): no weight, so no customer is
        near it, and its place is free for the next group, under the row's next generation."""
        self._clear_row(len(self.weights) - self.groups + offset)
        self.generations[offset] += 1

    def _clear_row(self, row: int) -> None:
        """Row ``row`` with no weight, no sums and no spread."""
        self.sums[row] = 0.0
        self.weights[row] = 0.0
        self.spread.clear(row)

    def centers(self) -> np.ndarray:
        """Each centre's coordinates (a centre that lost all weight keeps its last place
        as 0 coordinates)."""
        weights = self.weights[:, None]
        return np.divide(self.sums, weights, out=np.zeros_like(self.sums), where=weights > 0)

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Metadata and arrays for a model record."""
        meta: dict[str, Any] = {
            "time": self.time if math.isfinite(self.time) else None,
            "points": self.points,
        }
        # Group segments travel apart ("group_*"): a worker from before them reads the
        # ordinary centres alone, as many as it allows.
        ordinary = len(self.weights) - self.groups
        rows = {
            "sums": self.sums,
            "weights": self.weights,
            "spread_weights": self.spread.weights,
            "spread_sums": self.spread.sums,
            "spread_squares": self.spread.squares,
            # Older workers ignore it and measure with the moments above.
            "spread_histograms": self.spread.histograms,
        }
        arrays = {name: rows[name][:ordinary] for name in rows}
        arrays |= {f"group_{name}": rows[name][ordinary:] for name in rows}
        arrays |= {
            "candidates": self.candidates,
            # Not "distances": workers from before standardised distances read a missing
            # histogram as empty, where they would refuse one of another size.
            "standardised_distances": self.distances,
            # Records from before generations (0.3.0) read as generation 0.
            "group_generations": self.generations,
            **self.cells.to_arrays(),
        }
        if self.names:
            # Older workers ignore them and name the centres themselves.
            meta["names"] = [self.names.get(row, "") for row in range(len(self.weights))]
        return meta, arrays

    @classmethod
    def from_arrays(
        cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], *, max_centres: int
    ) -> SegmentShare:
        """The share a model record carries; ValueError if it does not fit the segmenter."""
        groups = len(arrays["group_weights"]) if "group_weights" in arrays else 0
        generations = arrays.get("group_generations", np.zeros(groups, dtype=np.int64))
        if groups:
            arrays = {
                **arrays,
                **{
                    name: np.concatenate([arrays[name], arrays[f"group_{name}"]])
                    for name in _ROWS
                    if name in arrays and f"group_{name}" in arrays
                },
            }
        sums, weights, candidates = arrays["sums"], arrays["weights"], arrays["candidates"]
        # Records from before outlier scores carry no distances, and records from before
        # distances were standardised plain ones ("distances") and no spread: both start
        # empty.
        distances = arrays.get("standardised_distances", empty_histogram())
        if "spread_weights" in arrays:
            spread = SegmentSpread(
                arrays["spread_weights"].astype(float),
                arrays["spread_sums"].astype(float),
                arrays["spread_squares"].astype(float),
                # Records from before robust spreads: histograms start empty.
                arrays.get(
                    "spread_histograms",
                    np.zeros((len(weights), len(OUTLIER_FEATURES), SPREAD_BINS)),
                ).astype(float),
            )
        else:
            spread = SegmentSpread.empty(len(weights))
        features = len(SEGMENT_FEATURES)
        if (
            sums.ndim != 2
            or sums.shape[1] != features
            or sums.shape[0] > max_centres + MAX_GROUPS
            or groups > MAX_GROUPS
            or weights.shape != (sums.shape[0],)
            or candidates.ndim != 2
            or candidates.shape[1] != features
            or distances.shape != (DISTANCE_BINS,)
            or not (np.isfinite(sums).all() and np.isfinite(weights).all())
            or not np.isfinite(distances).all()
            or (weights < 0).any()
            or (distances < 0).any()
        ):
            msg = (
                f"segment share of shapes {sums.shape}, {weights.shape}, {candidates.shape}, "
                f"{distances.shape} does not fit {max_centres} centres of {features} features "
                f"and {DISTANCE_BINS} distance bins"
            )
            raise ValueError(msg)
        if (
            generations.dtype.kind not in "iu"
            or generations.shape != (groups,)
            or (generations < 0).any()
        ):
            msg = (
                f"group_generations {generations.dtype} of shape {generations.shape} are not "
                f"a whole number >= 0 for each of the {groups} group rows"
            )
            raise ValueError(msg)
        spread.check(len(weights))
        names = meta.get("names", [])
        named = [name for name in names if name] if isinstance(names, list) else []
        if (
            not isinstance(names, list)
            or not all(isinstance(name, str) for name in names)
            or 0 < len(names) < len(weights)
            or len(set(named)) != len(named)
        ):
            msg = (
                f"segment names {names!r} are not one distinct name (or '') for each of the "
                f"{len(weights)} rows"
            )
            raise ValueError(msg)
        # Read without its group rows (arrays of a shape from before groups), a record's
        # names name more rows than it holds: the first are its ordinary rows'.
        names = names[: len(weights)]
        time = meta.get("time")
        return cls(
            sums.astype(float),
            weights.astype(float),
            -math.inf if time is None else float(time),
            int(meta.get("points", 0)),
            candidates.astype(float),
            distances.astype(float),
            spread,
            groups,
            OutlierCells.from_arrays(arrays),
            generations.astype(np.int64),
            {row: name for row, name in enumerate(names) if name},
        )


def merge_segments(
    a: SegmentShare,
    b: SegmentShare,
    *,
    halflife_days: float,
    max_centres: int = 0,
    min_seed_distance: float = 0.15,
) -> SegmentShare:
    """``a`` and ``b`` together: both decayed to the later time, sums and weights added per
    centre and distance histograms added (exact: the order of merging does not matter),
    points added.

    With ``max_centres`` (the group's model merging a delta), ``b``'s candidates become new
    centres, in order, while there are fewer than ``max_centres`` and each is at least
    ``min_seed_distance`` from every centre; otherwise candidates are carried along. Group
    segments are founded and dissolved apart from merging, once per version
    (:func:`settle_segments`).

    >>> a = SegmentShare(np.array([[1.0, 0, 0, 0, 0]]), np.array([1.0]), time=0.0, points=1)
    >>> b = SegmentShare(np.array([[3.0, 0, 0, 0, 0]]), np.array([1.0]), time=0.0, points=1)
    >>> float(merge_segments(a, b, halflife_days=30).centers()[0, 0])
    2.0
    """
    time = max(a.time, b.time)
    a, b = a.decayed(time, halflife_days), b.decayed(time, halflife_days)
    centres = max(len(a.weights), len(b.weights))
    # Per group row the newer generation; the side that learned under an older one (a
    # dissolved group's points) adds nothing to that row.
    groups = max(a.groups, b.groups)
    generations = np.maximum(_padded(a.generations, groups), _padded(b.generations, groups))
    for share in (a, b):
        share.forget_stale(centres - groups, generations)
    sums = np.zeros((centres, a.sums.shape[1]))
    weights = np.zeros(centres)
    for share in (a, b):
        sums[: len(share.weights)] += share.sums
        weights[: len(share.weights)] += share.weights
    merged = SegmentShare(
        sums, weights, time, a.points + b.points, distances=a.distances + b.distances,
        spread=a.spread.plus(b.spread).padded(centres), groups=groups,
        cells=a.cells.plus(b.cells), generations=generations, names=dict(a.names or b.names),
    )  # fmt: skip
    proposed = np.concatenate([a.candidates, b.candidates])
    if not max_centres:
        merged.candidates = proposed
        return merged
    for candidate in proposed:
        if len(merged.weights) >= max_centres:
            break
        centers = merged.centers()
        if (
            len(centers)
            and np.sqrt(((centers - candidate) ** 2).sum(axis=1)).min() < min_seed_distance
        ):
            continue
        merged.sums = np.vstack([merged.sums, candidate])
        merged.weights = np.append(merged.weights, 1.0)
    merged.spread = merged.spread.padded(len(merged.weights))
    return merged


def settle_segments(
    share: SegmentShare,
    *,
    max_centres: int,
    group_share: float = 0.0,
    group_mads: float = 1.5,
    group_tightness: float = 0.5,
) -> bool:
    """The group's model's review of ``share`` (in place), once per version after every
    delta of it is merged, never inside a merge (so the order deltas merge in does not
    matter): once all ``max_centres`` are seeded, groups are founded and dissolved
    (:func:`propose_group`); then every centre is named, from its last names
    (:func:`~online_models.segments.groups.share_names`), so that every worker serves the
    same names and a name sticks to its segment. Whether a group was founded or dissolved."""
    changed = len(share.weights) >= max_centres and propose_group(
        share, group_share, mads=group_mads, tightness=group_tightness
    )
    share.names = share_names(share, share.names)
    return changed


def propose_group(
    share: SegmentShare, group_share: float, *, mads: float = 1.5, tightness: float = 0.5
) -> bool:
    """Add a group segment to ``share`` (in place) where the grid of far customers holds
    ``group_share`` of the distances' weight in one place, unless it has :data:`MAX_GROUPS`;
    whether a group was added or dissolved.

    A place is a group only if its customers sit tight among themselves, their standard
    deviation at most ``tightness`` of their nearest segment's robust one (root mean square
    over the features: the tail of an ordinary segment spreads as wide as the segment does),
    and their mean is beyond the founders' fence (``mads`` robust standard deviations of the
    log distances above their median, at least one standard deviation) from every
    ordinary segment. A group whose mean has come well within that fence of an ordinary
    segment (:data:`~online_models.segments.groups.GROUP_DISSOLVE_SHARE` of it: hysteresis,
    so a group near the fence does not flap) is dissolved first
    (:meth:`SegmentShare.dissolve_group`): it is no longer apart. Only on evidence: a group
    whose distance cannot be measured (no ordinary segment has a spread yet) stays, and so
    does a group too young to judge (its spread under
    :data:`~online_models.segments.spread.SPREAD_MIN_WEIGHT`: it holds its founders alone). A review
    that dissolves a group founds none, so the dissolved row stays empty for at least one
    version (its members are placed again:
    :meth:`~online_models.segments.kmeans.Segmenter.current`).
    """
    if group_share <= 0.0:
        return False
    ordinary = len(share.weights) - share.groups
    weights = share.weights[ordinary:]
    faded = np.flatnonzero((weights > 0.0) & (weights < GROUP_FADED_WEIGHT)).tolist()
    for gone in faded:  # its customers went silent: the row is free for the next group
        share.dissolve_group(gone)
    if faded:
        return True
    least = max(group_share * float(share.distances.sum()), GROUP_MIN_WEIGHT)
    if not (share.spread.weights[ordinary:] > 0.0).any() and share.cells.weights.sum() < least:
        return False  # nothing to dissolve, too few far customers to found a group: cheap
    fence = founders_fence(share.distances, mads)
    if fence is None:
        return False

    def nearest(mean: np.ndarray) -> tuple[int, float]:
        """The ordinary segment nearest ``mean`` in units of its spread, and how near."""
        distances = share.spread.distances(np.arange(ordinary), np.tile(mean, (ordinary, 1)))
        if np.isnan(distances).all():
            return -1, math.nan
        segment = int(np.nanargmin(distances))
        return segment, float(distances[segment])

    dissolved = False
    young = share.spread.young()[ordinary:]
    for offset, mean in enumerate(share.group_means()):
        if young[offset]:
            continue  # too young to judge: its founders alone, as yet
        distance = math.nan if np.isnan(mean[0]) else nearest(mean)[1]
        if math.isfinite(distance) and distance < GROUP_DISSOLVE_SHARE * fence:
            share.dissolve_group(offset)
            dissolved = True
    if dissolved:
        return True
    free = (share.spread.weights[ordinary:] <= 0.0).any()
    if share.groups >= MAX_GROUPS and not free:
        return False

    def tight_and_apart(mean: np.ndarray, variance: np.ndarray) -> bool:
        segment, distance = nearest(mean)
        if not distance >= fence:
            return False
        deviations = share.spread.yardsticks()[1][segment]
        spread = float(np.sqrt((variance / deviations**2).mean()))
        return spread <= tightness

    means = share.group_means()
    mean = share.cells.densest(
        total=float(share.distances.sum()), share=group_share,
        avoid=means[~np.isnan(means[:, 0])], accept=tight_and_apart,
    )  # fmt: skip
    if mean is None:
        return False
    share.add_group(mean)
    return True


def _padded(generations: np.ndarray, groups: int) -> np.ndarray:
    """``generations`` for ``groups`` rows: rows it lacks at generation 0."""
    padded = np.zeros(groups, dtype=np.int64)
    padded[: min(groups, len(generations))] = generations[:groups]
    return padded
