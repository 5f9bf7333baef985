"""DBSTREAM's micro-clusters as arrays: the shared part, its merge and cleanup, and the live
arrays a density segmenter learns in (:mod:`online_models.segments.density`).

Weights and shared densities of the live arrays are kept forward-decayed: each point adds
``2**(t / halflife)`` counted from a landmark, so a point never rescales everything else; a
share holds them as of its event time, as the k-means share does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from online_models.customer.activity import DAY
from online_models.segments.kmeans import SEGMENT_FEATURES
from online_models.segments.outliers import DISTANCE_BINS, empty_histogram, readable_histogram
from online_models.segments.regions import NO_REGION, Registry, recluster

__all__ = [
    "DensityShare",
    "MicroClusters",
    "cleaned",
    "fuse",
    "merge_density",
    "reclustered",
]

logger = logging.getLogger(__name__)

_FEATURES = len(SEGMENT_FEATURES)
# A region whose micro-clusters faded is matched again within this many clustering thresholds.
_MATCH_RADII = 2.0
# Forward-decayed values are rescaled once they reach 2**_REBASE, far from overflow.
_REBASE = 60.0
_MAX_REGIONS = 256


@dataclass(slots=True)
class DensityShare:
    """The density segmenter's shared part, or what one worker learned since its last delta.

    Micro-cluster ``i`` sits at ``centres[i]`` with ``weights[i]``; ``shared[k]`` is the shared
    density of micro-clusters ``pairs[k]`` (i < j); weights and densities are as of event time
    ``time``. ``labels[i]`` is the region micro-cluster ``i`` belongs to (-1: none), as the
    group's model last reclustered; ``registry`` holds every region id given. ``distances``
    is the decayed histogram of the learned points' distances to the nearest micro-cluster
    of a region (:mod:`online_models.segments.outliers`).
    """

    centres: np.ndarray
    weights: np.ndarray
    pairs: np.ndarray
    shared: np.ndarray
    labels: np.ndarray
    registry: Registry
    time: float = -math.inf
    points: int = 0
    distances: np.ndarray = field(default_factory=empty_histogram)

    @classmethod
    def empty(cls) -> DensityShare:
        """No micro-cluster, no region, no point."""
        return cls(
            np.zeros((0, _FEATURES)), np.zeros(0), np.zeros((0, 2), np.int64), np.zeros(0),
            np.zeros(0, np.int64), Registry.empty(_FEATURES),
        )  # fmt: skip

    @classmethod
    def of(cls, centres: np.ndarray, weights: np.ndarray, time: float = -math.inf) -> DensityShare:
        """Micro-clusters at ``centres`` with ``weights`` as of ``time``, in no region."""
        empty = cls.empty()
        labels = np.full(len(weights), NO_REGION, np.int64)
        return replace(empty, centres=centres, weights=weights, labels=labels, time=time)

    def decayed(self, time: float, halflife_days: float) -> DensityShare:
        """This share as of the later event time ``time`` (a copy)."""
        factor = 1.0
        if math.isfinite(self.time) and time > self.time:
            factor = 0.5 ** ((time - self.time) / (halflife_days * DAY))
        return replace(
            self, centres=self.centres.copy(), weights=self.weights * factor,
            pairs=self.pairs.copy(), shared=self.shared * factor, labels=self.labels.copy(),
            time=max(self.time, time), distances=self.distances * factor,
        )  # fmt: skip

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Metadata and arrays for a model record."""
        meta = {
            "time": self.time if math.isfinite(self.time) else None,
            "points": self.points,
            "next_region": self.registry.next_id,
        }
        arrays = {
            "centres": self.centres, "weights": self.weights, "pairs": self.pairs,
            "shared": self.shared, "labels": self.labels, "regions": self.registry.ids,
            "region_centres": self.registry.centres, "successors": self.registry.successors,
            "distances": self.distances,
        }  # fmt: skip
        return meta, arrays

    @classmethod
    def from_arrays(
        cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], *, max_micro_clusters: int
    ) -> DensityShare:
        """The share a model record carries; ValueError if it does not fit the segmenter."""
        share = cls(
            arrays["centres"].astype(float), arrays["weights"].astype(float),
            arrays["pairs"].astype(np.int64), arrays["shared"].astype(float),
            arrays["labels"].astype(np.int64),
            Registry(
                arrays["regions"].astype(np.int64), arrays["region_centres"].astype(float),
                arrays["successors"].astype(np.int64), int(meta.get("next_region", 0)),
            ),
            -math.inf if meta.get("time") is None else float(meta["time"]),
            int(meta.get("points", 0)),
            readable_histogram(arrays["distances"]).astype(float),
        )  # fmt: skip
        problem = share.problem(max_micro_clusters)
        if problem:
            msg = f"density share does not fit: {problem}"
            raise ValueError(msg)
        return share

    def problem(self, max_micro_clusters: int) -> str | None:
        """What makes this share unusable by a segmenter of ``max_micro_clusters``, if
        anything (shapes, finite non-negative numbers, pairs and labels that point at
        micro-clusters and regions it holds)."""
        m, registry = len(self.weights), self.registry
        shapes = (
            self.centres.shape == (m, _FEATURES) and m <= max_micro_clusters
            and self.pairs.ndim == 2 and self.pairs.shape[1] == 2
            and self.shared.shape == (len(self.pairs),) and self.labels.shape == (m,)
            and registry.ids.ndim == 1 and len(registry.ids) <= _MAX_REGIONS
            and registry.centres.shape == (len(registry.ids), _FEATURES)
            and registry.successors.shape == registry.ids.shape
            and self.distances.shape == (DISTANCE_BINS,)
        )  # fmt: skip
        if not shapes:
            return f"{m} micro-clusters (at most {max_micro_clusters}) with mismatched arrays"
        numbers = (self.centres, self.weights, self.shared, registry.centres, self.distances)
        if not all(np.isfinite(a).all() for a in numbers) or any(
            (a < 0).any() for a in (self.weights, self.shared, self.distances)
        ):
            return "numbers that are not finite or not non-negative"
        ids = set(registry.ids.tolist())
        if (
            len(ids) != len(registry.ids)
            or any(r < 0 or r >= registry.next_id for r in ids)
            or not set(self.labels.tolist()) <= ids | {NO_REGION}
            or not set(registry.successors.tolist()) <= ids | {NO_REGION}
        ):
            return "labels or successors naming regions it does not hold"
        if len(self.pairs) and not (
            (self.pairs[:, 0] < self.pairs[:, 1]).all()
            and self.pairs.min() >= 0
            and self.pairs.max() < m
        ):
            return "pairs naming micro-clusters it does not hold"
        return None


