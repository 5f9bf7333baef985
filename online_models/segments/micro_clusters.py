"""DBSTREAM's live micro-clusters as arrays, which a density segmenter learns in
(:mod:`online_models.segments.density`); their share of the group model, its merge and
cleanup are in :mod:`online_models.segments.density_share`.

Weights and shared densities of the live arrays are kept forward-decayed: each point adds
``2**(t / halflife)`` counted from a landmark, so a point never rescales everything else; a
share holds them as of its event time, as the k-means share does.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from online_models.customer.activity import DAY
from online_models.segments.density_share import DensityShare, pairs_added, selected
from online_models.segments.outliers import empty_histogram
from online_models.segments.regions import NO_REGION, Registry

__all__ = ["MicroClusters"]

logger = logging.getLogger(__name__)

# Forward-decayed values are rescaled once they reach 2**_REBASE, far from overflow.
_REBASE = 60.0


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
        return selected(share, share.weights > 0)[0]

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
        gained, values = pairs_added(
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
