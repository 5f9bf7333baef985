"""Where a customer sits among the segments (segment, outlier vectors); what a centre is called."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from itertools import pairwise

import numpy as np

from online_models.customer.profile import OUTLIER_FEATURES, SEGMENT_FEATURES

__all__ = ["NAME_HYSTERESIS", "outlier_vector", "segment_names", "segment_vector"]

logger = logging.getLogger(__name__)


def segment_vector(x: Mapping[str, float]) -> np.ndarray:
    """A point's coordinates in :data:`SEGMENT_FEATURES` order (a missing feature is 0)."""
    return np.array([x.get(name, 0.0) for name in SEGMENT_FEATURES])


def outlier_vector(x: Mapping[str, float]) -> np.ndarray:
    """A point's coordinates in :data:`OUTLIER_FEATURES` order: the segment features, then
    the basket (a missing feature is 0)."""
    return np.array([x.get(name, 0.0) for name in OUTLIER_FEATURES])


#: How far a centre must move past the boundary of its name before it takes another, on the
#: segment features' scale (0.05 of recency is 9 days): a name sticks while its centre sits
#: within this of the place its name describes, and two centres trade ranks only when one
#: leads the other by more than this.
NAME_HYSTERESIS = 0.05
# The names of active buyers, best first; a centre's place on it is its rank.
_LADDER = ("loyal big spenders", "regulars", "promising", "occasional buyers")
# Where on the ladder repeats are allowed ("promising 2").
_REPEATABLE = 2
# Each plain name's place: (ordered, least recency, recency under which it holds).
_PLACES = {
    "browsers": (False, -math.inf, 0.5),
    "inactive browsers": (False, 0.5, math.inf),
    "lost": (True, 1.0, math.inf),
    "hibernating": (True, 0.75, 1.0),
    "lapsing big spenders": (True, 0.4, 0.75),
    "lapsing": (True, 0.4, 0.75),
    **{name: (True, -math.inf, 0.4) for name in _LADDER},
}


def segment_names(centers: np.ndarray, previous: Mapping[int, str] | None = None) -> dict[int, str]:
    """A distinct CRM name for every centre, from where it sits.

    Names rank the centres against each other: among buyers, a centre silent for months is
    "lapsing" ("lapsing big spenders" for the biggest spenders among them, "hibernating"
    after about 4.5 months, "lost" after 6), the highest spend and frequency is "loyal big
    spenders", the lowest "occasional buyers"; centres of customers who never ordered are
    "browsers".

    With the ``previous`` names (the last naming of these centres' ids), a name sticks: a
    centre keeps its name while it sits within :data:`NAME_HYSTERESIS` of the place that
    name describes, ranks change only when a centre leads another by more than that, and
    active buyers keep their place on the ladder while their order allows it, so a segment
    is renamed when its own centre clearly moves, not when another segment leaves the
    ladder or a centre hovers on a boundary.

    >>> centres = np.array([[1.0, 0.1, 0.7, 1.0, 0.0], [1.0, 0.1, 0.3, 0.6, 0.0],
    ...                     [1.0, 0.2, 0.2, 0.5, 0.0]])
    >>> names = segment_names(centres)
    >>> [names[i] for i in range(3)]
    ['loyal big spenders', 'regulars', 'occasional buyers']
    >>> centres[2, 1] = 0.5  # the occasional buyers go quiet: the regulars stay regulars
    >>> sorted(segment_names(centres, names).items())
    [(0, 'loyal big spenders'), (1, 'regulars'), (2, 'lapsing')]
    """
    at = {name: index for index, name in enumerate(SEGMENT_FEATURES)}
    ordered, recency = centers[:, at["ordered"]], centers[:, at["recency"]]
    monetary, frequency = centers[:, at["monetary"]], centers[:, at["frequency"]]
    count = len(centers)
    before = {i: _plain(name) for i, name in (previous or {}).items() if i < count}
    place = {i: _place(float(ordered[i]), float(recency[i]), before.get(i)) for i in range(count)}
    names: dict[int, str] = {}
    for i in range(count):
        if place[i] in ("browsers", "inactive browsers"):
            names[i] = place[i]
    lapsing = [i for i in range(count) if place[i] in ("lost", "hibernating", "lapsing")]
    # Among lapsing centres the biggest spenders are the ones to win back first; months more
    # of silence make a centre "hibernating", then "lost".
    spenders = _sticky_order(lapsing, monetary, before, ("lapsing big spenders", "lapsing"))
    for rank, i in enumerate(spenders):
        big = 0.6 - NAME_HYSTERESIS if before.get(i) == "lapsing big spenders" else 0.6
        if place[i] != "lapsing":
            names[i] = place[i]
        elif rank == 0 and monetary[i] >= big:
            names[i] = "lapsing big spenders"
        else:
            names[i] = "lapsing"
    active = [i for i in range(count) if place[i] == "active"]
    ranked = _sticky_order(active, monetary + frequency, before, _LADDER)
    for i, step in zip(ranked, _ladder_steps(ranked, before), strict=True):
        names[i] = _LADDER[step]
    return _numbered(names, previous or {})


