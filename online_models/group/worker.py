"""A worker's side of the group's model: its deltas, and the versions it applies to its scorer."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from online_models.churn.model import ChurnShare
from online_models.group.parts import (
    CHURN,
    DENSITY,
    EASE,
    ITEM_PARTS,
    LIFETIME,
    SEGMENTS,
    SPEND,
    VALUE,
    Delta,
    GroupPart,
    Share,
    item_bucket,
    item_part,
)
from online_models.recommend.ease import EaseCounts, EaseShare
from online_models.recommend.items import ItemShare
from online_models.scoring.scorer import CustomerScorer
from online_models.segments.centres import SegmentShare
from online_models.segments.density import DensitySegmenter
from online_models.segments.density_share import DensityShare
from online_models.segments.kmeans import Segmenter
from online_models.value.lifetime_fit import LifetimeShare
from online_models.value.ranks import ValueShare
from online_models.value.spend import SpendShare

__all__ = ["EASE_DELTA_PAIRS", "WorkerSync"]

#: The most owned-together pairs an ``ease`` delta carries (24 bytes each on the wire: 4 MiB,
#: half a model record); a sync that counted more sends several.
EASE_DELTA_PAIRS = 175_000

logger = logging.getLogger(__name__)


class WorkerSync:
    """A worker's side of the group's model: its deltas, and versions applied to its scorer.

    Deltas sent but not yet merged into a part stay *pending*: the worker scores with the
    group's part plus them plus what it learned since, so nothing it learned ever vanishes
    from its own scores while the group catches up.

    A worker ``alone`` (the whole group) sends only its segments, lifetime and EASE deltas
    (the group's model fits those): the group's churn, value and item parts would be made of
    its deltas only, so every version of them would be its own model back, which
    :meth:`apply` skips (``_only_own_news``).
    Its recommender keeps no record of what it learned since a delta.
    """

    def __init__(
        self, scorer: CustomerScorer, worker: str | None = None, *, alone: bool = False
    ) -> None:
        self.scorer = scorer
        self.worker = worker or uuid.uuid4().hex[:16]
        self.alone = alone
        self.seq = 0
        #: The group's parts this worker scores with, by key.
        self.parts: dict[str, GroupPart] = {}
        self.version = 0
        self._pending: dict[str, list[Delta]] = {}
        scorer.segmenter.shared = True
        scorer.recommender.shared = not alone
        scorer.lifetime_model.shared = True
        scorer.recommender.counts_ownership = scorer.config.ease_items > 0

    @property
    def pending(self) -> int:
        """Deltas sent whose learning the group's parts do not include yet."""
        return sum(len(deltas) for deltas in self._pending.values())

    def deltas(self) -> list[Delta]:
        """What the models learned since the last call, one delta per part that changed."""
        self.seq += 1
        scorer = self.scorer
        shares: dict[str, Share] = {LIFETIME: scorer.lifetime_model.delta()}
        if scorer.recommender.counts_ownership:  # the group's model fits EASE, even for one
            shares[EASE] = scorer.recommender.ease_delta()
        segments = scorer.segmenter.delta()
        shares[DENSITY if isinstance(segments, DensityShare) else SEGMENTS] = segments
        if not self.alone:
            shares[CHURN] = scorer.churn_model.delta()
            shares[VALUE] = scorer.value_model.delta()
            shares[SPEND] = scorer.spend_model.delta()
            for bucket, share in scorer.recommender.delta().items():
                shares[item_part(bucket)] = share
        deltas = [
            Delta(key, self.worker, self.seq, share)
            for key, share in shares.items()
            if not _is_empty(share) and key != EASE
        ]
        for delta in deltas:
            self._pending.setdefault(delta.key, []).append(delta)
        # EASE's counts are the group's to fit: never pending here (a worker scores with the
        # group's fit alone). A sync's counts in record-sized pieces, each its own delta.
        ease = shares.get(EASE)
        if isinstance(ease, EaseCounts) and not _is_empty(ease):
            for n, piece in enumerate(ease.split(EASE_DELTA_PAIRS)):
                if n:
                    self.seq += 1
                deltas.append(Delta(EASE, self.worker, self.seq, piece))
        return deltas

    def apply_slices(
        self, version: int, parts: Mapping[str, GroupPart], size: int = 4
    ) -> Iterator[float]:
        """:meth:`apply` ``size`` parts at a time (the small parts first), yielding the time
        each slice took: the worker lets its other tasks run between two slices, so a big
        version never holds its event loop for long. Every item is known before the first
        slice, so one bucket's co-purchase counts can name items of another."""
        items = [part.share.items for part in parts.values() if isinstance(part.share, ItemShare)]
        for n in range(0, len(items), size):
            started = time.perf_counter()
            for chunk in items[n : n + size]:
                self.scorer.recommender.register(chunk)
            yield time.perf_counter() - started
        keys = sorted(parts, key=lambda key: key.startswith(ITEM_PARTS))
        slices = [keys[i : i + size] for i in range(0, len(keys), size)] or [[]]
        for n, keys_of_slice in enumerate(slices, start=1):
            started = time.perf_counter()
            self.apply(
                version, {key: parts[key] for key in keys_of_slice}, complete=n == len(slices)
            )
            yield time.perf_counter() - started

    def apply(self, version: int, parts: Mapping[str, GroupPart], *, complete: bool = True) -> None:
        """Score with ``version`` of the group's model, whose changed ``parts`` these are
        (all of them, or with ``complete`` false a slice, the last slice completing it)."""
        scorer = self.scorer
        buckets: dict[int, Any] = {}
        ease = None
        for key, part in parts.items():
            included = part.merged.get(self.worker, 0)
            pending = [d for d in self._pending.get(key, []) if d.seq > included]
            if pending:
                self._pending[key] = pending
            else:
                self._pending.pop(key, None)
            shares: list[Any] = [d.share for d in pending]
            share = part.share
            if self._only_own_news(part):
                pass  # the part gained this worker's own deltas, which it scores with already
            elif isinstance(share, ChurnShare):
                scorer.churn_model.apply(share, shares)
            elif isinstance(share, SegmentShare | DensityShare):
                self._apply_segments(key, share, shares)
            elif isinstance(share, ValueShare):
                scorer.value_model.apply(share, shares)
            elif isinstance(share, LifetimeShare):
                scorer.lifetime_model.apply(share, shares)
            elif isinstance(share, SpendShare):
                scorer.spend_model.apply(share, shares)
            elif isinstance(share, EaseShare):
                ease = share  # after the items: its weights name items by hash
            else:
                previous = self.parts.get(key)
                known = previous is not None and previous.version == part.since
                buckets[item_bucket(key)] = (share, shares, part.changed if known else None)
            self.parts[key] = part
        if buckets:
            scorer.recommender.apply(buckets)
        if ease is not None:
            scorer.recommender.apply_ease(ease)
        if complete:
            self.version = scorer.group_version = max(self.version, version)

    def _apply_segments(
        self, key: str, share: SegmentShare | DensityShare, pending: list[Any]
    ) -> None:
        segmenter = self.scorer.segmenter
        if isinstance(share, SegmentShare) and isinstance(segmenter, Segmenter):
            segmenter.apply(share, pending)
            return
        if isinstance(share, DensityShare) and isinstance(segmenter, DensitySegmenter):
            segmenter.apply(share, pending)
            return
        logger.warning("Part %s is not this worker's CRM_SEGMENT_MODEL: not applied", key)

    def _only_own_news(self, part: GroupPart) -> bool:
        """Whether ``part`` differs from the one applied before only by this worker's deltas.

        Counts, sums and steps add, so the live model (the old part plus this worker's
        pending deltas plus what it learned since) already is the new part plus what it
        learned since: applying it would change nothing but the time spent. Segments are
        always applied: the group's model creates centres and decays them (and reclusters
        density micro-clusters); so is the lifetime part, whose parameters the group's model
        fits.
        """
        previous = self.parts.get(part.key)
        fitted = SegmentShare | DensityShare | LifetimeShare | EaseShare
        if previous is None or isinstance(part.share, fitted):
            return False
        before, after, me = previous.merged, part.merged, self.worker
        return all(w == me or before.get(w, 0) == seq for w, seq in after.items()) and all(
            w == me or w in after for w in before
        )


def _is_empty(share: Share) -> bool:
    if isinstance(share, ChurnShare):
        return share.labels == 0 and not share.count.any()
    if isinstance(share, SegmentShare):
        return share.points == 0 and not len(share.candidates)
    if isinstance(share, DensityShare):
        return share.points == 0 and not len(share.weights)
    if isinstance(share, ValueShare):
        return not (share.monetary.any() or share.frequency.any())
    if isinstance(share, LifetimeShare):
        return not len(share.keys)
    if isinstance(share, SpendShare):
        return share.labels == 0
    if isinstance(share, EaseCounts):
        return not len(share.owned) and share.hits is None
    if isinstance(share, EaseShare):
        return False
    return not share.items
