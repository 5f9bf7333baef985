"""Where a customer sits among the segments (segment, outlier vectors); what a centre is called."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from online_models.customer.profile import OUTLIER_FEATURES, SEGMENT_FEATURES

__all__ = ["outlier_vector", "segment_names", "segment_vector"]

logger = logging.getLogger(__name__)


def segment_vector(x: Mapping[str, float]) -> np.ndarray:
    """A point's coordinates in :data:`SEGMENT_FEATURES` order (a missing feature is 0)."""
    return np.array([x.get(name, 0.0) for name in SEGMENT_FEATURES])


def outlier_vector(x: Mapping[str, float]) -> np.ndarray:
    """A point's coordinates in :data:`OUTLIER_FEATURES` order: the segment features, then
    the basket (a missing feature is 0)."""
    return np.array([x.get(name, 0.0) for name in OUTLIER_FEATURES])


def segment_names(centers: np.ndarray) -> dict[int, str]:
    """A distinct CRM name for every centre, from where it sits.

    Names rank the centres against each other: among buyers, a centre silent for months is
    "lapsing" ("lapsing big spenders" for the biggest spenders among them, "hibernating"
    after about 4.5 months, "lost" after 6), the highest spend and frequency is "loyal big
    spenders", the lowest "occasional buyers"; centres of customers who never ordered are
    "browsers".
    """
    at = {name: index for index, name in enumerate(SEGMENT_FEATURES)}
    ordered, recency = centers[:, at["ordered"]], centers[:, at["recency"]]
    monetary, frequency = centers[:, at["monetary"]], centers[:, at["frequency"]]
    count = len(centers)
    buyers = [i for i in range(count) if ordered[i] >= 0.5]
    names: dict[int, str] = {}
    for i in range(count):
        if i not in buyers:
            names[i] = "inactive browsers" if recency[i] >= 0.5 else "browsers"
    lapsing = [i for i in buyers if recency[i] >= 0.4]
    # Among lapsing centres the biggest spenders are the ones to win back first; months more
    # of silence make a centre "hibernating", then "lost".
    for rank, i in enumerate(sorted(lapsing, key=lambda i: monetary[i], reverse=True)):
        if recency[i] >= 1.0:
            names[i] = "lost"
        elif recency[i] >= 0.75:
            names[i] = "hibernating"
        elif rank == 0 and monetary[i] >= 0.6:
            names[i] = "lapsing big spenders"
        else:
            names[i] = "lapsing"
    active = sorted(
        (i for i in buyers if i not in lapsing),
        key=lambda i: monetary[i] + frequency[i],
        reverse=True,
    )
    ladder = ["loyal big spenders", "regulars", "promising", "occasional buyers"]
    for rank, i in enumerate(active):
        if rank == len(active) - 1 and rank > 0:
            names[i] = "occasional buyers"
        else:
            names[i] = ladder[min(rank, len(ladder) - 2)]
    seen: dict[str, int] = {}
    for i in sorted(names):
        repeat = seen[names[i]] = seen.get(names[i], 0) + 1
        if repeat > 1:
            names[i] = f"{names[i]} {repeat}"
    return names
