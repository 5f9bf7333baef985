"""Far customers who sit together: a decayed grid of where they are, and the group segments
proposed from it.

k-means puts every customer in one of its ``n_segments`` segments, and a customer far from
theirs is an outlier (:mod:`online_models.segments.outliers`). Outliers alone stay outliers;
customers alike far from their segment are a group a CRM wants to see as one. Every point
in no group and beyond the *founders' fence* (``group_mads`` robust standard deviations of
everyone's log distances above their median: near the outlier fence, for many alike add the
evidence one alone lacks) adds its outlier features
(:data:`~online_models.customer.profile.OUTLIER_FEATURES`) to a cell of :data:`CELL_WIDTH` on
every feature, with the segmenter's decay (:class:`OutlierCells`: keys, weights and sums,
which add across workers like the centres). When a cell and its neighbours hold at least
``share`` of the weight of all points learned (and :data:`GROUP_MIN_WEIGHT`), sit tight among
themselves (their spread at most ``group_tightness`` of their nearest segment's, feature by
feature: the tail of an ordinary segment spreads as wide as the segment, a group of alike
customers does not) and their mean is beyond the founders' fence from every segment, the
group's model proposes their mean as a new segment, after the ordinary ones (existing ids
stay put), and names it from its features (:func:`group_name`). A customer within
:data:`GROUP_REACH` of a group's mean (root mean square over the features) and nearer to it,
in units of its spread, than to their own segment is placed in the group's segment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from online_models.customer.profile import OUTLIER_FEATURES
from online_models.segments.names import segment_names
from online_models.segments.outliers import distance_fence

if TYPE_CHECKING:
    from online_models.segments.centres import SegmentShare

__all__ = [
    "CELL_WIDTH",
    "FOUNDERS_FENCE_FLOOR",
    "GROUP_DISSOLVE_SHARE",
    "GROUP_FADED_WEIGHT",
    "GROUP_MIN_WEIGHT",
    "GROUP_REACH",
    "MAX_GROUPS",
    "OutlierCells",
    "founders_fence",
    "group_name",
    "groups_of",
    "in_group",
    "share_names",
]

logger = logging.getLogger(__name__)

#: The side of a grid cell, on every outlier feature (the features' scales run 0..1.5).
CELL_WIDTH = 0.25
#: How far from a group's mean a customer may sit and belong to it: the root mean square of
#: their differences over the outlier features.
GROUP_REACH = 0.1
#: The nearest the founders' fence comes, in a segment's standard deviations (root mean
#: square over the features): a founder is at least that far off, whatever the histogram's
#: shape (half the weight at one distance makes the MAD nought).
FOUNDERS_FENCE_FLOOR = 1.0
#: Hysteresis: a group founded beyond the founders' fence from every ordinary segment is
#: dissolved only once its mean comes within this share of the fence of one (well inside it,
#: among that segment's own customers), so a group near the fence is not founded and
#: dissolved by turns.
GROUP_DISSOLVE_SHARE = 0.5
#: A group whose centre holds less than this weight (a recent point's) lost its customers:
#: dissolved, young or not, so that a faded group does not keep its row for good.
GROUP_FADED_WEIGHT = 1.0
#: The most group segments a segmenter holds beyond its ordinary ones.
MAX_GROUPS = 2
#: The least weight of outliers a group is made of, whatever its share: ten recent points.
GROUP_MIN_WEIGHT = 10.0
# The heaviest cells (each with its neighbours) examined for a group.
_PLACES_TRIED = 8
# Cells lighter than this are dropped when the grid decays: a handful of points a week ago.
_FORGOTTEN = 1e-3
_FEATURES = len(OUTLIER_FEATURES)
_AT = {name: index for index, name in enumerate(OUTLIER_FEATURES)}


@dataclass(slots=True)
class OutlierCells:
    """The decayed weight, feature sums and sums of squares of the far customers in each
    occupied grid cell (rows of ``keys``, ``weights``, ``sums`` and ``squares`` alike, keys
    sorted).

    >>> cells = OutlierCells.empty()
    >>> cells.add(np.array([[1.0, 0.0, 0.8, 1.2, 0.0, 1.2, 1.1]] * 30), np.ones(30))
    >>> cells.densest(total=1_000.0, share=0.05, avoid=np.zeros((0, 7))) is None
    True
    >>> cells.densest(total=1_000.0, share=0.02, avoid=np.zeros((0, 7))).round(1).tolist()
    [1.0, 0.0, 0.8, 1.2, 0.0, 1.2, 1.1]
    >>> cells.densest(total=1_000.0, share=0.02, avoid=np.zeros((0, 7)),
    ...               accept=lambda mean, variance: False) is None
    True
    """

    keys: np.ndarray  # (cells, features) int64
    weights: np.ndarray  # (cells,)
    sums: np.ndarray  # (cells, features)
    squares: np.ndarray  # (cells, features)

    @classmethod
    def empty(cls) -> OutlierCells:
        return cls(
            np.zeros((0, _FEATURES), dtype=np.int64),
            np.zeros(0),
            np.zeros((0, _FEATURES)),
            np.zeros((0, _FEATURES)),
        )

    def copy(self) -> OutlierCells:
        return OutlierCells(
            self.keys.copy(), self.weights.copy(), self.sums.copy(), self.squares.copy()
        )

    def scaled(self, factor: float) -> OutlierCells:
        """Every weight and sum times ``factor`` (the decay), forgotten cells dropped."""
        kept = self.weights * factor >= _FORGOTTEN
        return OutlierCells(
            self.keys[kept], self.weights[kept] * factor, self.sums[kept] * factor,
            self.squares[kept] * factor,
        )  # fmt: skip

    def add(self, points: np.ndarray, weights: np.ndarray) -> None:
        """Add outliers' ``points`` (rows of outlier features), each with its weight."""
        if not len(points):
            return
        keys = np.floor(np.nan_to_num(points) / CELL_WIDTH).astype(np.int64)
        weighted = weights[:, None] * points
        self._combine(keys, weights, weighted, weighted * points)

    def plus(self, other: OutlierCells) -> OutlierCells:
        """Both grids' cells added (exact, in any order)."""
        merged = self.copy()
        merged._combine(other.keys, other.weights, other.sums, other.squares)
        return merged

    def densest(
        self,
        *,
        total: float,
        share: float,
        avoid: np.ndarray,
        accept: Callable[[np.ndarray, np.ndarray], bool] = lambda mean, variance: True,
    ) -> np.ndarray | None:
        """The mean of the first of the :data:`_PLACES_TRIED` heaviest cells, each with its
        neighbours (cells next to it on every feature), that holds at least ``share`` of
        ``total``, sits within :data:`GROUP_REACH` of its mean (root mean square, so that a
        group's segment holds them), is beyond :data:`GROUP_REACH` of every row of ``avoid``
        (the groups already made) and for whose mean and variance per feature ``accept``
        holds (the segmenter's judgement: tight and apart); else None."""
        if not len(self.weights) or share <= 0.0:
            return None
        least = max(share * total, GROUP_MIN_WEIGHT)
        for cell in np.argsort(-self.weights, kind="stable")[:_PLACES_TRIED].tolist():
            near = np.abs(self.keys - self.keys[cell]).max(axis=1) <= 1
            weight = float(self.weights[near].sum())
            if weight < least:
                return None
            mean = self.sums[near].sum(axis=0) / weight
            variance = np.maximum(self.squares[near].sum(axis=0) / weight - mean**2, 0.0)
            if float(np.sqrt(variance.mean())) > GROUP_REACH:
                continue
            fresh = not len(avoid) or not in_group(mean[None, :], avoid)[0].any()
            if fresh and accept(mean, variance):
                return mean
        return None

    def without(self, mean: np.ndarray) -> OutlierCells:
        """The grid without the cells next to ``mean``'s (a group made of them)."""
        key = np.floor(mean / CELL_WIDTH).astype(np.int64)
        kept = np.abs(self.keys - key).max(axis=1) > 1
        return OutlierCells(
            self.keys[kept], self.weights[kept], self.sums[kept], self.squares[kept]
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "outlier_cell_keys": self.keys,
            "outlier_cell_weights": self.weights,
            "outlier_cell_sums": self.sums,
            "outlier_cell_squares": self.squares,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> OutlierCells:
        """The grid a record carries (an empty one from records before groups); ValueError
        if it is malformed."""
        if "outlier_cell_keys" not in arrays:
            return cls.empty()
        keys, weights = arrays["outlier_cell_keys"], arrays["outlier_cell_weights"]
        sums, squares = arrays["outlier_cell_sums"], arrays["outlier_cell_squares"]
        cells = len(weights)
        if (
            keys.shape != (cells, _FEATURES)
            or weights.shape != (cells,)
            or sums.shape != (cells, _FEATURES)
            or squares.shape != (cells, _FEATURES)
            or not (np.isfinite(weights).all() and np.isfinite(sums).all())
            or not np.isfinite(squares).all()
            or (weights < 0).any()
        ):
            msg = (
                f"outlier cells of shapes {keys.shape}, {weights.shape}, {sums.shape}, "
                f"{squares.shape} do not fit {_FEATURES} features"
            )
            raise ValueError(msg)
        grid = cls.empty()
        grid._combine(
            keys.astype(np.int64), weights.astype(float), sums.astype(float),
            squares.astype(float),
        )  # fmt: skip
        return grid

    def _combine(
        self, keys: np.ndarray, weights: np.ndarray, sums: np.ndarray, squares: np.ndarray
    ) -> None:
        every_weight = np.concatenate([self.weights, weights])
        every_sum = np.concatenate([self.sums, sums])
        every_square = np.concatenate([self.squares, squares])
        unique, index = np.unique(np.concatenate([self.keys, keys]), axis=0, return_inverse=True)
        index = index.ravel()
        self.keys = unique
        self.weights = np.bincount(index, every_weight, len(unique))
        self.sums = np.zeros((len(unique), _FEATURES))
        np.add.at(self.sums, index, every_sum)
        self.squares = np.zeros((len(unique), _FEATURES))
        np.add.at(self.squares, index, every_square)


def founders_fence(histogram: np.ndarray, mads: float) -> float | None:
    """Who may found a group: beyond ``mads`` robust standard deviations of the log distances
    in ``histogram`` above their median (:func:`~online_models.segments.outliers.distance_fence`),
    at least :data:`FOUNDERS_FENCE_FLOOR`; None while the histogram is too light."""
    fence = distance_fence(histogram, mads)
    return None if fence is None else max(fence, FOUNDERS_FENCE_FLOOR)


def in_group(points: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Whether each point (rows of outlier features) is within :data:`GROUP_REACH` of each
    group's mean (rows of ``means``): a points x groups array."""
    squared = ((points[:, None, :] - means[None, :, :]) ** 2).mean(axis=2)
    return np.sqrt(squared) <= GROUP_REACH


def group_name(mean: np.ndarray, medians: np.ndarray) -> str:
    """A CRM name for a group at ``mean`` (outlier features), from how it differs from the
    ordinary segments (``medians``: each one's median features).

    >>> medians = np.array([[1.0, 0.2, 0.5, 0.7, 0.0, 0.8, 0.7], [0.0, 0.5, 0.0, 0.0, 0.2, 0, 0]])
    >>> group_name(np.array([1.0, 0.0, 0.8, 1.3, 0.0, 1.2, 1.1]), medians)
    'wholesale buyers'
    >>> group_name(np.array([1.0, 0.3, 0.1, 1.0, 0.0, 1.3, 1.2]), medians)
    'bulk one-off buyers'
    """
    ordered = mean[_AT["ordered"]] >= 0.5
    if not ordered:
        heavy = mean[_AT["engagement"]] > np.nanmax(medians[:, _AT["engagement"]], initial=0.0)
        return "heavy browsers" if heavy else "unusual browsers"
    baskets = [_AT["basket_spend"], _AT["basket_units"]]
    biggest = np.nanmax(medians[:, baskets], axis=0, initial=0.0)
    if (mean[baskets] > biggest + CELL_WIDTH / 2).any():
        return "wholesale buyers" if mean[_AT["frequency"]] >= 0.4 else "bulk one-off buyers"
    spend = mean[_AT["monetary"]] > np.nanmax(medians[:, _AT["monetary"]], initial=0.0)
    return "top spenders apart" if spend else "unusual buyers"


def groups_of(
    share: SegmentShare, points: np.ndarray, distances: np.ndarray, fence: float | None
) -> np.ndarray:
    """The group segment of ``share`` (0 for the first after the ordinary ones) each of
    ``points`` (``distances`` from their segment) belongs to, -1 for none: the nearest group
    within :data:`GROUP_REACH` that they are nearer to, in units of its spread, than to their
    segment (so a group never drifts into a segment's crowd). A group too young to have a
    spread takes only founders: those beyond the founders' ``fence`` from their segment (had
    it taken whoever is within reach, a segment's customers near it would pull its mean into
    the segment at once, and it would be dissolved and founded again by turns)."""
    groups = np.full(len(points), -1)
    if not share.groups:
        return groups
    near = in_group(points, np.nan_to_num(means := share.group_means(), nan=np.inf))
    if not near.any():
        return groups
    start = len(share.weights) - share.groups
    for offset in range(share.groups):
        rows = np.flatnonzero(near[:, offset])
        if not len(rows):
            continue
        own = share.spread.distances(np.full(len(rows), start + offset), points[rows])
        theirs = distances[rows]
        young = np.isnan(own)
        founder = young & (fence is not None and np.nan_to_num(theirs) > fence)
        near[rows, offset] = founder | (~young & (np.isnan(theirs) | (own < theirs)))
    squared = ((points[:, None, :] - np.nan_to_num(means)[None, :, :]) ** 2).sum(axis=2)
    nearest = np.where(near, squared, np.inf).argmin(axis=1)
    return np.where(near.any(axis=1), nearest, -1)


def share_names(share: SegmentShare, previous: Mapping[int, str] | None = None) -> dict[int, str]:
    """A distinct CRM name for every seeded segment of ``share`` (:func:`segment_names`,
    sticking to its ``previous`` name while its centre allows) and every live group segment
    (:func:`group_name`); a dissolved group has none."""
    centres = share.centers()
    ordinary = len(centres) - share.groups
    names = segment_names(
        centres[:ordinary], {i: n for i, n in (previous or {}).items() if i < ordinary}
    )
    if share.groups:
        medians = share.spread.robust()[0][: len(centres) - share.groups]
        taken = set(names.values())
        for offset, mean in enumerate(share.group_means()):
            if np.isnan(mean).any():
                continue  # a dissolved group: no segment, so no name
            name = group_name(mean, medians)
            repeat = 2
            unique = name
            while unique in taken:
                unique, repeat = f"{name} {repeat}", repeat + 1
            names[len(centres) - share.groups + offset] = unique
            taken.add(unique)
    return names