def merge_density(
    a: DensityShare,
    b: DensityShare,
    *,
    halflife_days: float,
    clustering_threshold: float,
    max_micro_clusters: int = 1024,
) -> DensityShare:
    """``a`` and ``b`` together, both decayed to the later time: each of ``b``'s
    micro-clusters joins ``a``'s nearest within ``clustering_threshold`` (weights added,
    centres averaged by weight) or is added as a new one; shared densities add through that
    mapping; distance histograms and points add. Labels and the registry are ``a``'s (the
    group's model reclusters): DBSTREAM keeps centres at least r apart, so a micro-cluster of
    another worker within r of one is the same dense spot. Beyond ``max_micro_clusters`` the
    weakest are dropped.

    >>> a = DensityShare.of(np.array([[1.0, 0, 0, 0, 0]]), np.array([3.0]))
    >>> b = DensityShare.of(np.array([[1.1, 0, 0, 0, 0], [2.0, 0, 0, 0, 0]]), np.ones(2))
    >>> merged = merge_density(a, b, halflife_days=1.0, clustering_threshold=0.2)
    >>> merged.centres[:, 0].round(3).tolist(), merged.weights.tolist()
    ([1.025, 2.0], [4.0, 1.0])
    """
    merged, _ = fuse(a, b, halflife_days, clustering_threshold, max_micro_clusters)
    return merged


