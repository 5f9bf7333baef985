"""How the recommender's signals are blended, learned from what customers bought next.

A few *arms*, each a weighting of the signals (EASE, factors, popularity, co-purchase,
catalogue content), are all judged on the same sampled baskets: each arm ranks the customer's
list just before the basket, and hits if the basket's first item is in its top ``k``. The
outcomes are kept with forward decay (a basket at event time ``t`` weighs ``exp(t / tau)``,
summed in log space, so outcomes of many workers add in any order): each arm's hits, and for
each pair of arms the baskets one hit and the other missed.

What is served is a champion and its challengers. The hybrid serves until enough baskets were
judged; from then on EASE with a little content (:data:`DEFAULT_ARM`, the better of the
EASE arms on Online Retail before 2011-03-01, and EASE the batch model recommender papers
keep failing to beat) once it is fitted, and another arm only where the stream's own outcomes
say, beyond chance, that it does better: on the baskets where exactly one of the two hit, the
other hit :data:`SWITCH_Z` standard deviations more often than a coin would (a sign test).
A hit rate a few baskets apart is noise at a shop's volume (a few hundred judged baskets a
month), and a choice that follows noise differs between workers and between runs. Popularity
alone is one arm: the blend served is never significantly worse than popularity on the
stream's recent outcomes, which are judged on lists customers were shown (exposure bias in
the served arm's favour, not popularity's).

>>> arms = make_arms({"factors": 2.0, "popularity": 0.3, "co_purchase": 4.0, "content": 4.0})
>>> [arm.name for arm in arms]
['popularity', 'hybrid', 'ease', 'ease+content', 'ease+hybrid']
>>> tau = 30 * 86400 / math.log(2)
>>> baskets = np.array([t / tau for t in range(0, 200 * 3600, 3600)])
>>> hits = np.zeros((200, len(arms)), dtype=bool)
>>> hits[:60, 0] = True; hits[:100, 3] = True  # popularity hits 30%, EASE + content 50%
>>> trials, arm_hits, wins = outcomes(baskets, hits)
>>> choose_arm(trials, arm_hits, wins, now=200 * 3600.0, fitted=True)
3
>>> choose_arm(trials, arm_hits, wins, now=200 * 3600.0, fitted=False)  # EASE waits for a fit
0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ARM_COUNT",
    "BLEND_HALFLIFE_DAYS",
    "DEFAULT_ARM",
    "MIN_BASKETS",
    "SIGNALS",
    "STAY_Z",
    "SWITCH_Z",
    "Arm",
    "choose_arm",
    "make_arms",
    "outcomes",
]

#: The signals an arm weights, in the order scores add up.
SIGNALS = ("factors", "popularity", "co_purchase", "content", "ease")
#: Outcomes lose half their weight every this many event-time days.
BLEND_HALFLIFE_DAYS = 30.0
#: The recent (decayed) baskets judged before an arm is chosen from its hit rate.
MIN_BASKETS = 100.0
#: The arm served once EASE is fitted, unless another does significantly better: EASE with a
#: quarter of the content's weight (on Online Retail before 2011-03-01, batch: 0.633 against
#: EASE alone 0.627, ``benchmarks/ease_variants.py``; with no catalogue it is EASE alone).
DEFAULT_ARM = 3
#: How many standard deviations a challenger's lead on the baskets where exactly one of it and
#: the default hit must reach, less one basket (a one-sided sign test with continuity
#: correction at about 0.6% for each of the four challengers, about 2.5% for any of them;
#: counts are forward-decayed baskets weighing 1 at the newest, which count fewer baskets than
#: a flat window would give the same weight: on the safe side).
SWITCH_Z = 2.5
#: A challenger served stays while its lead holds this many standard deviations (hysteresis:
#: a lead hovering at the threshold does not flip the arm at every refit).
STAY_Z = 1.0
#: The fewest recent baskets where exactly one of the two hit that a switch needs (a lead of
#: four baskets out of four is chance one time in sixteen).
MIN_DISAGREEMENTS = 10.0
_DAY = 86_400.0
_TAU = BLEND_HALFLIFE_DAYS * _DAY / math.log(2.0)
# The arm served before outcomes choose, and before EASE is fitted.
_HYBRID = 1
# The first arm that uses EASE (the arms from here on wait for a fit).
_FIRST_EASE = 2


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
    breaking its ties), EASE with content weighing 0.25 (both signals in [0, 1]), and EASE
    (4.0) on top of the hybrid. The weights are the arms' shapes, not tuned values: which
    one serves is learned."""
    return (
        Arm("popularity", {"popularity": 1.0}),
        Arm("hybrid", dict(hybrid)),
        Arm("ease", {"ease": 1.0, "popularity": 1e-3}),
        Arm("ease+content", {"ease": 1.0, "content": 0.25, "popularity": 1e-3}),
        Arm("ease+hybrid", {**hybrid, "ease": 4.0}),
    )


