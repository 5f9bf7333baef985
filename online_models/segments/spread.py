"""How spread out each k-means segment is: the yardstick of a customer's distance to it.

A segment's customers spread more along some features than others (recency ranges over
months in every segment, while a segment's buyers all ``ordered``), and the features that
make a customer unusual are often ones segments are not formed on (a reseller's baskets).
So each segment keeps, beside its centre, the decayed weight, sum and sum of squares of its
points' :data:`~online_models.customer.profile.OUTLIER_FEATURES`, and a customer's distance to it is
the root mean square of their standardised deviations: how many of the segment's own
standard deviations they sit from its mean, feature by feature. The sums add across workers
exactly, like the centres'.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from online_models.customer.profile import OUTLIER_FEATURES

__all__ = ["SPREAD_FLOOR", "SPREAD_MIN_WEIGHT", "SegmentSpread"]

logger = logging.getLogger(__name__)

#: The least standard deviation a feature is measured in (on the features' 0..1.5 scales): a
#: segment whose customers all share a value (every one ``ordered``) still measures a
#: customer differing in it as far, not infinitely far.
SPREAD_FLOOR = 0.05
#: The weight of points a segment needs before its spread measures anyone.
SPREAD_MIN_WEIGHT = 5.0
_FEATURES = len(OUTLIER_FEATURES)


@dataclass(slots=True)
class SegmentSpread:
    """Per segment: the decayed weight, sums and sums of squares of its points' outlier
    features (rows of ``sums`` and ``squares`` in ``OUTLIER_FEATURES`` order).

    >>> spread = SegmentSpread.empty(1)
    >>> points = np.array([[1.0, 0.1, 0.5, 0.5, 0.0, 0.6, 0.6]] * 3 + [[1.0, 0.3, 0.5, 0.7, 0.0,
    ...                    0.8, 0.8]] * 3)
    >>> spread.add(np.zeros(6, dtype=int), np.ones(6), points)
    >>> spread.distances(np.array([0, 0]), np.array([points[0], [1.0, 0.2, 0.5, 0.6, 0.0, 3.0,
    ...                  0.7]])).round(2).tolist()
    [0.76, 8.69]
    """

    weights: np.ndarray  # (segments,)
    sums: np.ndarray  # (segments, features)
    squares: np.ndarray  # (segments, features)

    @classmethod
    def empty(cls, segments: int = 0) -> SegmentSpread:
        """No weight in ``segments`` segments."""
        return cls(
            np.zeros(segments), np.zeros((segments, _FEATURES)), np.zeros((segments, _FEATURES))
        )

    def copy(self) -> SegmentSpread:
        return SegmentSpread(self.weights.copy(), self.sums.copy(), self.squares.copy())

    def scaled(self, factor: float) -> SegmentSpread:
        """Every weight and sum times ``factor`` (the segmenter's decay), as a copy."""
        return SegmentSpread(self.weights * factor, self.sums * factor, self.squares * factor)

    def padded(self, segments: int) -> SegmentSpread:
        """This spread with empty rows up to ``segments`` segments (a copy)."""
        missing = segments - len(self.weights)
        if missing <= 0:
            return self.copy()
        return SegmentSpread(
            np.concatenate([self.weights, np.zeros(missing)]),
            np.vstack([self.sums, np.zeros((missing, _FEATURES))]),
            np.vstack([self.squares, np.zeros((missing, _FEATURES))]),
        )

    def plus(self, other: SegmentSpread) -> SegmentSpread:
        """Both spreads' weights and sums added, segment by segment (exact, in any order)."""
        segments = max(len(self.weights), len(other.weights))
        a, b = self.padded(segments), other.padded(segments)
        return SegmentSpread(a.weights + b.weights, a.sums + b.sums, a.squares + b.squares)

    def add(self, segments: np.ndarray, weights: np.ndarray, points: np.ndarray) -> None:
        """Add ``points`` (rows of outlier features) to their ``segments``, each with its
        weight, in place."""
        np.add.at(self.weights, segments, weights)
        np.add.at(self.sums, segments, weights[:, None] * points)
        np.add.at(self.squares, segments, weights[:, None] * points**2)

    def add_totals(self, weights: np.ndarray, sums: np.ndarray, squares: np.ndarray) -> None:
        """Add, per segment, the weight of some points, their weighted features and weighted
        squares (what :meth:`add` adds of them), in place."""
        self.weights += weights
        self.sums += sums
        self.squares += squares

    def add_one(self, segment: int, weight: float, point: np.ndarray) -> None:
        """:meth:`add` of one point, without numpy's per-call costs of ``add.at``."""
        self.weights[segment] += weight
        self.sums[segment] += weight * point
        self.squares[segment] += weight * point * point

    def yardsticks(self) -> tuple[np.ndarray, np.ndarray]:
        """Each segment's mean and standard deviation (at least :data:`SPREAD_FLOOR`) per
        feature; NaN for a segment under :data:`SPREAD_MIN_WEIGHT`."""
        weights = np.where(self.weights >= SPREAD_MIN_WEIGHT, self.weights, np.nan)[:, None]
        means = self.sums / weights
        variances = np.maximum(self.squares / weights - means**2, 0.0)
        return means, np.maximum(np.sqrt(variances), SPREAD_FLOOR)

    def distances(self, segments: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Each point's distance to its segment in units of that segment's spread: the root
        mean square of its standardised deviations (NaN where the segment has too little
        weight to say)."""
        means, deviations = self.yardsticks()
        z = (points - means[segments]) / deviations[segments]
        return np.sqrt((z**2).mean(axis=1))

    def deviations(self, segment: int, point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The segment's means, and the point's standardised deviation from them, per
        feature (NaN under :data:`SPREAD_MIN_WEIGHT`)."""
        means, deviations = self.yardsticks()
        return means[segment], (point - means[segment]) / deviations[segment]

    def check(self, segments: int) -> None:
        """ValueError unless this spread fits ``segments`` segments with finite, non-negative
        weights and sums of squares (a record's, before it is trusted)."""
        if (
            self.weights.shape != (segments,)
            or self.sums.shape != (segments, _FEATURES)
            or self.squares.shape != (segments, _FEATURES)
            or not (np.isfinite(self.weights).all() and np.isfinite(self.sums).all())
            or not np.isfinite(self.squares).all()
            or (self.weights < 0).any()
            or (self.squares < 0).any()
        ):
            msg = (
                f"segment spread of shapes {self.weights.shape}, {self.sums.shape}, "
                f"{self.squares.shape} does not fit {segments} segments of {_FEATURES} features"
            )
            raise ValueError(msg)