def fuse(
    a: DensityShare,
    b: DensityShare,
    halflife_days: float,
    clustering_threshold: float,
    max_micro_clusters: int,
) -> tuple[DensityShare, np.ndarray]:
    """:func:`merge_density`, and where each of ``b``'s micro-clusters went (-1: dropped)."""
    time = max(a.time, b.time)
    a, b = a.decayed(time, halflife_days), b.decayed(time, halflife_days)
    size = len(a.weights)
    near = np.zeros(len(b.weights), bool)
    nearest = np.zeros(len(b.weights), np.int64)
    if size and len(b.weights):
        squared = ((b.centres[:, None, :] - a.centres[None, :, :]) ** 2).sum(axis=2)
        nearest = squared.argmin(axis=1)
        near = squared[np.arange(len(b.weights)), nearest] < clustering_threshold**2
    target = np.where(near, nearest, -1)
    target[~near] = size + np.arange(int((~near).sum()))
    centres = np.vstack([a.centres, b.centres[~near]])
    weights = np.concatenate([a.weights, np.zeros(int((~near).sum()))])
    sums = centres * weights[:, None]
    np.add.at(sums, target, b.centres * b.weights[:, None])
    np.add.at(weights, target, b.weights)
    centres = np.divide(sums, weights[:, None], out=centres, where=weights[:, None] > 0)
    pairs, shared = _pairs_added(a.pairs, a.shared, target[b.pairs], b.shared)
    merged = DensityShare(
        centres, weights, pairs, shared,
        np.concatenate([a.labels, np.full(int((~near).sum()), NO_REGION)]), a.registry, time,
        a.points + b.points, a.distances + b.distances,
    )  # fmt: skip
    if len(weights) > max_micro_clusters:
        strongest = np.argsort(-weights, kind="stable")[:max_micro_clusters]
        keep = np.zeros(len(weights), bool)
        keep[strongest] = True
        merged, moved = _selected(merged, keep)
        target = moved[target]
    return merged, target


def cleaned(
    share: DensityShare, *, halflife_days: float, cleanup_days: float, intersection_factor: float
) -> DensityShare:
    """``share`` without the micro-clusters lighter than the weight one point leaves after
    ``cleanup_days`` and the shared densities below ``intersection_factor`` times that
    (DBSTREAM's cleanup)."""
    weak = 0.5 ** (cleanup_days / halflife_days)
    strong_pairs = share.shared >= intersection_factor * weak
    share = replace(share, pairs=share.pairs[strong_pairs], shared=share.shared[strong_pairs])
    return _selected(share, share.weights >= weak)[0]


def reclustered(
    share: DensityShare,
    *,
    clustering_threshold: float,
    intersection_factor: float,
    minimum_weight: float,
    minimum_weight_share: float,
) -> DensityShare:
    """``share`` with its micro-clusters' regions found again and their ids kept stable
    (:func:`online_models.segments.regions.recluster`)."""
    labels, registry = recluster(
        share.centres, share.weights, share.pairs, share.shared, share.labels, share.registry,
        intersection_factor=intersection_factor, minimum_weight=minimum_weight,
        minimum_weight_share=minimum_weight_share,
        match_radius=_MATCH_RADII * clustering_threshold, max_regions=_MAX_REGIONS,
    )  # fmt: skip
    return replace(share, labels=labels, registry=registry)


def _selected(share: DensityShare, keep: np.ndarray) -> tuple[DensityShare, np.ndarray]:
    """The share of the micro-clusters ``keep`` marks, and each old index's new one (-1)."""
    moved = np.full(len(keep), -1, np.int64)
    moved[keep] = np.arange(int(keep.sum()))
    pairs = moved[share.pairs]
    both = (pairs >= 0).all(axis=1) if len(pairs) else np.zeros(0, bool)
    return (
        replace(
            share, centres=share.centres[keep], weights=share.weights[keep],
            pairs=pairs[both].reshape(-1, 2), shared=share.shared[both],
            labels=share.labels[keep],
        ),
        moved,
    )  # fmt: skip