def _numbered(names: Mapping[int, str], previous: Mapping[int, str]) -> dict[int, str]:
    """``names`` made distinct by numbering repeats ("promising 2"), in order of centre; a
    centre keeps its earlier number while its name is the same, so when one of two alike
    segments leaves, the other is not renumbered."""
    kept = {i: previous[i] for i in sorted(names) if _plain(previous.get(i, "")) == names[i]}
    taken = set(kept.values())
    if len(taken) < len(kept):  # earlier names were not distinct: number them afresh
        kept, taken = {}, set()
    numbered = dict(kept)
    for i in sorted(names):
        if i in numbered:
            continue
        name, repeat = names[i], 1
        while name in taken:
            repeat += 1
            name = f"{names[i]} {repeat}"
        numbered[i] = name
        taken.add(name)
    return dict(sorted(numbered.items()))


def _plain(name: str) -> str:
    """A name without the number that told repeats apart ("promising 2": "promising")."""
    head, _, tail = name.rpartition(" ")
    return head if head and tail.isdigit() else name


def _place(ordered: float, recency: float, before: str | None) -> str:
    """Which kind of centre it is: "browsers", "inactive browsers", "lost", "hibernating",
    "lapsing" or "active"; the kind its ``before`` name says while it sits within
    :data:`NAME_HYSTERESIS` of that name's place."""
    was = _PLACES.get(before or "")
    if was is not None:
        buyer, least, under = was
        off = max(least - recency, recency - under, 0.5 - ordered if buyer else ordered - 0.5)
        if off < NAME_HYSTERESIS:
            return _kind(before or "")
    if ordered < 0.5:
        return "inactive browsers" if recency >= 0.5 else "browsers"
    if recency >= 1.0:
        return "lost"
    if recency >= 0.75:
        return "hibernating"
    return "lapsing" if recency >= 0.4 else "active"


def _kind(name: str) -> str:
    if name in _LADDER:
        return "active"
    return "lapsing" if name == "lapsing big spenders" else name


def _sticky_order(
    members: list[int], score: np.ndarray, before: Mapping[int, str], ladder: tuple[str, ...]
) -> list[int]:
    """``members`` best first by ``score``, where a centre overtakes another only when it
    leads it by more than :data:`NAME_HYSTERESIS`: from the order their ``before`` names had
    on ``ladder``, newcomers placed by score."""
    known = sorted(
        (i for i in members if before.get(i) in ladder), key=lambda i: ladder.index(before[i])
    )
    order = list(known)
    for i in sorted((i for i in members if i not in known), key=lambda i: -score[i]):
        behind = [n for n, j in enumerate(order) if score[j] < score[i]]
        order.insert(behind[0] if behind else len(order), i)
    moved = True
    while moved:
        moved = False
        for n in range(len(order) - 1):
            if score[order[n + 1]] > score[order[n]] + NAME_HYSTERESIS:
                order[n], order[n + 1] = order[n + 1], order[n]
                moved = True
    return order


def _ladder_steps(ranked: list[int], before: Mapping[int, str]) -> list[int]:
    """Each ranked active centre's step on :data:`_LADDER`: its earlier one while the steps
    still go down the ladder in rank order (a newcomer takes its rank's step), else every
    centre its rank's step (the best "loyal big spenders", the last "occasional buyers")."""
    last = len(ranked) - 1
    fresh = [len(_LADDER) - 1 if rank == last and rank > 0 else min(rank, _REPEATABLE)
             for rank in range(len(ranked))]  # fmt: skip
    kept = [
        _LADDER.index(before[i]) if before.get(i) in _LADDER else step
        for i, step in zip(ranked, fresh, strict=True)
    ]
    steady = all(a < b or a == b == _REPEATABLE for a, b in pairwise(kept))
    return kept if steady else fresh
