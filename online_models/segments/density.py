"""Density-based segments: DBSTREAM's micro-clusters over the segment features, stable ids.

k-means puts every customer in some segment; density clustering finds the dense groups and
leaves the rest as outliers. The model is DBSTREAM (Hahsler and Bolanos 2016) as River's
``cluster.DBSTREAM`` implements it, step for step: a point within ``clustering_threshold``
(r) of micro-clusters adds one to their faded weights, pulls each centre towards it by a
Gaussian of its distance (sigma r / 3, undone for two centres it would bring within r of each
other), and adds one to the *shared density* of each pair it fell between; a point near none
starts a micro-cluster. Cleanup drops those fading below the weight one point leaves after
``cleanup_days``. Reclustering joins the strong micro-clusters whose shared density is high
enough into regions (:mod:`online_models.segments.regions`), whose ids the registry keeps stable.

It is written out over numpy arrays (:mod:`online_models.segments.micro_clusters`), with a test
pinning its micro-clusters, weights and shared densities to River's on a stream, because River's
class counts time in points where the scorer decays by event time (``halflife_days``), measures
every micro-cluster in a Python loop per point, has no delta or merge for a group of workers, and
never says a point is in no dense region (its ``predict_one`` answers the nearest
macro-cluster).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from online_models.customer.activity import DAY
from online_models.customer.profile import SEGMENT_FEATURES
from online_models.segments.density_share import (
    DensityShare,
    cleaned,
    fuse,
    merge_density,
    reclustered,
)
from online_models.segments.micro_clusters import MicroClusters
from online_models.segments.names import segment_names, segment_vector
from online_models.segments.outliers import (
    Placement,
    Placements,
    distance_bin,
    distance_rank,
    distance_ranks,
    unusual_features,
)
from online_models.segments.regions import NO_REGION, Registry

__all__ = ["UNUSUAL", "UNUSUAL_NAME", "DensitySegmenter"]

logger = logging.getLogger(__name__)

#: The segment id and name of a customer in no dense region.
UNUSUAL = -1
UNUSUAL_NAME = "unusual"
_FEATURES = len(SEGMENT_FEATURES)


class DensitySegmenter:
    """DBSTREAM over the segment features: dense regions are segments, customers in none are
    outliers (segment :data:`UNUSUAL`, named ``unusual``).

    A customer is in a region when a micro-cluster of it is within ``clustering_threshold``;
    their ``outlier_score`` is the percentile rank of their distance to the nearest such
    micro-cluster among the learned points' (:mod:`online_models.segments.outliers`). A
    micro-cluster is strong with a weight of at least ``minimum_weight`` and at least
    ``minimum_weight_share`` of all the weight (River's ``minimum_weight``, made relative so
    that it holds for any number of customers); a point ``halflife_days`` older weighs half
    (River's ``fading_factor`` in event time).

    Alone, it reclusters every ``recluster_every`` points it learns; in a group
    (``shared = True``) only the group's model reclusters, so a region id names the same
    region on every worker.

    >>> segmenter = DensitySegmenter(recluster_every=16, minimum_weight=2.0)
    >>> for n in range(400):
    ...     segmenter.learn_one({"ordered": 1.0, "monetary": 0.3 + 0.01 * (n % 5)}, n * 60.0)
    >>> segmenter.predict_one({"ordered": 1.0, "monetary": 0.32})
    0
    >>> segmenter.place_one({"ordered": 1.0, "monetary": 1.5, "frequency": 1.5})
    Placement(segment=-1, outlier_score=1.0, outlier=True)
    >>> segmenter.describe(-1)
    'unusual'
    """

    def __init__(
        self,
        clustering_threshold: float = 0.2,
        halflife_days: float = 1.0,
        intersection_factor: float = 0.3,
        minimum_weight: float = 5.0,
        minimum_weight_share: float = 0.002,
        cleanup_days: float = 1.0,
        max_micro_clusters: int = 1024,
        recluster_every: int = 256,
    ) -> None:
        if not (clustering_threshold > 0 and halflife_days > 0 and cleanup_days > 0):
            msg = (
                "clustering_threshold, halflife_days and cleanup_days must be > 0, got "
                f"{clustering_threshold}, {halflife_days}, {cleanup_days}"
            )
            raise ValueError(msg)
        self.clustering_threshold = clustering_threshold
        self.halflife_days = halflife_days
        self.intersection_factor = intersection_factor
        self.minimum_weight = minimum_weight
        self.minimum_weight_share = minimum_weight_share
        self.cleanup_days = cleanup_days
        self.max_micro_clusters = max_micro_clusters
        self.recluster_every = recluster_every
        #: In a group: regions come from the group's model, never from this segmenter alone.
        self.shared = False
        self._live = MicroClusters(_FEATURES)
        self._registry = Registry.empty(_FEATURES)
        self._names: dict[int, str] = {}
        self._clustered_at = 0

    # --- what a score asks ---------------------------------------------------------------

    @property
    def learned(self) -> int:
        """Points learned so far (by the whole group, for a shared segmenter)."""
        return self._live.points

    @property
    def ready(self) -> bool:
        """Whether any dense region was found yet (before, every customer is in segment 0)."""
        return self._live.regions_known

    @property
    def micro_clusters(self) -> int:
        """Micro-clusters held."""
        return self._live.size

    def centers(self) -> dict[int, dict[str, float]]:
        """Each dense region's centre, by id."""
        alive = set(self._live.labels[: self._live.size].tolist()) - {NO_REGION}
        return {
            region: dict(zip(SEGMENT_FEATURES, centre.tolist(), strict=True))
            for region, centre in zip(
                self._registry.ids.tolist(), self._registry.centres, strict=True
            )
            if region in alive
        }

    def predict_one(self, x: Mapping[str, float]) -> int:
        """The region of ``x``: :data:`UNUSUAL` in none (0 before any region was found)."""
        return self.place_one(x).segment

    def place_one(self, x: Mapping[str, float]) -> Placement:
        """The region of ``x``, its outlier score and whether it is in no region, learning
        nothing."""
        return self._placed(self._live.squared(segment_vector(x)))[0]

    def describe(self, segment: int) -> str:
        """The region in CRM words: named as k-means names its centres, ``unusual`` for
        :data:`UNUSUAL`; a region merged into another has its survivor's name, one that
        faded the name of the nearest live region."""
        if segment == UNUSUAL:
            return UNUSUAL_NAME
        return self._names.get(segment) or self._faded_name(segment)

    def describe_all(self) -> dict[int, str]:
        """A distinct CRM name for every live region."""
        return dict(self._names)

    def current(self, segment: int, generation: int = 0) -> bool:
        """Whether ``segment`` is a live region (not merged into another, not faded); a
        region has no generation (:meth:`generation`)."""
        return segment in self._names

    def generation(self, segment: int) -> int:
        """Always 0: density regions keep no generation."""
        return 0

    def unusual_features(
        self, x: Mapping[str, float], quantities: Mapping[str, float]
    ) -> list[dict[str, Any]]:
        """The features making ``x`` far from the nearest micro-cluster of a dense region
        (see :func:`online_models.segments.outliers.unusual_features`)."""
        point = segment_vector(x)
        nearest = self._nearest_in_region(self._live.squared(point))
        if nearest is None:
            return []
        live = self._live
        name = self.describe(int(live.labels[nearest]))
        return unusual_features(point, live.centres[nearest], SEGMENT_FEATURES, quantities, name)

    # --- learning ----------------------------------------------------------------------------

    def learn_one(self, x: Mapping[str, float], time: float | None = None) -> None:
        """Learn the point ``x`` seen at event time ``time`` (None: as of the newest)."""
        self.learn_place_one(x, time)

    def learn_predict_one(self, x: Mapping[str, float], time: float | None = None) -> int:
        """Learn ``x`` (at event time ``time``) and return its region."""
        return self.learn_place_one(x, time).segment

    def learn_place_one(self, x: Mapping[str, float], time: float | None = None) -> Placement:
        """:meth:`place_one` of ``x`` with the model as it is, then ``x`` learned."""
        point = segment_vector(x)
        squared = self._live.squared(point)
        placement, distance = self._placed(squared)
        self._learn(point, squared, time, distance)
        self._after_learning()
        return placement

    def learn_predict_many(self, points: np.ndarray, times: np.ndarray) -> np.ndarray:
        """The regions of ``points`` (:meth:`learn_place_many`)."""
        return self.learn_place_many(points, times).segments

    def learn_place_many(self, points: np.ndarray, times: np.ndarray) -> Placements:
        """The placements of ``points`` (rows in ``SEGMENT_FEATURES`` order, seen at event
        ``times``) with the model as it was before them all, then each point learned in turn
        (DBSTREAM's step has no mini-batch form; each is one step over arrays). Columns past
        the segment features (the basket of ``OUTLIER_FEATURES`` rows) are not used."""
        points = points[:, :_FEATURES]
        live = self._live
        squared = ((live.centres[None, : live.size, :] - points[:, None, :]) ** 2).sum(axis=2)
        masked = np.where(live.labels[None, : live.size] >= 0, squared, np.inf)
        nearest = masked.argmin(axis=1) if live.size else np.zeros(len(points), np.int64)
        distances = (
            np.sqrt(masked[np.arange(len(points)), nearest])
            if live.size
            else np.full(len(points), np.inf)
        )
        placements = self._placements(nearest, distances)
        for point, time, distance in zip(points, times.tolist(), distances.tolist(), strict=True):
            self._learn(point, live.squared(point), time, distance)
        self._after_learning()
        return placements

    def _learn(
        self, point: np.ndarray, squared: np.ndarray, time: float | None, distance: float
    ) -> None:
        live = self._live
        scale = live.advance(time, self.halflife_days)
        live.learn(point, squared, scale, self.clustering_threshold, self.max_micro_clusters)
        if math.isfinite(distance):
            live.distances[distance_bin(distance)] += scale
            live.unsent_distances[distance_bin(distance)] += scale

    def _after_learning(self) -> None:
        live = self._live
        if live.time - live.cleaned_at >= self.cleanup_days * DAY:
            live.cleanup(self.halflife_days, self.cleanup_days, self.intersection_factor)
        if not self.shared and live.points - self._clustered_at >= self.recluster_every:
            self._recluster()

    def _recluster(self) -> None:
        share = reclustered(
            self._live.share(self._registry, self.halflife_days),
            clustering_threshold=self.clustering_threshold,
            intersection_factor=self.intersection_factor, minimum_weight=self.minimum_weight,
            minimum_weight_share=self.minimum_weight_share,
        )  # fmt: skip
        self._live.set_labels(share.labels)
        self._take_registry(share.registry)
        self._clustered_at = self._live.points

    # --- the group ---------------------------------------------------------------------------

    def merge(self, a: DensityShare, b: DensityShare) -> DensityShare:
        """:func:`merge_density` with this segmenter's hyperparameters (changes nothing)."""
        return merge_density(
            a, b, halflife_days=self.halflife_days,
            clustering_threshold=self.clustering_threshold,
            max_micro_clusters=self.max_micro_clusters,
        )  # fmt: skip

    def settle(self, share: DensityShare) -> DensityShare:
        """The group's share ready to publish: DBSTREAM's cleanup, then its regions found
        again with stable ids (:func:`cleaned`, :func:`reclustered`; changes nothing)."""
        share = cleaned(
            share, halflife_days=self.halflife_days, cleanup_days=self.cleanup_days,
            intersection_factor=self.intersection_factor,
        )  # fmt: skip
        return reclustered(
            share, clustering_threshold=self.clustering_threshold,
            intersection_factor=self.intersection_factor, minimum_weight=self.minimum_weight,
            minimum_weight_share=self.minimum_weight_share,
        )  # fmt: skip

    def delta(self) -> DensityShare:
        """What this segmenter learned since its last delta: the weight and shared density
        its own points added, on the micro-clusters they reached (at their centres now)."""
        return self._live.take_unsent(self.halflife_days)

    def apply(self, group: DensityShare, pending: Sequence[DensityShare] = ()) -> None:
        """Score with the group's micro-clusters and regions plus what the group has not
        merged yet of this segmenter's: its ``pending`` deltas and what it learned since."""
        live = group
        for share in pending:
            live = self.merge(live, share)
        unsent = self._live.unsent(self.halflife_days)
        live, moved = fuse(
            live, unsent, self.halflife_days, self.clustering_threshold, self.max_micro_clusters
        )
        self._live = MicroClusters.of(live, unsent, moved, self._live)
        self._take_registry(group.registry)

    def _take_registry(self, registry: Registry) -> None:
        """Names from the registry's live regions: the same names on every worker."""
        self._registry = registry
        alive = sorted(set(self._live.labels[: self._live.size].tolist()) - {NO_REGION})
        centres = dict(zip(registry.ids.tolist(), registry.centres, strict=True))
        named = segment_names(np.array([centres[r] for r in alive]).reshape(-1, _FEATURES))
        self._names = {region: named[n] for n, region in enumerate(alive)}

    def _faded_name(self, segment: int) -> str:
        registry = self._registry
        [current] = registry.current(np.array([segment])).tolist()
        if current in self._names:
            return self._names[current]
        where = np.flatnonzero(registry.ids == segment)
        if not self._names or not len(where):
            return "new customers"
        centres = dict(zip(registry.ids.tolist(), registry.centres, strict=True))
        alive = list(self._names)
        gaps = [((centres[r] - registry.centres[where[0]]) ** 2).sum() for r in alive]
        return self._names[alive[int(np.argmin(gaps))]]

    # --- placing -----------------------------------------------------------------------------

    def _nearest_in_region(self, squared: np.ndarray) -> int | None:
        if not self._live.regions_known:
            return None
        masked = np.where(self._live.labels[: self._live.size] >= 0, squared, np.inf)
        return int(masked.argmin())

    def _placed(self, squared: np.ndarray) -> tuple[Placement, float]:
        """The placement of a point at ``squared`` distances from the micro-clusters, and its
        distance to the nearest one in a region (infinite before any region)."""
        nearest = self._nearest_in_region(squared)
        if nearest is None:
            return Placement(0, 0.0, False), math.inf
        distance = math.sqrt(float(squared[nearest]))
        score = distance_rank(self._live.distances, distance)
        if distance < self.clustering_threshold:
            return Placement(int(self._live.labels[nearest]), score, False), distance
        return Placement(UNUSUAL, score, True), distance

    def _placements(self, nearest: np.ndarray, distances: np.ndarray) -> Placements:
        count = len(distances)
        if not self._live.regions_known:
            return Placements(np.zeros(count, np.int64), np.zeros(count), np.zeros(count, bool))
        outliers = ~(distances < self.clustering_threshold)
        segments = np.where(outliers, UNUSUAL, self._live.labels[nearest])
        return Placements(segments, distance_ranks(self._live.distances, distances), outliers)
