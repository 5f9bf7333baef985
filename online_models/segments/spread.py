"""How spread out each k-means segment is: the yardstick of a customer's distance to it.

A segment's customers spread more along some features than others (recency ranges over
months in every segment, while a segment's buyers all ``ordered``), and the features that
make a customer unusual are often ones segments are not formed on (a reseller's baskets).
So each segment keeps, beside its centre, a decayed histogram of each of its points'
:data:`~online_models.customer.profile.OUTLIER_FEATURES`, and a customer's distance to it is
the root mean square of their standardised deviations: how many of the segment's own robust
standard deviations (MAD x 1.4826) they sit from its median, feature by feature. A median
and a MAD do not move for a few far points: a group of alike customers making a tenth of a
segment's recent points shifts them by a fraction of a bin, where it would widen a standard
deviation until the group fits inside it. Histograms add across workers exactly, like the
centres' sums. The decayed weight, sums and sums of squares are kept as before (records read
by older workers carry them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from online_models.customer.profile import OUTLIER_FEATURES

__all__ = ["SPREAD_BINS", "SPREAD_FLOOR", "SPREAD_MIN_WEIGHT", "SPREAD_TOP", "SegmentSpread"]

logger = logging.getLogger(__name__)

#: The least standard deviation a feature is measured in (on the features' 0..1.5 scales): a
#: segment whose customers all share a value (every one ``ordered``) still measures a
#: customer differing in it as far, not infinitely far.
SPREAD_FLOOR = 0.05
#: The weight of points a segment needs before its spread measures anyone: a younger segment
#: cannot say who is unusual in it.
SPREAD_MIN_WEIGHT = 5.0
#: Each feature's histogram: bins of 0.025 from 0 to 3 (values beyond fall in the end bins;
#: the segment features stop at 1.5, a basket 1,000 times the scale's reaches 2).
SPREAD_BINS = 120
SPREAD_TOP = 3.0
_WIDTH = SPREAD_TOP / SPREAD_BINS
_FEATURES = len(OUTLIER_FEATURES)
_ORDERED = OUTLIER_FEATURES.index("ordered")
_BASKET_SPEND = OUTLIER_FEATURES.index("basket_spend")
_MONETARY = OUTLIER_FEATURES.index("monetary")
# MAD x 1.4826 estimates the standard deviation of normal data (Leys et al. 2013).
_MAD_TO_SD = 1.4826
# A segment's median and MAD are read again once it has taken this share of the weight it held
# when they were last read: one point more among many moves them by a sliver of a bin, and
# reading them costs about a millisecond (every segment's 120-bin histograms and MAD search).
_STALE_SHARE = 0.05
# The MAD is searched in quarter bins.
_REACHES = np.arange(4 * SPREAD_BINS + 1) * (_WIDTH / 4)


def _bins(points: np.ndarray) -> np.ndarray:
    """Each value's histogram bin: bin ``k`` is centred on ``k`` x 0.025, so the values
    many customers share (0, 1) sit in a bin's middle."""
    return np.clip(
        np.floor(np.nan_to_num(points) / _WIDTH + 0.5).astype(np.int64), 0, SPREAD_BINS - 1
    )


