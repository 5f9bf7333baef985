"""How unusual a customer is: where their distance to the segments falls among everyone's.

Both segmentations measure how far a customer's features sit from the model: k-means from
their segment, in units of that segment's own spread (:class:`SegmentSpread`), density from
the nearest micro-cluster of a dense region. Every point the segmenter learns adds its
distance, with the segmenter's event-time decay, to a histogram of log-spaced bins; a
customer's ``outlier_score`` is the share of that (decayed) weight lying nearer than they do:
their percentile rank, 0..1, rising with the distance and the same on every worker holding
the same histogram. Histograms of two workers add, like the centres.

Where the outliers begin is read from the histogram's shape, not a fixed share
(:func:`distance_fence`): median + k x MAD of the log distances, so a population with no
far tail flags (almost) no one, and one with a tail flags all of it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from online_models.customer.profile import segment_quantity

__all__ = [
    "DISTANCE_BINS",
    "LEGACY_DISTANCE_BINS",
    "OUTLIER_FENCE_FLOOR",
    "OUTLIER_READY_WEIGHT",
    "Placement",
    "Placements",
    "add_distances",
    "distance_bin",
    "distance_fence",
    "distance_rank",
    "distance_ranks",
    "empty_histogram",
    "outlier_fence",
    "readable_histogram",
    "unusual_features",
]

logger = logging.getLogger(__name__)

#: Bins of the distance histogram: [0, 1e-3), 254 log-spaced bins up to 1,000 (5.6% wide
#: each: plain distances on the segment features' scales stay under 4, distances in units of
#: a segment's spread reach the hundreds), and [1,000, inf).
DISTANCE_BINS = 256
#: Histograms of records written before the bins reached 1,000 (128 bins up to 4).
LEGACY_DISTANCE_BINS = 128
_LEGACY_STEP = math.log(4.0 / 1e-3) / (LEGACY_DISTANCE_BINS - 2)
#: The weight a histogram needs before its shape decides who is an outlier: 100 points'.
OUTLIER_READY_WEIGHT = 100.0
_NEAREST = 1e-3
_FARTHEST = 1e3
_STEP = math.log(_FARTHEST / _NEAREST) / (DISTANCE_BINS - 2)
# MAD x 1.4826 estimates the standard deviation of normal data (Leys et al. 2013).
_MAD_TO_SD = 1.4826
# Resolution of the MAD's search, in fractions of a bin.
_MAD_STEPS_PER_BIN = 4
# The unusual features named are the fewest explaining this share of the squared distance.
_EXPLAINED = 0.8
_MAX_FEATURES = 3


class Placement(NamedTuple):
    """Where a customer's segment features put them: the segment, the percentile rank of
    their distance to the model (``outlier_score``; NaN when the segment is too young to
    tell) and whether that makes them an outlier."""

    segment: int
    outlier_score: float
    outlier: bool


class Placements(NamedTuple):
    """:class:`Placement` of many customers, as arrays."""

    segments: np.ndarray
    outlier_scores: np.ndarray
    outliers: np.ndarray

    @classmethod
    def of(cls, placements: Sequence[Placement]) -> Placements:
        """The arrays of single placements."""
        return cls(
            np.array([p.segment for p in placements], dtype=np.int64),
            np.array([p.outlier_score for p in placements], dtype=float),
            np.array([p.outlier for p in placements], dtype=bool),
        )


def empty_histogram() -> np.ndarray:
    """A distance histogram with no weight."""
    return np.zeros(DISTANCE_BINS)


def _positions(distances: np.ndarray) -> np.ndarray:
    """Each distance's place on the bins' axis: bin index plus the fraction into the bin
    (linear in the first bin, logarithmic after it)."""
    d = np.asarray(distances, dtype=float)
    logged = 1.0 + np.log(np.maximum(d, _NEAREST) / _NEAREST) / _STEP
    inside = np.where(d < _NEAREST, d / _NEAREST, logged)
    return np.clip(inside, 0.0, DISTANCE_BINS - 1.0)


def _distance_at(position: float) -> float:
    """The distance at a place on the bins' axis (inverse of :func:`_position`)."""
    if position < 1.0:
        return max(position, 0.0) * _NEAREST
    if position >= DISTANCE_BINS - 1.0:
        return math.inf
    return _NEAREST * math.exp((position - 1.0) * _STEP)


