"""How the recommender's signals are blended, learned from what customers bought next.

A few *arms*, each a weighting of the signals (EASE, factors, popularity, co-purchase,
catalogue content), are all judged on the same sampled baskets: each arm ranks the customer's
list just before the basket, and hits if the basket's first item is in its top ``k``. The
outcomes are kept with forward decay (a basket at event time ``t`` weighs ``exp(t / tau)``,
summed in log space, so outcomes of many workers add in any order) and the arm with the best
recent hit rate is served once enough baskets were judged (the hybrid before). Popularity
alone is one arm: the blend served is never worse than popularity on the stream's own recent
outcomes, which are judged on lists customers were shown (the served arm's hits are helped by
that: exposure bias in its favour, not popularity's).

>>> arms = make_arms({"factors": 2.0, "popularity": 0.3, "co_purchase": 4.0, "content": 4.0})
>>> [arm.name for arm in arms]
['popularity', 'hybrid', 'ease', 'ease+content', 'ease+hybrid']
>>> tau = 30 * 86400 / math.log(2)
>>> hits = np.full(len(arms), -np.inf)
>>> trials = np.logaddexp.reduce([t / tau for t in range(0, 200 * 3600, 3600)])
>>> hits[0] = trials + math.log(0.3); hits[2] = trials + math.log(0.5)
>>> choose_arm(trials, hits, now=200 * 3600.0, fitted=True)
2
>>> choose_arm(trials, hits, now=200 * 3600.0, fitted=False)  # EASE arms wait for a fit
0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["BLEND_HALFLIFE_DAYS", "MIN_BASKETS", "SIGNALS", "Arm", "choose_arm", "make_arms"]

#: The signals an arm weights, in the order scores add up.
SIGNALS = ("factors", "popularity", "co_purchase", "content", "ease")
#: Outcomes lose half their weight every this many event-time days.
BLEND_HALFLIFE_DAYS = 30.0
#: The recent (decayed) baskets judged before an arm is chosen from its hit rate.
MIN_BASKETS = 100.0
_DAY = 86_400.0
_TAU = BLEND_HALFLIFE_DAYS * _DAY / math.log(2.0)
# The arm served before outcomes choose.
_HYBRID = 1


@dataclass(frozen=True)
class Arm:
    """A weighting of :data:`SIGNALS` (each scaled to [0, 1] before weighting)."""

    name: str
    weights: Mapping[str, float]

    @property
    def uses_ease(self) -> bool:
        return self.weights.get("ease", 0.0) > 0


def make_arms(hybrid: Mapping[str, float]) -> tuple[Arm, ...]:
    """The arms judged: popularity, the ``hybrid`` weights without EASE, EASE alone (popularity
    breaking its ties), EASE with a quarter of the content's weight of the hybrid's scale,
    and EASE on top of the hybrid. The weights are the arms' shapes, not tuned values: which
    one serves is learned."""
    return (
        Arm("popularity", {"popularity": 1.0}),
        Arm("hybrid", dict(hybrid)),
        Arm("ease", {"ease": 1.0, "popularity": 1e-3}),
        Arm("ease+content", {"ease": 1.0, "content": 0.25, "popularity": 1e-3}),
        Arm("ease+hybrid", {**hybrid, "ease": 4.0}),
    )


def basket_weight(time: float) -> float:
    """The log weight of a basket judged at event time ``time``."""
    return time / _TAU


def choose_arm(
    trials: float, hits: np.ndarray | None, *, now: float, fitted: bool, arms: int | None = None
) -> int:
    """The arm to serve: the best recent hit rate once :data:`MIN_BASKETS` recent baskets were
    judged (ties to the earlier arm), else the hybrid: outcomes, not a fit, move what is
    served. Arms using EASE are not chosen before it is ``fitted``."""
    if hits is None or not math.isfinite(trials) or math.exp(trials - now / _TAU) < MIN_BASKETS:
        return _HYBRID
    rates = np.exp(hits - trials)
    if not fitted:
        rates[2:] = -1.0  # the EASE arms rank as their non-EASE signals until EASE is fitted
    if arms is not None:
        rates = rates[:arms]
    return int(np.argmax(rates))