@dataclass(slots=True)
class SegmentSpread:
    """Per segment: the decayed weight, sums and sums of squares of its points' outlier
    features (rows of ``sums`` and ``squares`` in ``OUTLIER_FEATURES`` order), and the decayed
    histogram of each feature (``histograms``: segments x features x :data:`SPREAD_BINS`)
    that its median and MAD are read from.

    >>> spread = SegmentSpread.empty(1)
    >>> points = np.array([[1.0, 0.1, 0.5, 0.5, 0.0, 0.6, 0.6]] * 3 + [[1.0, 0.3, 0.5, 0.7, 0.0,
    ...                    0.8, 0.8]] * 3)
    >>> spread.add(np.zeros(6, dtype=int), np.ones(6), points)
    >>> spread.distances(np.array([0, 0]), np.array([points[0], [1.0, 0.2, 0.5, 0.6, 0.0, 3.0,
    ...                  0.7]])).round(2).tolist()
    [0.19, 18.08]
    """

    weights: np.ndarray  # (segments,)
    sums: np.ndarray  # (segments, features)
    squares: np.ndarray  # (segments, features)
    histograms: np.ndarray = field(default_factory=lambda: np.zeros((0, _FEATURES, SPREAD_BINS)))
    _robust: tuple[np.ndarray, np.ndarray] | None = None
    # Per segment: the histograms' weight when ``_robust`` was read, and the weight added since.
    _held: np.ndarray | None = None
    _added: np.ndarray | None = None

    def __post_init__(self) -> None:
        # A spread from a record of before the histograms starts with empty ones.
        if len(self.histograms) < len(self.weights):
            missing = len(self.weights) - len(self.histograms)
            self.histograms = np.concatenate(
                [self.histograms, np.zeros((missing, _FEATURES, SPREAD_BINS))]
            )

    def __getstate__(self) -> tuple[object, ...]:
        # The medians' cache goes along: they are read again only once a segment has taken
        # enough weight, so a copy scores as the original does.
        return (
            self.weights, self.sums, self.squares, self.histograms,
            self._robust, self._held, self._added,
        )  # fmt: skip

    def __setstate__(self, state: tuple[object, ...]) -> None:
        self._forget()
        if len(state) == 7:
            self._robust, self._held, self._added = state[4:]  # type: ignore[assignment]
        self.weights, self.sums, self.squares, self.histograms = state[:4]  # type: ignore[assignment]

    def _forget(self) -> None:
        self._robust = self._held = self._added = None

    def _with_cache(self, other: SegmentSpread, factor: float = 1.0) -> SegmentSpread:
        """``other`` (this spread copied or scaled by ``factor``) with this one's medians and
        MADs, which do not change when every weight is scaled alike."""
        if self._robust is not None and self._held is not None and self._added is not None:
            other._robust = self._robust
            other._held, other._added = self._held * factor, self._added * factor
        return other

    @classmethod
    def empty(cls, segments: int = 0) -> SegmentSpread:
        """No weight in ``segments`` segments."""
        return cls(
            np.zeros(segments),
            np.zeros((segments, _FEATURES)),
            np.zeros((segments, _FEATURES)),
            np.zeros((segments, _FEATURES, SPREAD_BINS)),
        )

    def copy(self) -> SegmentSpread:
        return self._with_cache(
            SegmentSpread(
                self.weights.copy(), self.sums.copy(), self.squares.copy(), self.histograms.copy()
            )
        )

    def scaled(self, factor: float) -> SegmentSpread:
        """Every weight and sum times ``factor`` (the segmenter's decay), as a copy."""
        scaled = SegmentSpread(
            self.weights * factor, self.sums * factor, self.squares * factor,
            self.histograms * factor,
        )  # fmt: skip
        return self._with_cache(scaled, factor)

    def padded(self, segments: int) -> SegmentSpread:
        """This spread with empty rows up to ``segments`` segments (a copy)."""
        missing = segments - len(self.weights)
        if missing <= 0:
            return self.copy()
        return SegmentSpread(
            np.concatenate([self.weights, np.zeros(missing)]),
            np.vstack([self.sums, np.zeros((missing, _FEATURES))]),
            np.vstack([self.squares, np.zeros((missing, _FEATURES))]),
            np.concatenate([self.histograms, np.zeros((missing, _FEATURES, SPREAD_BINS))]),
        )

    def plus(self, other: SegmentSpread) -> SegmentSpread:
        """Both spreads' weights, sums and histograms added, segment by segment (exact, in
        any order)."""
        segments = max(len(self.weights), len(other.weights))
        a, b = self.padded(segments), other.padded(segments)
        return SegmentSpread(
            a.weights + b.weights, a.sums + b.sums, a.squares + b.squares,
            a.histograms + b.histograms,
        )  # fmt: skip

    def add(self, segments: np.ndarray, weights: np.ndarray, points: np.ndarray) -> None:
        """Add ``points`` (rows of outlier features) to their ``segments``, each with its
        weight, in place."""
        np.add.at(self.weights, segments, weights)
        np.add.at(self.sums, segments, weights[:, None] * points)
        np.add.at(self.squares, segments, weights[:, None] * points**2)
        self.add_histograms(segments, weights, points)

    def add_histograms(self, segments: np.ndarray, weights: np.ndarray, points: np.ndarray) -> None:
        """Add ``points`` to their segments' feature histograms only, in place."""
        columns = np.broadcast_to(np.arange(_FEATURES), points.shape)
        rows = np.broadcast_to(segments[:, None], points.shape)
        np.add.at(
            self.histograms,
            (rows, columns, _bins(points)),
            np.broadcast_to(weights[:, None], points.shape),
        )
        if self._added is not None:
            np.add.at(self._added, segments, weights)

    def add_totals(self, weights: np.ndarray, sums: np.ndarray, squares: np.ndarray) -> None:
        """Add, per segment, the weight of some points, their weighted features and weighted
        squares (what :meth:`add` adds of them but the histograms), in place."""
        self.weights += weights
        self.sums += sums
        self.squares += squares

    def add_one(self, segment: int, weight: float, point: np.ndarray) -> None:
        """:meth:`add` of one point, without numpy's per-call costs of ``add.at``."""
        self.weights[segment] += weight
        self.sums[segment] += weight * point
        self.squares[segment] += weight * point * point
        self.histograms[segment, np.arange(_FEATURES), _bins(point)] += weight
        if self._added is not None:
            self._added[segment] += weight

    def clear(self, segment: int) -> None:
        """Forget every point of ``segment``, in place (its median and MAD are read again)."""
        self.weights[segment] = 0.0
        self.sums[segment] = 0.0
        self.squares[segment] = 0.0
        self.histograms[segment] = 0.0
        self._forget()

    def robust(self) -> tuple[np.ndarray, np.ndarray]:
        """Each segment's median and MAD x 1.4826 per feature, read from its histograms
        (interpolated within bins), whatever its weight; a segment's are read again once it
        has taken :data:`_STALE_SHARE` of the weight it held when they were last read."""
        held = self.histograms[:, 0, :].sum(axis=1)
        if (
            self._robust is None or self._held is None or self._added is None
            or len(self._held) != len(held)
        ):  # fmt: skip
            self._robust = _medians_and_mads(self.histograms)
            self._held, self._added = held, np.zeros_like(held)
            return self._robust
        stale = self._added > _STALE_SHARE * self._held
        if stale.any():
            medians, deviations = (part.copy() for part in self._robust)
            medians[stale], deviations[stale] = _medians_and_mads(self.histograms[stale])
            self._robust = medians, deviations
            self._held[stale], self._added[stale] = held[stale], 0.0
        return self._robust

    def yardsticks(self) -> tuple[np.ndarray, np.ndarray]:
        """Each segment's median and robust standard deviation (at least
        :data:`SPREAD_FLOOR`) per feature; NaN for a segment whose histograms hold less than
        :data:`SPREAD_MIN_WEIGHT`."""
        medians, deviations = self.robust()
        held = self.histograms[:, 0, :].sum(axis=1)
        young = np.where(held >= SPREAD_MIN_WEIGHT, 0.0, np.nan)[:, None]
        return medians + young, np.maximum(deviations, SPREAD_FLOOR) + young

    def young(self) -> np.ndarray:
        """Whether each segment is too young to measure by (histograms under
        :data:`SPREAD_MIN_WEIGHT`: :meth:`yardsticks` are NaN)."""
        return self.histograms[:, 0, :].sum(axis=1) < SPREAD_MIN_WEIGHT

    def distances(self, segments: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Each point's distance to its segment in units of that segment's spread: the root
        mean square of its standardised deviations (NaN where the segment has too little
        weight to say)."""
        medians, deviations = self.yardsticks()
        z = _refunds_aside(points, (points - medians[segments]) / deviations[segments])
        return np.sqrt((z**2).mean(axis=1))

    def deviations(self, segment: int, point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The segment's medians, and the point's standardised deviation from them, per
        feature (NaN under :data:`SPREAD_MIN_WEIGHT`)."""
        medians, deviations = self.yardsticks()
        z = (point - medians[segment]) / deviations[segment]
        return medians[segment], _refunds_aside(point[None, :], z[None, :])[0]

    def check(self, segments: int) -> None:
        """ValueError unless this spread fits ``segments`` segments with finite, non-negative
        weights, sums of squares and histograms (a record's, before it is trusted)."""
        if (
            self.weights.shape != (segments,)
            or self.sums.shape != (segments, _FEATURES)
            or self.squares.shape != (segments, _FEATURES)
            or self.histograms.shape != (segments, _FEATURES, SPREAD_BINS)
            or not (np.isfinite(self.weights).all() and np.isfinite(self.sums).all())
            or not (np.isfinite(self.squares).all() and np.isfinite(self.histograms).all())
            or (self.weights < 0).any()
            or (self.squares < 0).any()
            or (self.histograms < 0).any()
        ):
            msg = (
                f"segment spread of shapes {self.weights.shape}, {self.sums.shape}, "
                f"{self.squares.shape}, {self.histograms.shape} does not fit {segments} "
                f"segments of {_FEATURES} features and {SPREAD_BINS} bins"
            )
            raise ValueError(msg)


def _refunds_aside(points: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``z`` (standardised deviations of ``points``, rows) with the net spend and the spend per
    order of a buyer whose purchases were all refunded (net spend 0) at no deviation: a refund
    says nothing of what they spend, and "spent 0" or "spends 0 per order" alone must not make
    an outlier."""
    refunded = (points[:, _ORDERED] >= 0.5) & (points[:, _BASKET_SPEND] <= 0.0)
    if not refunded.any():
        return z
    z = z.copy()
    z[refunded, _BASKET_SPEND] = 0.0
    z[refunded, _MONETARY] = 0.0
    return z


def _cumulative(histograms: np.ndarray, cumulative: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The weight below each value of ``at`` (..., k), linear within a bin."""
    position = np.clip(at / _WIDTH + 0.5, 0.0, float(SPREAD_BINS))
    bins = np.minimum(position.astype(np.int64), SPREAD_BINS - 1)
    below = np.take_along_axis(cumulative, bins, axis=-1)
    inside = np.take_along_axis(histograms, bins, axis=-1)
    return below + (position - bins) * inside


def _medians_and_mads(histograms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The median and MAD x 1.4826 of every histogram (last axis the bins); 0 for an empty
    one.

    >>> h = np.zeros((1, 1, SPREAD_BINS)); h[0, 0, [20, 21, 22, 23]] = 1.0  # 0.4875 to 0.5875
    >>> [round(float(a[0, 0]), 3) for a in _medians_and_mads(h)]
    [0.537, 0.037]
    """
    cumulative = np.cumsum(histograms, axis=-1) - histograms
    totals = histograms.sum(axis=-1)
    half = (totals / 2.0)[..., None]
    # The median's bin: the last whose weight below is under half the total.
    bins = np.maximum((cumulative < half).sum(axis=-1) - 1, 0)[..., None]
    below = np.take_along_axis(cumulative, bins, axis=-1)
    inside = np.take_along_axis(histograms, bins, axis=-1)
    fraction = np.divide(half - below, inside, out=np.zeros_like(half), where=inside > 0)
    medians = (bins + np.clip(fraction, 0.0, 1.0) - 0.5) * _WIDTH
    within = _cumulative(histograms, cumulative, medians + _REACHES) - _cumulative(
        histograms, cumulative, medians - _REACHES
    )
    # The MAD: the least reach holding half the weight, interpolated between quarter bins.
    reached = np.minimum((within < half).sum(axis=-1), len(_REACHES) - 1)[..., None]
    before = np.maximum(reached - 1, 0)
    low = np.take_along_axis(within, before, axis=-1)
    high = np.take_along_axis(within, reached, axis=-1)
    step = np.divide(half - low, high - low, out=np.zeros_like(half), where=high > low)
    reach = _REACHES[before] + np.clip(step, 0.0, 1.0) * (_WIDTH / 4)
    reach = np.where(reached > 0, reach, 0.0)
    empty = totals[..., None] <= 0
    return (
        np.where(empty, 0.0, medians)[..., 0],
        np.where(empty, 0.0, _MAD_TO_SD * reach)[..., 0],
    )