def _position(distance: float) -> float:
    """:func:`_positions` of one distance, without numpy's per-call cost."""
    if distance < _NEAREST:
        return max(distance, 0.0) / _NEAREST
    return min(1.0 + math.log(distance / _NEAREST) / _STEP, DISTANCE_BINS - 1.0)


def distance_bin(distance: float) -> int:
    """The histogram bin of a (finite) distance."""
    return min(int(_position(distance)), DISTANCE_BINS - 1)


def add_distances(histogram: np.ndarray, distances: np.ndarray, weights: np.ndarray) -> None:
    """Add ``distances`` (each with its weight) to ``histogram`` in place; an infinite
    distance (no centre yet) adds nothing."""
    finite = np.isfinite(distances)
    bins = _positions(np.where(finite, distances, 0.0)).astype(np.int64)
    np.add.at(histogram, bins[finite], np.broadcast_to(weights, bins.shape)[finite])


def distance_ranks(histogram: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """The share of the histogram's weight nearer than each distance, interpolated within
    its bin: 0 for an empty histogram, 1 for an infinite distance.

    >>> histogram = empty_histogram()
    >>> add_distances(histogram, np.array([0.1, 0.2, 0.4, 0.8]), np.ones(4))
    >>> distance_ranks(histogram, np.array([0.05, 0.3, 0.9, 2.0])).round(2).tolist()
    [0.0, 0.5, 1.0, 1.0]
    """
    total = float(histogram.sum())
    distances = np.asarray(distances, dtype=float)
    if total <= 0.0:
        return np.zeros(distances.shape)
    positions = _positions(np.where(np.isfinite(distances), distances, _FARTHEST))
    bins = np.minimum(positions.astype(np.int64), DISTANCE_BINS - 1)
    below = np.concatenate([[0.0], np.cumsum(histogram)])
    ranks = (below[bins] + (positions - bins) * histogram[bins]) / total
    return np.where(np.isfinite(distances), np.clip(ranks, 0.0, 1.0), 1.0)


def distance_fence(histogram: np.ndarray, mads: float) -> float | None:
    """Where outliers begin: the distance ``mads`` robust standard deviations (MAD x 1.4826)
    of the log distances above their median, read from the histogram (interpolated within
    bins); None while it holds less than :data:`OUTLIER_READY_WEIGHT`.

    >>> histogram = empty_histogram()
    >>> rng = np.random.default_rng(0)
    >>> add_distances(histogram, np.exp(rng.normal(0.0, 0.5, 10_000)), np.ones(10_000))
    >>> round(distance_fence(histogram, 3.0), 1)  # exp(0 + 3 x 0.5) = 4.48
    4.5
    """
    total = float(histogram.sum())
    if total < OUTLIER_READY_WEIGHT:
        return None
    axis = np.arange(DISTANCE_BINS + 1, dtype=float)
    below = np.concatenate([[0.0], np.cumsum(histogram)])
    median = float(np.interp(0.5 * total, below, axis))
    reach = np.linspace(0.0, DISTANCE_BINS, _MAD_STEPS_PER_BIN * DISTANCE_BINS + 1)
    within = np.interp(median + reach, axis, below) - np.interp(median - reach, axis, below)
    mad = float(np.interp(0.5 * total, within, reach))
    return _distance_at(median + mads * _MAD_TO_SD * mad)


#: The nearest the outlier fence comes, in a segment's standard deviations (root mean square
#: over the features): where a normal segment's points stop being common (beyond it 1 in
#: 5,000 of them), whatever the histogram's shape. It holds when half the weight sits at one
#: distance (thousands of one-view visitors alike), where the MAD is nought and a fence at the
#: median would flag everyone else.
OUTLIER_FENCE_FLOOR = 2.0


def outlier_fence(histogram: np.ndarray, mads: float) -> float | None:
    """:func:`distance_fence` of ``histogram`` at ``mads`` MADs, at least
    :data:`OUTLIER_FENCE_FLOOR` (the k-means segments' distances, in units of a spread)."""
    fence = distance_fence(histogram, mads)
    return None if fence is None else max(fence, OUTLIER_FENCE_FLOOR)


def readable_histogram(histogram: np.ndarray) -> np.ndarray:
    """A density record's distance histogram on this version's bins: a legacy one (128 bins
    up to 4, the same plain distances) re-binned, each bin's weight at its middle.

    >>> legacy = np.zeros(LEGACY_DISTANCE_BINS)
    >>> legacy[[10, 60, 127]] = 1.0, 2.0, 3.0
    >>> float(readable_histogram(legacy).sum())
    6.0
    """
    if histogram.shape != (LEGACY_DISTANCE_BINS,):
        return histogram
    middles = np.concatenate(
        [
            [_NEAREST / 2],
            _NEAREST * np.exp((np.arange(LEGACY_DISTANCE_BINS - 2) + 0.5) * _LEGACY_STEP),
            [4.0],
        ]
    )
    rebinned = empty_histogram()
    add_distances(rebinned, middles, np.asarray(histogram, dtype=float))
    return rebinned


def distance_rank(histogram: np.ndarray, distance: float) -> float:
    """:func:`distance_ranks` of one distance (a score's path: a few microseconds)."""
    total = float(histogram.sum())
    if total <= 0.0:
        return 0.0
    if not math.isfinite(distance):
        return 1.0
    position = _position(distance)
    bin_ = distance_bin(distance)
    below = float(histogram[:bin_].sum()) + (position - bin_) * float(histogram[bin_])
    return min(max(below / total, 0.0), 1.0)


def unusual_features(
    point: np.ndarray,
    centre: np.ndarray,
    names: Sequence[str],
    quantities: Mapping[str, float],
    segment_name: str,
    standardised: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """The features that make ``point`` far from ``centre`` (the nearest segment's, named
    ``segment_name``): the fewest explaining 80% of the squared distance, at most three,
    largest first, each with the customer's quantity (``quantities``, e.g. orders or spend),
    the segment's typical one and a phrase in CRM words. With ``standardised`` (the point's
    deviations in units of the segment's spread) those are what is explained, and what each
    feature's ``deviation`` reports.

    >>> unusual_features(np.array([1.0, 0.1, 1.5, 1.5, 0.2]),
    ...                  np.array([1.0, 0.1, 0.7, 0.6, 0.2]),
    ...                  ("ordered", "recency", "frequency", "monetary", "engagement"),
    ...                  {"frequency": 520, "monetary": 2e6}, "regulars")[0]["reason"]
    'spent 2,000,000; typically 250 in regulars'
    """
    deviation = point - centre if standardised is None else standardised
    squared = deviation**2
    total = float(squared.sum())
    chosen: list[dict[str, Any]] = []
    explained = 0.0
    for j in np.argsort(-squared, kind="stable")[:_MAX_FEATURES].tolist():
        if total <= 0.0 or explained >= _EXPLAINED * total:
            break
        explained += float(squared[j])
        name = names[j]
        value = quantities.get(name, segment_quantity(name, float(point[j])))
        typical = segment_quantity(name, float(centre[j]))
        chosen.append(
            {
                "feature": name,
                "value": round(float(value), 2),
                "typical": round(typical, 2),
                "deviation": round(float(deviation[j]), 4),
                "reason": _phrase(name, float(value), typical, segment_name),
            }
        )
    return chosen


def _phrase(name: str, value: float, typical: float, segment_name: str) -> str:
    if name == "ordered":
        did = "ordered" if value >= 0.5 else "never ordered"
        return f"{did}, unlike most in {segment_name}"
    unit = {
        "recency": ("{:,.0f} days since the last order", "{:,.0f}"),
        "frequency": ("{:,.0f} orders", "{:,.0f}"),
        "monetary": ("spent {:,.0f}", "{:,.0f}"),
        "engagement": ("{:,.0f} views and cart adds", "{:,.0f}"),
        "basket_spend": ("spends {:,.0f} per order", "{:,.0f}"),
        "basket_units": ("buys {:,.0f} units per order", "{:,.0f}"),
    }.get(name, (name + " {:,.2f}", "{:,.2f}"))
    return f"{unit[0].format(value)}; typically {unit[1].format(typical)} in {segment_name}"
