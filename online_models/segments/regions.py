"""Dense regions of micro-clusters and the ids that follow them: DBSTREAM's reclustering.

DBSTREAM (Hahsler and Bolanos 2016, as River's ``cluster.DBSTREAM`` implements it) keeps
micro-clusters and the *shared density* of every pair: the weight of the points that fell
within reach of both. Its offline step joins the *strong* micro-clusters (enough weight) whose
shared density, relative to their mean weight, exceeds the ``intersection_factor``: the
connected components are the dense regions (:func:`recluster`, with scipy's
``connected_components`` over that graph, the partition River's ``_generate_labels`` finds).

Components have no identity of their own from one reclustering to the next; the registry
gives each a stable id. A component carries the ids its micro-clusters had:

- one id: it keeps it (its centre in the registry follows it);
- a *split* (one id's micro-clusters now in several components): the component nearest the
  id's registered centre keeps it, the others are new regions;
- a *merge* (several ids in one component): the id of most of the component's weight survives
  (ties: the older, smaller id), the others retire, naming the survivor as their successor;
- none (new micro-clusters only, or the part of a split that did not keep the id): the
  nearest registered region that no component claimed, within ``match_radius`` of its
  centre, else a new id. So a region whose micro-clusters faded and formed again in place,
  or that merged into another and separates again where it was, gets its own id back.

An id is never given to a region elsewhere (beyond ``match_radius`` of where it last was),
and ids are never recycled: a region that lost every strong micro-cluster, or merged, stays
in the registry (the merged one naming its successor) until it comes back where it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["Registry", "recluster"]

logger = logging.getLogger(__name__)

#: The label of a micro-cluster in no dense region.
NO_REGION = -1


@dataclass(frozen=True, slots=True)
class Registry:
    """Every region id given so far: its latest centre, and the id it merged into (its
    successor, -1 while it has none). ``next_id`` is the id the next new region gets."""

    ids: np.ndarray  # (regions,) int64, increasing
    centres: np.ndarray  # (regions, features)
    successors: np.ndarray  # (regions,) int64
    next_id: int = 0

    @classmethod
    def empty(cls, features: int) -> Registry:
        """No region yet."""
        return cls(np.zeros(0, np.int64), np.zeros((0, features)), np.zeros(0, np.int64))

    def current(self, labels: np.ndarray) -> np.ndarray:
        """``labels`` with every retired id replaced by the id it (in the end) merged into,
        an id the registry does not hold by :data:`NO_REGION`."""
        successor = dict(zip(self.ids.tolist(), self.successors.tolist(), strict=True))
        resolved = {}
        for label in np.unique(labels).tolist():
            region, seen = label, set()
            while region in successor and successor[region] >= 0 and region not in seen:
                seen.add(region)
                region = successor[region]
            resolved[label] = region if region in successor else NO_REGION
        return np.array([resolved[label] for label in labels.tolist()], dtype=np.int64)


def recluster(
    centres: np.ndarray,
    weights: np.ndarray,
    pairs: np.ndarray,
    shared: np.ndarray,
    labels: np.ndarray,
    registry: Registry,
    *,
    intersection_factor: float,
    minimum_weight: float,
    minimum_weight_share: float,
    match_radius: float,
    max_regions: int = 256,
) -> tuple[np.ndarray, Registry]:
    """Each micro-cluster's region id (:data:`NO_REGION` for a weak one) and the registry
    after this reclustering of micro-clusters at ``centres`` with ``weights``, shared density
    ``shared`` between the ``pairs`` (i < j), and last reclustering's ``labels``.

    A micro-cluster is strong with a weight of at least ``minimum_weight`` and at least
    ``minimum_weight_share`` of all the weight.

    >>> centres = np.array([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0]])
    >>> labels, registry = recluster(
    ...     centres, np.array([10.0, 10.0, 10.0]), np.array([[0, 1]]), np.array([8.0]),
    ...     np.full(3, NO_REGION), Registry.empty(2), intersection_factor=0.3,
    ...     minimum_weight=1.0, minimum_weight_share=0.0, match_radius=0.4)
    >>> labels.tolist(), registry.ids.tolist()
    ([0, 0, 1], [0, 1])
    """
    strong = (weights > 0) & (weights >= max(minimum_weight, minimum_weight_share * weights.sum()))
    components = _components(weights, pairs, shared, strong, intersection_factor)
    count = int(components.max()) + 1 if len(components) and (components >= 0).any() else 0
    if count == 0:
        return np.full(len(weights), NO_REGION, np.int64), registry
    member_weight = np.where(strong, weights, 0.0)
    index = np.where(strong, components, 0)
    mass = np.bincount(index, weights=member_weight, minlength=count)
    sums = np.stack(
        [np.bincount(index, weights=member_weight * centres[:, f], minlength=count)
         for f in range(centres.shape[1])], axis=1,
    )  # fmt: skip
    component_centres = sums / mass[:, None]
    previous = registry.current(labels)
    ids, successors, next_id = _match(
        component_centres, mass, components, previous, member_weight, registry, match_radius
    )
    new_labels = np.where(strong, ids[index], NO_REGION)
    return new_labels, _registry(registry, ids, component_centres, successors, next_id, max_regions)


def _components(
    weights: np.ndarray,
    pairs: np.ndarray,
    shared: np.ndarray,
    strong: np.ndarray,
    intersection_factor: float,
) -> np.ndarray:
    """The connected component of each strong micro-cluster (-1 for a weak one), numbered
    in order of their first micro-cluster."""
    size = len(weights)
    if len(pairs):
        i, j = pairs[:, 0], pairs[:, 1]
        connectivity = shared / np.maximum((weights[i] + weights[j]) / 2.0, 1e-300)
        edge = strong[i] & strong[j] & (connectivity > intersection_factor)
        i, j = i[edge], j[edge]
    else:
        i = j = np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(size, size))
    _, found = connected_components(graph, directed=False)
    # Renumbered over strong micro-clusters only, in order of appearance.
    _, first, inverse = np.unique(found[strong], return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    components = np.full(size, -1, np.int64)
    components[strong] = order[inverse]
    return components


def _match(
    component_centres: np.ndarray,
    mass: np.ndarray,
    components: np.ndarray,
    previous: np.ndarray,
    member_weight: np.ndarray,
    registry: Registry,
    match_radius: float,
) -> tuple[np.ndarray, dict[int, int], int]:
    """Each component's id, the ids retiring into another (see the module's rules) and the
    id the next new region will get."""
    count = len(mass)
    carried: list[dict[int, float]] = [{} for _ in range(count)]
    for component, region, weight in zip(
        components.tolist(), previous.tolist(), member_weight.tolist(), strict=True
    ):
        if component >= 0 and region != NO_REGION:
            carried[component][region] = carried[component].get(region, 0.0) + weight
    registered = dict(zip(registry.ids.tolist(), registry.centres, strict=True))
    # A split: the component nearest the id's registered centre keeps it.
    keeper: dict[int, int] = {}
    for component in range(count):
        for region in carried[component]:
            best = keeper.get(region)
            if best is None or _distance(component_centres[component], registered[region]) < (
                _distance(component_centres[best], registered[region])
            ):
                keeper[region] = component
    ids = np.full(count, NO_REGION, np.int64)
    successors: dict[int, int] = {}
    for component in range(count):
        kept = [region for region in carried[component] if keeper[region] == component]
        if not kept:
            continue
        # A merge: the id carrying most of the weight survives (ties: the older id).
        survivor = max(kept, key=lambda region: (carried[component][region], -region))
        ids[component] = survivor
        successors.update({region: survivor for region in kept if region != survivor})
    claimed = set(ids.tolist()) | set(successors)
    next_id = registry.next_id
    for component in np.argsort(-mass, kind="stable").tolist():
        if ids[component] != NO_REGION:
            continue
        free = [r for r in registered if r not in claimed]
        near = [
            (_distance(component_centres[component], registered[r]), r)
            for r in free
            if _distance(component_centres[component], registered[r]) <= match_radius
        ]
        if near:
            ids[component] = min(near)[1]
        else:
            ids[component], next_id = next_id, next_id + 1
        claimed.add(int(ids[component]))
    return ids, successors, next_id


def _registry(
    registry: Registry,
    ids: np.ndarray,
    component_centres: np.ndarray,
    successors: dict[int, int],
    next_id: int,
    max_regions: int,
) -> Registry:
    """The registry with the components' ids at their centres, new ids added and merged ids
    retired; beyond ``max_regions`` entries the oldest of those not in use are forgotten."""
    width = component_centres.shape[1]
    centres = dict(zip(registry.ids.tolist(), registry.centres, strict=True))
    retired = dict(zip(registry.ids.tolist(), registry.successors.tolist(), strict=True))
    for region, centre in zip(ids.tolist(), component_centres, strict=True):
        centres[region] = centre
        retired[region] = NO_REGION  # in use: a region that merged away and came back
    retired.update(successors)
    keep = sorted(centres)
    if len(keep) > max_regions:
        alive = set(ids.tolist())
        spare = [region for region in keep if region not in alive]
        forget = set(spare[: len(keep) - max_regions])
        keep = [region for region in keep if region not in forget]
    return Registry(
        np.array(keep, dtype=np.int64),
        np.array([centres[region] for region in keep]).reshape(len(keep), width),
        np.array([retired[region] for region in keep], dtype=np.int64),
        next_id,
    )


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum()))