#: How many arms :func:`make_arms` gives (records of outcomes must have as many).
ARM_COUNT = len(make_arms({}))


def basket_weight(time: float) -> float:
    """The log weight of a basket judged at event time ``time``."""
    return time / _TAU


def outcomes(weights: np.ndarray, hits: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Judged baskets of log weights ``weights`` (:func:`basket_weight`) and whether each arm
    hit (``hits``, baskets x arms), as log weights: all baskets, each arm's hits, and
    ``wins[i, j]``, the baskets arm ``i`` hit and arm ``j`` missed (two matrix products).

    >>> trials, hits, wins = outcomes(np.log([1.0, 2.0]), np.array([[1, 0], [1, 1]], bool))
    >>> np.exp(trials).round(6), np.exp(hits).round(6).tolist(), np.exp(wins).round(6).tolist()
    (np.float64(3.0), [3.0, 2.0], [[0.0, 1.0], [0.0, 0.0]])
    """
    arms = hits.shape[1]
    if not len(weights):
        return -math.inf, np.full(arms, -np.inf), np.full((arms, arms), -np.inf)
    top = float(weights.max())
    scaled = np.exp(weights - top)
    hit = hits.astype(float)
    with np.errstate(divide="ignore"):
        arm_hits = np.log(scaled @ hit) + top
        wins = np.log((hit * scaled[:, None]).T @ (1.0 - hit)) + top
    return float(np.log(scaled.sum()) + top), arm_hits, wins


def choose_arm(
    trials: float,
    hits: np.ndarray | None,
    wins: np.ndarray | None,
    *,
    now: float,
    fitted: bool,
    arms: int | None = None,
    served: int | None = None,
) -> int:
    """The arm to serve: the hybrid until :data:`MIN_BASKETS` recent baskets were judged or
    while EASE is not ``fitted``; then :data:`DEFAULT_ARM`, unless arms beat it by the sign
    test (:data:`SWITCH_Z`, at least :data:`MIN_DISAGREEMENTS`) on the baskets where one of
    the two hit (``wins``, as :func:`outcomes` gives), or the arm ``served`` now still leads
    it by :data:`STAY_Z`: the best recent hit rate of those. Arms using EASE are not chosen
    before it is fitted; outcomes without ``wins`` (from before them) keep the default."""
    if hits is None or not math.isfinite(trials) or math.exp(trials - now / _TAU) < MIN_BASKETS:
        return _HYBRID
    count = len(hits) if arms is None else min(arms, len(hits))
    default = DEFAULT_ARM if fitted and count > DEFAULT_ARM else _HYBRID
    if wins is None or wins.shape != (len(hits), len(hits)):
        return default
    rates = np.exp(hits - trials)
    # Baskets weighing 1 at the newest: a sign test's counts.
    ahead = np.exp(wins[:count, default] - now / _TAU)
    behind = np.exp(wins[default, :count] - now / _TAU)
    lead = ahead - behind
    spread = np.sqrt(ahead + behind)
    better = (ahead + behind >= MIN_DISAGREEMENTS) & (lead - 1.0 >= SWITCH_Z * spread)
    if served is not None and 0 <= served < count:
        better[served] |= bool(lead[served] > 0 and lead[served] >= STAY_Z * spread[served])
    better[default] = False
    if not fitted:
        better[_FIRST_EASE:] = False
    if not better.any():
        return default
    return int(np.flatnonzero(better)[np.argmax(rates[:count][better])])
