"""One model for a whole consumer group: the parts every worker shares, deltas and merging.

Each worker learns from its own events and, every sync, hands what it learned since its last
delta to the group (:meth:`WorkerSync.deltas`). One worker merges the deltas into the group's
model (:class:`GroupModel`, Flink ML's single model-update operator) and publishes the parts
that changed as a new version; every worker then scores with that version plus what the group
has not merged yet of its own (:meth:`WorkerSync.apply`).

The model is cut into *parts* (``churn``, ``segments`` or ``density``, ``value``,
``lifetime``, and the items in ``item_buckets`` buckets), each with its own version and a
record of the latest delta of every worker it includes: merging is idempotent per part, so a
delta delivered twice, or a version published half before its merger died, never counts
anything twice.

Merge rules (each model's ``merge_*`` function, tested on its own):

- counts and sums merge exactly: value-rank bin counts, the churn scaler's statistics, label
  counts, segment sums and weights, popularity, co-purchase counts;
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
import math
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np

from online_models.activity import DAY
from online_models.churn import ChurnShare, merge_churn
from online_models.density import DensitySegmenter
from online_models.lifetime import LifetimeShare, fit_lifetime, merge_lifetime
from online_models.micro_clusters import DensityShare
from online_models.recommend import ItemShare, initial_latent, merge_items
from online_models.scorer import CustomerScorer, ScorerConfig, make_segmenter
from online_models.segments import Segmenter, SegmentShare, merge_segments
from online_models.value import ValueShare, merge_value

__all__ = [
    "CHURN",
    "DENSITY",
    "LIFETIME",
    "SEGMENTS",
    "VALUE",
    "Delta",
    "GroupModel",
    "GroupPart",
    "Share",
    "WorkerSync",
    "item_part",
    "merge_part",
    "share_from_arrays",
    "share_to_arrays",
]

logger = logging.getLogger(__name__)

CHURN, SEGMENTS, DENSITY, VALUE, LIFETIME = "churn", "segments", "density", "value", "lifetime"
_ITEMS = "items/"
# A worker's entry in a part's record of merged deltas goes once the worker has sent nothing
# for this many versions (its old deltas are long committed and cannot come again).
_FORGET_WORKERS_AFTER = 1000
# The segmenter's distance below which a proposed centre duplicates one (Segmenter's default).
_MIN_SEED_DISTANCE = 0.15

Share = ChurnShare | SegmentShare | DensityShare | ValueShare | LifetimeShare | ItemShare


def item_part(bucket: int) -> str:
    """The key of the part holding the items of ``bucket``.

    >>> item_part(7)
    'items/0007'
    """
    return f"{_ITEMS}{bucket:04d}"


def _bucket(key: str) -> int:
    return int(key.removeprefix(_ITEMS))


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
    return ItemShare.empty(config.recommender_factors)


def merge_part(key: str, group: Share, delta: Share, config: ScorerConfig) -> Share:
    """The group's part ``key`` with ``delta`` merged in (the merging worker's rule)."""
    if isinstance(group, ChurnShare) and isinstance(delta, ChurnShare):
        return merge_churn(group, delta)
    if isinstance(group, SegmentShare) and isinstance(delta, SegmentShare):
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
    key: str, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], config: ScorerConfig
) -> Share:
    """The share of part ``key`` a record carries. Raises ValueError (or KeyError for a
    missing array) when it does not fit models made with ``config``."""
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
    if key.startswith(_ITEMS) and key[len(_ITEMS) :].isdigit():
        if _bucket(key) >= config.item_buckets:
            msg = f"part {key} is beyond the {config.item_buckets} item buckets"
            raise ValueError(msg)
        return ItemShare.from_arrays(meta, arrays, n_factors=config.recommender_factors)
    msg = f"no part of the model is called {key!r}"
    raise ValueError(msg)


class GroupModel:
    """The merging worker's copy of the group's model: parts, version, deltas merged since.

    >>> config = ScorerConfig()
    >>> group = GroupModel(config)
    >>> delta = Delta("value", "w1", 1, ValueShare.zero())
    >>> group.merge(delta), group.merge(delta)
    (True, False)
    >>> version, parts = group.publish()
    >>> version, [part.key for part in parts], parts[0].merged
    (1, ['value'], {'w1': 1})
    """

    def __init__(
        self, config: ScorerConfig, parts: Mapping[str, GroupPart] | None = None, version: int = 0
    ) -> None:
        self.config = config
        self.parts: dict[str, GroupPart] = dict(parts or {})
        self.version = max([version, *(part.version for part in self.parts.values())])
        self._dirty: dict[str, dict[str, int]] = {}  # key -> merged record, being built
        self._last_seen: dict[str, int] = {}  # worker -> version it last sent a delta in
        self._published = {key: part.version for key, part in self.parts.items()}
        # A worker was last seen by the newest part that includes one of its deltas.
        for part in self.parts.values():
            for worker in part.merged:
                self._last_seen[worker] = max(self._last_seen.get(worker, 0), part.version)
        self._touched: dict[str, set[int]] = {}  # items part -> positions changed since

    @property
    def dirty(self) -> bool:
        """Whether deltas were merged since the last :meth:`publish`."""
        return bool(self._dirty)

    def merge(self, delta: Delta) -> bool:
        """Merge a worker's delta; False when the part already includes it (a repeat)."""
        part = self.parts.get(delta.key)
        merged = self._dirty.get(delta.key)
        if merged is None:
            merged = dict(part.merged) if part is not None else {}
        if merged.get(delta.worker, 0) >= delta.seq:
            return False
        share = part.share if part is not None else empty_share(delta.key, self.config)
        share = merge_part(delta.key, share, delta.share, self.config)
        if isinstance(share, ItemShare) and isinstance(delta.share, ItemShare):
            at = share.positions
            self._touched.setdefault(delta.key, set()).update(at[i] for i in delta.share.items)
        merged[delta.worker] = delta.seq
        self._dirty[delta.key] = merged
        self._last_seen[delta.worker] = self.version + 1
        self.parts[delta.key] = GroupPart(delta.key, share, self.version + 1, merged)
        return True

    def publish(self) -> tuple[int, list[GroupPart]]:
        """A new version: its number and the parts that changed since the last."""
        self.version += 1
        changed = []
        self._refit_lifetime()
        self._settle_density()
        for key, merged in self._dirty.items():
            kept = {
                worker: seq
                for worker, seq in merged.items()
                if self.version - self._last_seen.get(worker, self.version) < _FORGET_WORKERS_AFTER
            }
            touched = self._touched.pop(key, None)
            positions = None if touched is None else np.array(sorted(touched), dtype=np.int64)
            since = self._published.get(key, 0)
            part = GroupPart(key, self.parts[key].share, self.version, kept, since, positions)
            self.parts[key] = part
            self._published[key] = self.version
            changed.append(part)
        self._dirty = {}
        return self.version, changed

    def lifetime_fit_due(self) -> tuple[LifetimeShare, float] | None:
        """The lifetime sample and its event time, when its parameters are due for a refit
        (once a day of event time, as of the sample's newest summary): the group's model fits,
        never a worker alone."""
        part = self.parts.get(LIFETIME)
        if part is None or LIFETIME not in self._dirty:
            return None
        share = part.share
        assert isinstance(share, LifetimeShare)
        now = float(share.summaries[:, 4].max()) if len(share.summaries) else -math.inf
        if now - share.fitted_at < self.config.lifetime_refit_days * DAY:
            return None
        return share, now

    def take_lifetime_fit(self, fitted: LifetimeShare) -> None:
        """Parameters fitted on the sample :meth:`lifetime_fit_due` gave (perhaps in another
        thread): the current sample, with whatever merged meanwhile, takes them."""
        part = self.parts[LIFETIME]
        share = part.share
        assert isinstance(share, LifetimeShare)
        refitted = replace(
            share, params=fitted.params, fitted_at=fitted.fitted_at, fitted_on=fitted.fitted_on
        )
        self.parts[LIFETIME] = GroupPart(LIFETIME, refitted, part.version, part.merged)

    def _settle_density(self) -> None:
        """The density part, before it is published: cleaned up and reclustered (the group's
        model alone gives region ids, so an id names one region on every worker)."""
        part = self.parts.get(DENSITY)
        if part is None or DENSITY not in self._dirty:
            return
        assert isinstance(part.share, DensityShare)
        settled = density_model(self.config).settle(part.share)
        self.parts[DENSITY] = GroupPart(DENSITY, settled, part.version, part.merged)

    def _refit_lifetime(self) -> None:
        due = self.lifetime_fit_due()
        if due is not None:
            self.take_lifetime_fit(fit_lifetime(due[0], now=due[1]))


