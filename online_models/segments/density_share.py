"""DBSTREAM's micro-clusters as a share of the group model: merge, fusion, cleanup, reclustering."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from online_models.customer.activity import DAY
from online_models.customer.profile import SEGMENT_FEATURES
from online_models.segments.outliers import DISTANCE_BINS, empty_histogram, readable_histogram
from online_models.segments.regions import NO_REGION, Registry, recluster

__all__ = [
    "DensityShare",
    "cleaned",
    "fuse",
    "merge_density",
    "pairs_added",
    "reclustered",
    "selected",
]

logger = logging.getLogger(__name__)

_FEATURES = len(SEGMENT_FEATURES)
# A region whose micro-clusters faded is matched again within this many clustering thresholds.
_MATCH_RADII = 2.0
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
    pairs, shared = pairs_added(a.pairs, a.shared, target[b.pairs], b.shared)
    merged = DensityShare(
        centres, weights, pairs, shared,
        np.concatenate([a.labels, np.full(int((~near).sum()), NO_REGION)]), a.registry, time,
        a.points + b.points, a.distances + b.distances,
    )  # fmt: skip
    if len(weights) > max_micro_clusters:
        strongest = np.argsort(-weights, kind="stable")[:max_micro_clusters]
        keep = np.zeros(len(weights), bool)
        keep[strongest] = True
        merged, moved = selected(merged, keep)
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
    return selected(share, share.weights >= weak)[0]


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


def selected(share: DensityShare, keep: np.ndarray) -> tuple[DensityShare, np.ndarray]:
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


def pairs_added(
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
