"""The merging worker's copy of the group's model: deltas merged into parts, versions published."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from online_models.customer.activity import DAY
from online_models.group.parts import (
    DENSITY,
    EASE,
    LIFETIME,
    SEGMENTS,
    Delta,
    GroupPart,
    density_model,
    empty_share,
    merge_part,
)
from online_models.recommend.blend import choose_arm
from online_models.recommend.ease import EaseCounts, EaseGram, EaseShare, GramSnapshot, fit_ease
from online_models.recommend.items import ItemShare
from online_models.scoring.scorer import ScorerConfig
from online_models.segments.centres import SegmentShare, settle_segments
from online_models.segments.density_share import DensityShare
from online_models.value.lifetime_fit import LifetimeShare, fit_lifetime

__all__ = ["EASE_TAKEOVER_DAYS", "EaseState", "GroupModel"]

logger = logging.getLogger(__name__)

#: What a merger's EASE holds that the models topic does not (:meth:`GroupModel.ease_state`).
EaseState = tuple[EaseGram, dict[str, int], EaseShare, int]
#: A merger that took over with no ownership counts refits EASE once it holds as many pairs
#: as the last fit, or once its counts span this many event-time days (a fit of a season's
#: counts, rather than weights frozen for as long as the history before took).
EASE_TAKEOVER_DAYS = 90.0
# A worker's entry in a part's record of merged deltas goes once the worker has sent nothing
# for this many versions (its old deltas are long committed and cannot come again).
_FORGET_WORKERS_AFTER = 1000


class GroupModel:
    """The merging worker's copy of the group's model: parts, version, deltas merged since.

    >>> from online_models.value.ranks import ValueShare
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
        # EASE: the ownership counts merged (the Gram: kept here, never published, see the
        # README), the deltas they include, and the last fit's pair count: a merger that
        # took over with no counts serves the last fit until its own hold as many.
        fitted = self.parts.get(EASE)
        self.ease = EaseGram(config.ease_items) if config.ease_items > 0 else None
        self._ease_merged = dict(fitted.merged) if fitted is not None else {}
        share = fitted.share if fitted is not None else None
        self._ease_fitted = share if isinstance(share, EaseShare) else EaseShare.empty()

    @property
    def dirty(self) -> bool:
        """Whether deltas were merged since the last :meth:`publish`, or EASE is due."""
        return bool(self._dirty) or self._ease_due()

    def merge(self, delta: Delta) -> bool:
        """Merge a worker's delta; False when the part already includes it (a repeat)."""
        if delta.key == EASE:
            return self._merge_ease(delta)
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

    def publish(self, *, fits: bool = True) -> tuple[int, list[GroupPart]]:
        """A new version: its number and the parts that changed since the last. With
        ``fits``, the lifetime and EASE refits that are due run here, inline (a backtest's
        group); a worker runs them in a thread first and publishes with ``fits=False``, so a
        refit never holds its event loop."""
        self.version += 1
        changed = []
        if fits:
            self._refit_lifetime()
            self._refit_ease()
        self._settle_density()
        self._settle_segments()
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

    def ease_fit_due(self) -> GramSnapshot | None:
        """The Gram to refit EASE from, when due: ``ease_refit_days`` of event time after the
        last fit (or after the first counts), and with at least the pair counts the last fit
        had, unless the counts span :data:`EASE_TAKEOVER_DAYS` (a merger that took over with
        none)."""
        return self.ease.snapshot() if self.ease is not None and self._ease_due() else None

    def take_ease_fit(self, fitted: EaseShare) -> None:
        """Weights fitted on the Gram :meth:`ease_fit_due` gave (perhaps in another thread):
        published with the next version, with the blend chosen from the outcomes merged. A fit
        that is not finite is dropped (the last one stays)."""
        ease = self.ease
        assert ease is not None
        if not np.isfinite(fitted.weights).all():
            logger.error("EASE's refit gave weights that are not finite: the last fit stays")
            self._ease_fitted = replace(self._ease_fitted, fitted_at=fitted.fitted_at)
            return
        fitted_any = len(fitted.refs) > 0
        arm = choose_arm(
            ease.trials, ease.hits, ease.wins, now=ease.time, fitted=fitted_any,
            served=self._ease_fitted.arm,
        )  # fmt: skip
        share = replace(fitted, trials=ease.trials, hits=ease.hits, wins=ease.wins, arm=arm)
        self._ease_fitted = share
        merged = dict(self._ease_merged)
        self.parts[EASE] = GroupPart(EASE, share, self.version + 1, merged)
        self._dirty[EASE] = merged

    def ease_awaits_fit(self, delta: Delta) -> bool:
        """Whether the Gram holds ``delta``'s counts (merged now, or before a rebalance that
        handed this merger its Gram back) and no fit of the models topic does yet: a merger
        that dies before its next refit loses them unless ``delta`` is read again.

        >>> group = GroupModel(ScorerConfig())
        >>> delta = Delta(EASE, "w1", 1, EaseCounts.of_purchases([(1, [2])], time=0.0))
        >>> [group.merge(delta), group.ease_awaits_fit(delta), group.merge(delta)]
        [True, True, False]
        >>> group.ease_awaits_fit(delta)  # a repeat: its counts are in the Gram alone still
        True
        """
        if delta.key != EASE or self.ease is None:
            return False
        fitted = self.parts.get(EASE)
        in_fit = fitted is not None and fitted.merged.get(delta.worker, 0) >= delta.seq
        return self._ease_merged.get(delta.worker, 0) >= delta.seq and not in_fit

    def ease_state(self) -> EaseState | None:
        """What this merger's EASE holds that the models topic does not: the Gram, the deltas
        it includes, the last fit and the version of the part it was published in."""
        part = self.parts.get(EASE)
        if self.ease is None:
            return None
        version = part.version if part is not None else 0
        return self.ease, dict(self._ease_merged), self._ease_fitted, version

    def adopt_ease(self, state: EaseState) -> bool:
        """Take over the Gram of this worker's previous merging (:meth:`ease_state`) when no
        other merger published EASE since: a rebalance that gives the updates partition back
        to the same worker keeps every count (deltas read again are in its record of merged
        deltas, so none counts twice). False when the part moved on without it."""
        gram, merged, fitted, version = state
        part = self.parts.get(EASE)
        if self.ease is None or (part.version if part is not None else 0) != version:
            return False
        self.ease, self._ease_merged, self._ease_fitted = gram, merged, fitted
        return True

    def _ease_due(self) -> bool:
        ease, fitted = self.ease, self._ease_fitted
        if ease is None or len(ease) < 2 or ease.pairs < 1.0:
            return False
        if ease.pairs < fitted.pairs and ease.time - ease.started < EASE_TAKEOVER_DAYS * DAY:
            return False  # a merger that took over: the last fit knew more
        since = max(fitted.fitted_at, ease.started)
        return ease.time - since >= self.config.ease_refit_days * DAY

    def _merge_ease(self, delta: Delta) -> bool:
        if self.ease is None or not isinstance(delta.share, EaseCounts):
            return False
        if self._ease_merged.get(delta.worker, 0) >= delta.seq:
            return False
        self.ease.add(delta.share)
        self._ease_merged[delta.worker] = delta.seq
        self._last_seen[delta.worker] = self.version + 1
        return True

    def fit_ease(self, snapshot: GramSnapshot) -> EaseShare:
        """EASE fitted on ``snapshot`` with the config's hyperparameters (pure: a worker
        runs it in a thread, then :meth:`take_ease_fit`)."""
        config = self.config
        return fit_ease(snapshot, strength=config.ease_strength,
                        neighbors=config.ease_neighbors, fitted_at=snapshot.time)  # fmt: skip

    def _refit_ease(self) -> None:
        due = self.ease_fit_due()
        if due is not None:
            self.take_ease_fit(self.fit_ease(due))

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

    def _settle_segments(self) -> None:
        """The k-means part, before it is published: group segments founded and dissolved
        once, after every delta of the version is merged (the order deltas merged in does
        not change what is founded)."""
        part = self.parts.get(SEGMENTS)
        if part is None or SEGMENTS not in self._dirty:
            return
        assert isinstance(part.share, SegmentShare)
        config = self.config
        settle_segments(
            part.share, max_centres=config.segments, group_share=config.segment_group_share,
            group_mads=config.segment_group_mads, group_tightness=config.segment_group_tightness,
        )  # fmt: skip

    def _refit_lifetime(self) -> None:
        due = self.lifetime_fit_due()
        if due is not None:
            self.take_lifetime_fit(fit_lifetime(due[0], now=due[1]))