class WorkerSync:
    """A worker's side of the group's model: its deltas, and versions applied to its scorer.

    Deltas sent but not yet merged into a part stay *pending*: the worker scores with the
    group's part plus them plus what it learned since, so nothing it learned ever vanishes
    from its own scores while the group catches up.

    A worker ``alone`` (the whole group) sends only its segments and lifetime deltas: the
    group's churn, value and item parts would be made of its deltas only, so every version
    of them would be its own model back, which :meth:`apply` skips (``_only_own_news``).
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

    @property
    def pending(self) -> int:
        """Deltas sent whose learning the group's parts do not include yet."""
        return sum(len(deltas) for deltas in self._pending.values())

    def deltas(self) -> list[Delta]:
        """What the models learned since the last call, one delta per part that changed."""
        self.seq += 1
        scorer = self.scorer
        shares: dict[str, Share] = {LIFETIME: scorer.lifetime_model.delta()}
        segments = scorer.segmenter.delta()
        shares[DENSITY if isinstance(segments, DensityShare) else SEGMENTS] = segments
        if not self.alone:
            shares[CHURN] = scorer.churn_model.delta()
            shares[VALUE] = scorer.value_model.delta()
            for bucket, share in scorer.recommender.delta().items():
                shares[item_part(bucket)] = share
        deltas = [
            Delta(key, self.worker, self.seq, share)
            for key, share in shares.items()
            if not _is_empty(share)
        ]
        for delta in deltas:
            self._pending.setdefault(delta.key, []).append(delta)
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
        keys = sorted(parts, key=lambda key: key.startswith(_ITEMS))
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
            else:
                previous = self.parts.get(key)
                known = previous is not None and previous.version == part.since
                buckets[_bucket(key)] = (share, shares, part.changed if known else None)
            self.parts[key] = part
        if buckets:
            scorer.recommender.apply(buckets)
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
        if previous is None or isinstance(part.share, SegmentShare | DensityShare | LifetimeShare):
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
    return not share.items


