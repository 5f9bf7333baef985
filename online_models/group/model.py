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
    LIFETIME,
    Delta,
    GroupPart,
    density_model,
    empty_share,
    merge_part,
)
from online_models.recommend.items import ItemShare
from online_models.scoring.scorer import ScorerConfig
from online_models.segments.density_share import DensityShare
from online_models.value.lifetime_fit import LifetimeShare, fit_lifetime

__all__ = ["GroupModel"]

logger = logging.getLogger(__name__)

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
