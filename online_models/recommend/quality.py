"""How good the recommendations were: the rolling hit rate of new baskets."""

from __future__ import annotations

import logging
import math
from typing import Any

from river import stats, utils

__all__ = ["RecommendationQuality"]

logger = logging.getLogger(__name__)


class RecommendationQuality:
    """Rolling hit rate: the share of new baskets whose first item was in the top-K just before.

    Ranking a customer's list costs as much as the rest of scoring an event, so only every
    ``sample_every``-th new basket is evaluated (:meth:`due`): the rate stays unbiased, its
    window covers ``sample_every`` times more baskets.

    >>> quality = RecommendationQuality(window=3)
    >>> for hit in (True, False, False, True):
    ...     quality.update(hit)
    >>> round(quality.hit_rate, 3), quality.baskets
    (0.333, 4)
    >>> sampled = RecommendationQuality(sample_every=4)
    >>> [sampled.due() for _ in range(6)]
    [True, False, False, False, True, False]
    """

    # Class defaults: a model checkpointed before sampling existed evaluates every basket.
    sample_every = 1
    _new_baskets = 0

    def __init__(self, window: int = 1000, sample_every: int = 1) -> None:
        if sample_every < 1:
            msg = f"sample_every must be >= 1, got {sample_every}"
            raise ValueError(msg)
        self.window = window
        self.sample_every = sample_every
        self._hits: Any = utils.Rolling(stats.Mean, window_size=window)
        self._baskets = 0
        self._new_baskets = 0

    def due(self) -> bool:
        """Count a new basket; whether it is one to evaluate."""
        due = self._new_baskets % self.sample_every == 0
        self._new_baskets += 1
        return due

    def update(self, hit: bool) -> None:
        """Count one basket: whether its item was among the recommendations."""
        self._hits.update(1.0 if hit else 0.0)
        self._baskets += 1

    @property
    def baskets(self) -> int:
        """Baskets evaluated in total."""
        return self._baskets

    @property
    def hit_rate(self) -> float:
        """Share of hits in the window (NaN before the first basket)."""
        return float(self._hits.get()) if self._baskets else math.nan