class LocalGroup:
    """A consumer group of ``workers`` and their merger in one process: each worker scores
    its customers with its own scorer and engine, and every ``sync_seconds`` of event time
    they sync through the group's model, as the workers do through Kafka every
    ``CRM_MODEL_SYNC_SECONDS`` (what ``crm-scorer backtest --workers`` runs).

    A group of one worker syncs only its segments and lifetime parts, where the group's model
    does what the worker's does not (it seeds and names the segments, fits the lifetime
    parameters): its churn, value and item parts would come back as its own model (see
    :class:`WorkerSync` ``alone``), and taking, merging and publishing them was most of a sync
    and 40% of a one-worker backtest's time on a month of Online Retail. ``sync_all_parts``
    syncs them too, as a worker alone in a live group does through Kafka: the same scores,
    but for the order of some recommendations (the merger cuts a long co-purchase list to its
    strongest half where the worker alone cuts it as it counts).

    >>> from online_models.activity import Activity
    >>> group = LocalGroup(ScorerConfig(), workers=2, sync_seconds=60.0)
    >>> for n in range(4):
    ...     _ = group.process(f"c{n}", Activity("view", 100.0 * n, item_id="a"), worker=n % 2)
    >>> group.version, [sync.version for sync in group.syncs]
    (3, [3, 3])
    """

    def __init__(
        self,
        config: ScorerConfig,
        *,
        workers: int = 1,
        sync_seconds: float = 15.0,
        sync_all_parts: bool = False,
    ) -> None:
        from online_models.engine import ScoringEngine

        if workers < 1 or not sync_seconds > 0:
            msg = f"workers must be >= 1 and sync_seconds > 0, got {workers}, {sync_seconds}"
            raise ValueError(msg)
        self.config = config
        self.sync_seconds = sync_seconds
        self.scorers = [CustomerScorer(config) for _ in range(workers)]
        self.states: list[dict[str, Any]] = [{} for _ in range(workers)]
        self.engines = [
            ScoringEngine(scorer, states)
            for scorer, states in zip(self.scorers, self.states, strict=True)
        ]
        alone = workers == 1 and not sync_all_parts
        self.syncs = [
            WorkerSync(scorer, f"worker-{n}", alone=alone) for n, scorer in enumerate(self.scorers)
        ]
        self.merger = GroupModel(config)
        self._next_sync: float | None = None

    @property
    def version(self) -> int:
        """The group model's newest version."""
        return self.merger.version

    def process(
        self,
        customer_id: str,
        activity: Any,
        *,
        worker: int = 0,
        shard: int = 0,
        event_id: str | None = None,
    ) -> list[Any]:
        """Score one event on ``worker`` (its partition ``shard``), syncing first when a sync
        interval of event time has passed; returns the engine's scores."""
        if self._next_sync is None:
            self._next_sync = activity.time + self.sync_seconds
        elif activity.time >= self._next_sync:
            self.sync()
            self._next_sync = activity.time + self.sync_seconds
        return list(self.engines[worker].process(customer_id, activity, shard, event_id=event_id))

    def process_many(
        self, events: Sequence[tuple[str, Any, str | None, int]], workers_of: Sequence[int]
    ) -> list[Any]:
        """Score a batch of events, each ``(customer_id, activity, event_id, shard)``, on the
        worker ``workers_of[shard]`` (syncing first when a sync interval of event time passed
        by the batch's first event): one ``ScoringEngine.process_many`` per shard, in the
        order of the shards' first events; returns their ``BatchScores``."""
        if not events:
            return []
        first = events[0][1].time
        if self._next_sync is None:
            self._next_sync = first + self.sync_seconds
        elif first >= self._next_sync:
            self.sync()
            self._next_sync = first + self.sync_seconds
        shards: dict[int, list[tuple[str, Any, None, str | None]]] = {}
        for customer_id, activity, event_id, shard in events:
            shards.setdefault(shard, []).append((customer_id, activity, None, event_id))
        return [
            self.engines[workers_of[shard]].process_many(batch, shard)
            for shard, batch in shards.items()
        ]

    def sync(self) -> int:
        """Every worker sends its delta, the merger publishes, every worker applies."""
        for worker_sync in self.syncs:
            for delta in worker_sync.deltas():
                self.merger.merge(delta)
        if not self.merger.dirty:
            return self.merger.version
        version, parts = self.merger.publish()
        changed = {part.key: part for part in parts}
        for worker_sync in self.syncs:
            for _ in worker_sync.apply_slices(version, changed):
                pass  # as a worker applies a version, slice by slice
        return version
