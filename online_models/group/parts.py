"""One model for a whole consumer group: the parts every worker shares, deltas and merging.

Each worker learns from its own events and, every sync, hands what it learned since its last
delta to the group (:meth:`WorkerSync.deltas`). One worker merges the deltas into the group's
model (:class:`GroupModel`, Flink ML's single model-update operator) and publishes the parts
that changed as a new version; every worker then scores with that version plus what the group
has not merged yet of its own (:meth:`WorkerSync.apply`).

The model is cut into *parts* (``churn``, ``segments`` or ``density``, ``value``,
``lifetime``, ``spend``, and the items in ``item_buckets`` buckets), each with its own version and a
record of the latest delta of every worker it includes: merging is idempotent per part, so a
delta delivered twice, or a version published half before its merger died, never counts
anything twice.

Merge rules (each model's ``merge_*`` function, tested on its own):

- counts and sums merge exactly: value-rank bin counts, the churn scaler's statistics, the
  value regression's sufficient statistics (``spend``: a worker's sums add), label counts,
  segment sums and weights, popularity, co-purchase counts;
- gradient-learned weights (churn regression, AdaGrad's squared gradients, item factors): a
  delta is the sum of its worker's per-example steps, and the group adds the steps, so each
  worker counts in proportion to the examples it learned, as in one model taking every step;
- segment centres are created in the group's model only, from the candidates deltas propose;
- density micro-clusters (``CRM_SEGMENT_MODEL=density``): a delta's micro-clusters join the
  group's nearest within the clustering threshold, weights and shared densities added, centres
  averaged by weight, or are added as new ones; the group's model alone cleans them up and
  reclusters them into regions, with the ids its registry keeps, when it publishes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np

from online_models.churn.model import ChurnShare, merge_churn
from online_models.recommend.ease import EaseCounts, EaseShare
from online_models.recommend.items import ItemShare, initial_latent, merge_items
from online_models.scoring.scorer import ScorerConfig, make_segmenter
from online_models.segments.centres import SegmentShare, merge_segments
from online_models.segments.density import DensitySegmenter
from online_models.segments.density_share import DensityShare
from online_models.value.lifetime_fit import LifetimeShare, merge_lifetime
from online_models.value.ranks import ValueShare, merge_value
from online_models.value.spend import SpendShare, merge_spend

__all__ = [
    "CHURN",
    "DENSITY",
    "EASE",
    "ITEM_PARTS",
    "LIFETIME",
    "SEGMENTS",
    "SPEND",
    "VALUE",
    "Delta",
    "GroupPart",
    "Share",
    "item_bucket",
    "item_part",
    "merge_part",
    "share_from_arrays",
    "share_to_arrays",
]

logger = logging.getLogger(__name__)

CHURN, SEGMENTS, DENSITY, VALUE, LIFETIME = "churn", "segments", "density", "value", "lifetime"
SPEND = "spend"
#: EASE's fitted weights (a part) and the ownership counts it is fitted from (the deltas; the
#: group's model keeps their sum, the Gram, and publishes the part when it refits).
EASE = "ease"
ITEM_PARTS = "items/"


# The segmenter's distance below which a proposed centre duplicates one (Segmenter's default).
_MIN_SEED_DISTANCE = 0.15

Share = (
    ChurnShare
    | SegmentShare
    | DensityShare
    | ValueShare
    | LifetimeShare
    | SpendShare
    | ItemShare
    | EaseShare
    | EaseCounts
)


def item_part(bucket: int) -> str:
    """The key of the part holding the items of ``bucket``.

    >>> item_part(7)
    'items/0007'
    """
    return f"{ITEM_PARTS}{bucket:04d}"


def item_bucket(key: str) -> int:
    """The bucket of the items part ``key`` (see :func:`item_part`)."""
    return int(key.removeprefix(ITEM_PARTS))


@dataclass(frozen=True, slots=True)
class Delta:
    """What ``worker`` learned for part ``key`` since its delta ``seq - 1``."""

    key: str
    worker: str
    seq: int
    share: Share


@dataclass(frozen=True, slots=True)
class GroupPart:
    """One part of the group's model: its share, the version that last changed it, and the
    latest delta of each worker it includes.

    An items part also says what changed since the version ``since`` of it: the positions
    of the items in ``changed``, so a worker that applied that version applies only them.
    """

    key: str
    share: Share
    version: int
    merged: Mapping[str, int] = field(default_factory=dict)
    since: int = 0
    changed: np.ndarray | None = None


def empty_share(key: str, config: ScorerConfig) -> Share:
    """A part with nothing learned."""
    if key == CHURN:
        return ChurnShare.zero()
    if key == SEGMENTS:
        return SegmentShare.empty()
    if key == DENSITY:
        return DensityShare.empty()
    if key == VALUE:
        return ValueShare.zero()
    if key == LIFETIME:
        return LifetimeShare.empty()
    if key == SPEND:
        return SpendShare.zero()
    if key == EASE:
        return EaseShare.empty()
    return ItemShare.empty(config.recommender_factors)


def merge_part(key: str, group: Share, delta: Share, config: ScorerConfig) -> Share:
    """The group's part ``key`` with ``delta`` merged in (the merging worker's rule)."""
    if isinstance(group, ChurnShare) and isinstance(delta, ChurnShare):
        return merge_churn(group, delta)
    if isinstance(group, SegmentShare) and isinstance(delta, SegmentShare):
        # The group's generations hold, as on a worker (Segmenter.apply): a delta's rows of
        # another generation are dropped, whether a newer or an older one.
        delta = delta.decayed(delta.time, config.segment_halflife_days)  # a copy
        delta.follow(len(group.weights) - group.groups, group.generations)
        return merge_segments(
            group,
            delta,
            halflife_days=config.segment_halflife_days,
            max_centres=config.segments,
            min_seed_distance=_MIN_SEED_DISTANCE,
        )
    if isinstance(group, DensityShare) and isinstance(delta, DensityShare):
        return density_model(config).merge(group, delta)
    if isinstance(group, ValueShare) and isinstance(delta, ValueShare):
        return merge_value(group, delta)
    if isinstance(group, LifetimeShare) and isinstance(delta, LifetimeShare):
        return merge_lifetime(group, delta, sample_size=config.lifetime_sample)
    if isinstance(group, SpendShare) and isinstance(delta, SpendShare):
        return merge_spend(group, delta)
    if isinstance(group, ItemShare) and isinstance(delta, ItemShare):
        return merge_items(
            group,
            delta,
            initial=partial(initial_latent, n_factors=config.recommender_factors),
            max_neighbors=2 * config.co_purchase_neighbors,
        )
    msg = f"part {key} cannot merge a {type(delta).__name__} into a {type(group).__name__}"
    raise TypeError(msg)


def density_model(config: ScorerConfig) -> DensitySegmenter:
    """A density segmenter with ``config``'s hyperparameters: the group's rules for density
    parts are its (:meth:`DensitySegmenter.merge`, :meth:`DensitySegmenter.settle`)."""
    segmenter = make_segmenter(replace(config, segment_model="density"))
    assert isinstance(segmenter, DensitySegmenter)
    return segmenter


def share_to_arrays(share: Share) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A share as record metadata and arrays."""
    return share.to_arrays()