def _pairs_added(
    pairs: np.ndarray, shared: np.ndarray, more: np.ndarray, more_shared: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Shared densities of ``pairs`` plus those of ``more`` (any order, -1 or equal ends
    dropped), one entry per pair, i < j."""
    more = more.reshape(-1, 2)
    valid = (more >= 0).all(axis=1) & (more[:, 0] != more[:, 1])
    more = np.sort(more[valid], axis=1)
    every = np.vstack([pairs.reshape(-1, 2), more])
    values = np.concatenate([shared, more_shared[valid]])
    if not len(every):
        return np.zeros((0, 2), np.int64), np.zeros(0)
    unique, inverse = np.unique(every, axis=0, return_inverse=True)
    return unique.astype(np.int64), np.bincount(inverse.ravel(), weights=values)


class MicroClusters:
    """The micro-clusters a segmenter scores with, in arrays with room to grow (the first
    ``size`` rows are in use): forward-decayed weights and shared densities (upper triangle)
    counted from ``landmark``, their regions, and what this worker's own points added to them
    since its last delta (``gains``)."""

    def __init__(self, features: int, capacity: int = 16) -> None:
        self.size = 0
        self.centres = np.zeros((capacity, features))
        self.weights = np.zeros(capacity)
        self.shared = np.zeros((capacity, capacity))
        self.labels = np.full(capacity, NO_REGION, np.int64)
        self.gains = np.zeros(capacity)
        self.gained_shared = np.zeros((capacity, capacity))
        self.distances = empty_histogram()
        self.unsent_distances = empty_histogram()
        self.time = -math.inf
        self.landmark = 0.0
        self.cleaned_at = -math.inf
        self.points = 0
        self.unsent_points = 0
        self.regions_known = False

    def squared(self, point: np.ndarray) -> np.ndarray:
        """Squared distances from ``point`` to every micro-cluster."""
        return ((self.centres[: self.size] - point) ** 2).sum(axis=1)

    def advance(self, time: float | None, halflife_days: float) -> float:
        """Move to the later event time ``time``; the forward-decayed weight of one point
        seen at ``time`` (an older point weighs less, as with the segmenter)."""
        if not math.isfinite(self.time):
            self.time = self.landmark = self.cleaned_at = 0.0 if time is None else time
        when = self.time if time is None else time
        self.time = max(self.time, when)
        halflives = (self.time - self.landmark) / (halflife_days * DAY)
        if halflives > _REBASE:
            self._rescale(0.5**halflives)
            self.landmark = self.time
        return float(2.0 ** ((when - self.landmark) / (halflife_days * DAY)))

    def learn(
        self, point: np.ndarray, squared: np.ndarray, scale: float, radius: float, most: int
    ) -> None:
        """DBSTREAM's update with a point weighing ``scale`` (River's ``_update``)."""
        self.points += 1
        self.unsent_points += 1
        near = np.flatnonzero(squared < radius * radius)
        if not len(near):
            if self.size < most:
                self._add(point, scale)
            return
        self.weights[near] += scale
        self.gains[near] += scale
        before = self.centres[near].copy()
        pull = np.exp(-squared[near] / (2.0 * (radius / 3.0) ** 2))
        self.centres[near] = before + pull[:, None] * (point - before)
        if len(near) > 1:
            # A point reaches a handful of micro-clusters: its pairs, in River's order.
            pairs = [(a, b) for a in range(len(near)) for b in range(a + 1, len(near))]
            index = near.tolist()
            for a, b in pairs:
                self.shared[index[a], index[b]] += scale
                self.gained_shared[index[a], index[b]] += scale
            self._keep_apart(index, pairs, before, radius)

    def _keep_apart(
        self, near: list[int], pairs: list[tuple[int, int]], before: np.ndarray, radius: float
    ) -> None:
        """Undo the moves of two centres the point brought within ``radius`` of each other,
        pair by pair in River's order (each check sees the moves undone before it)."""
        centres = self.centres
        for a, b in pairs:
            gap = centres[near[a]] - centres[near[b]]
            if float(gap @ gap) < radius * radius:
                centres[near[a]], centres[near[b]] = before[a], before[b]

    def _add(self, point: np.ndarray, scale: float) -> None:
        if self.size == len(self.weights):
            self._grow(2 * len(self.weights))
        n = self.size
        self.centres[n] = point
        self.weights[n] = self.gains[n] = scale
        self.labels[n] = NO_REGION
        self.size += 1

    def _grow(self, capacity: int) -> None:
        n = self.size
        for name in ("centres", "weights", "labels", "gains"):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), old.dtype)
            new[:n] = old[:n]
            setattr(self, name, new)
        self.labels[n:] = NO_REGION
        for name in ("shared", "gained_shared"):
            new = np.zeros((capacity, capacity))
            new[:n, :n] = getattr(self, name)[:n, :n]
            setattr(self, name, new)

    def _rescale(self, factor: float) -> None:
        for array in (self.weights, self.shared, self.gains, self.gained_shared):
            array *= factor
        self.distances *= factor
        self.unsent_distances *= factor

    def cleanup(
        self, halflife_days: float, cleanup_days: float, intersection_factor: float
    ) -> None:
        """DBSTREAM's cleanup (River's ``_cleanup``) as of the newest event time."""
        self.cleaned_at = self.time
        now = 0.5 ** ((self.time - self.landmark) / (halflife_days * DAY))
        weak = 0.5 ** (cleanup_days / halflife_days)
        n = self.size
        self.shared[:n, :n][self.shared[:n, :n] * now < intersection_factor * weak] = 0.0
        keep = np.flatnonzero(self.weights[:n] * now >= weak)
        if len(keep) < n:
            self._keep(keep)

    def _keep(self, keep: np.ndarray) -> None:
        m = len(keep)
        for name in ("centres", "weights", "labels", "gains"):
            array = getattr(self, name)
            array[:m] = array[keep]
        for name in ("shared", "gained_shared"):
            array = getattr(self, name)
            array[:m, :m] = array[np.ix_(keep, keep)]
            array[m:, :] = 0.0
            array[:, m:] = 0.0
        self.labels[m:] = NO_REGION
        self.weights[m:] = self.gains[m:] = 0.0
        self.size = m
        self.regions_known = bool((self.labels[:m] >= 0).any())

    def set_labels(self, labels: np.ndarray) -> None:
        self.labels[: self.size] = labels
        self.regions_known = bool((labels >= 0).any())

    def share(self, registry: Registry, halflife_days: float) -> DensityShare:
        """The micro-clusters as a share as of the newest event time."""
        return self._share(self.weights, self.shared, registry, halflife_days, self.distances,
                           self.points, self.labels[: self.size].copy())  # fmt: skip

    def unsent(self, halflife_days: float) -> DensityShare:
        """What this worker's own points added since its last delta, as a share."""
        share = self._share(self.gains, self.gained_shared, Registry.empty(self.centres.shape[1]),
                            halflife_days, self.unsent_distances, self.unsent_points,
                            np.full(self.size, NO_REGION, np.int64))  # fmt: skip
        return _selected(share, share.weights > 0)[0]

    def take_unsent(self, halflife_days: float) -> DensityShare:
        """:meth:`unsent`, then forgotten: the next delta starts from nothing."""
        delta = self.unsent(halflife_days)
        self.gains[:] = 0.0
        self.gained_shared[:] = 0.0
        self.unsent_distances[:] = 0.0
        self.unsent_points = 0
        return delta

    def _share(
        self,
        weights: np.ndarray,
        shared: np.ndarray,
        registry: Registry,
        halflife_days: float,
        distances: np.ndarray,
        points: int,
        labels: np.ndarray,
    ) -> DensityShare:
        n = self.size
        now = 1.0
        if math.isfinite(self.time):
            now = 0.5 ** ((self.time - self.landmark) / (halflife_days * DAY))
        i, j = np.nonzero(np.triu(shared[:n, :n], 1))
        return DensityShare(
            self.centres[:n].copy(), weights[:n] * now, np.column_stack([i, j]).astype(np.int64),
            shared[i, j] * now, labels, registry, self.time, points, distances * now,
        )  # fmt: skip

    @classmethod
    def of(
        cls, share: DensityShare, unsent: DensityShare, moved: np.ndarray, before: MicroClusters
    ) -> MicroClusters:
        """Micro-clusters scored with from now on: ``share`` (which holds ``unsent``, whose
        micro-clusters went to ``moved``), landmark at its time, with ``unsent`` still this
        worker's own to send."""
        n = len(share.weights)
        live = cls(share.centres.shape[1], max(16, n))
        live.size = n
        live.centres[:n] = share.centres
        live.weights[:n] = share.weights
        live.labels[:n] = share.labels
        if len(share.pairs):
            live.shared[share.pairs[:, 0], share.pairs[:, 1]] = share.shared
        kept = moved >= 0
        np.add.at(live.gains, moved[kept], unsent.weights[kept])
        gained, values = _pairs_added(
            np.zeros((0, 2), np.int64), np.zeros(0), moved[unsent.pairs], unsent.shared
        )
        live.gained_shared[gained[:, 0], gained[:, 1]] = values
        live.time = share.time
        live.landmark = share.time if math.isfinite(share.time) else 0.0
        live.cleaned_at = before.cleaned_at if math.isfinite(before.cleaned_at) else share.time
        live.distances = share.distances.copy()
        live.unsent_distances = unsent.distances.copy()
        live.points, live.unsent_points = share.points, unsent.points
        live.regions_known = bool((share.labels >= 0).any())
        return live