def share_from_arrays(
    key: str,
    meta: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    config: ScorerConfig,
    *,
    delta: bool = False,
) -> Share:
    """The share of part ``key`` a record carries (a ``delta``'s or a part's: they differ
    for ``ease`` only). Raises ValueError (or KeyError for a missing array) when it does not
    fit models made with ``config``."""
    if key == EASE:
        return (
            EaseCounts.from_arrays(meta, arrays) if delta else EaseShare.from_arrays(meta, arrays)
        )
    if key == CHURN:
        return ChurnShare.from_arrays(meta, arrays)
    if key in (SEGMENTS, DENSITY):
        model = DENSITY if config.segment_model == "density" else SEGMENTS
        if key != model:
            msg = f"part {key} is not the segments of CRM_SEGMENT_MODEL={config.segment_model}"
            raise ValueError(msg)
        if key == DENSITY:
            limit = density_model(config).max_micro_clusters
            return DensityShare.from_arrays(meta, arrays, max_micro_clusters=limit)
        return SegmentShare.from_arrays(meta, arrays, max_centres=config.segments)
    if key == VALUE:
        return ValueShare.from_arrays(meta, arrays)
    if key == LIFETIME:
        return LifetimeShare.from_arrays(meta, arrays, sample_size=config.lifetime_sample)
    if key == SPEND:
        return SpendShare.from_arrays(meta, arrays)
    if key.startswith(ITEM_PARTS) and key[len(ITEM_PARTS) :].isdigit():
        if item_bucket(key) >= config.item_buckets:
            msg = f"part {key} is beyond the {config.item_buckets} item buckets"
            raise ValueError(msg)
        return ItemShare.from_arrays(meta, arrays, n_factors=config.recommender_factors)
    msg = f"no part of the model is called {key!r}"
    raise ValueError(msg)
