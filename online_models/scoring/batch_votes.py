"""Many customers' segment votes and outlier streaks at once: what one score does to them
(:meth:`CustomerState.confirm_outlier` and :meth:`CustomerState.confirm_segment`), over arrays.

A re-score changes a customer's votes only when their placement differs from what they were
confirmed in, or when they are, or stop being, an outlier: most re-scores change nothing, and
only the states of those that did are written to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import NamedTuple

import numpy as np

from online_models.scoring.state import CustomerState
from online_models.segments.density import UNUSUAL

__all__ = ["NO_SEGMENT", "Confirmed", "Votes"]

logger = logging.getLogger(__name__)

#: A segment or candidate that is None in the state (segment ids are never negative; -1 is
#: density's :data:`~online_models.segments.density.UNUSUAL`).
NO_SEGMENT = -2
_READERS = tuple(
    attrgetter(name)
    for name in (
        "segment", "segment_candidate", "segment_votes", "outlier_streak", "segment_generation",
    )
)  # fmt: skip


class Votes(NamedTuple):
    """Per customer: the confirmed segment, the candidate and its votes (:data:`NO_SEGMENT`
    for None), how many scores in a row found them an outlier and the generation of the
    confirmed segment's row (:attr:`CustomerState.segment_generation`)."""

    segment: np.ndarray
    candidate: np.ndarray
    votes: np.ndarray
    streak: np.ndarray
    generation: np.ndarray

    @classmethod
    def of(cls, states: Sequence[CustomerState]) -> Votes:
        """The votes ``states`` hold, in order.

        >>> state = CustomerState.new(0.0)
        >>> state.segment, state.outlier_streak = 3, 1
        >>> [column.tolist() for column in Votes.of([state, CustomerState.new(0.0)])]
        [[3, -2], [-2, -2], [0, 0], [1, 0], [0, 0]]
        """
        table = np.array([list(map(read, states)) for read in _READERS], dtype=float)
        table[np.isnan(table)] = NO_SEGMENT
        return cls(*table.astype(np.int64).reshape(len(_READERS), len(states)))

    def served(self, *, unusual_outliers: bool) -> np.ndarray:
        """The segment each customer's latest score served (:meth:`CustomerScorer.
        served_segment`): with density segments (``unusual_outliers``) an outlier is in
        :data:`UNUSUAL`; :data:`NO_SEGMENT` before any segment."""
        if not unusual_outliers:
            return self.segment
        return np.where(self.streak > 0, UNUSUAL, self.segment)

    def confirm(
        self,
        placed: np.ndarray,
        outliers: np.ndarray,
        confirmations: int,
        current: Callable[[int, int], bool],
        *,
        generation: Callable[[int], int] = lambda segment: 0,
        counts: np.ndarray | None = None,
    ) -> Confirmed:
        """One counted score each, placing the customers in segments ``placed`` (UNUSUAL: in
        no dense region, no vote) and flagging ``outliers``, as ``CustomerScorer._place``
        does: a segment no longer ``current`` under the generation it was adopted in is
        forgotten first, and a segment adopted is adopted with its ``generation``. A score not
        ``counts`` (False: a further event of a day already counted) can end an outlier
        streak, not lengthen it (``CustomerState.confirm_outlier``).

        >>> votes = Votes(*np.array([[1, -2, 0, 1, 0], [1, 2, 2, 2, 0], [0, -2, 0, 0, 0]]).T)
        >>> confirmed = votes.confirm(np.array([1, 2, 2]), np.array([True, True, False]), 3,
        ...                           lambda segment, generation: True)
        >>> [column.tolist() for column in confirmed.votes]
        [[1, 2, 0], [-2, -2, 2], [0, 0, 1], [2, 3, 0], [0, 0, 0]]
        >>> confirmed.left.tolist(), confirmed.became_outlier.tolist()
        ([-2, 1, -2], [False, True, False])
        """
        streak = np.where(outliers, np.minimum(self.streak + 1, confirmations + 1), 0)
        became_outlier = outliers & (streak == confirmations)
        if counts is not None:  # a further score of a day already counted: no streak step
            streak = np.where(counts | ~outliers, streak, np.maximum(self.streak, 1))
            became_outlier &= counts
        segment, candidate, votes = self.segment, self.candidate, self.votes
        vote = placed != UNUSUAL
        known = segment != NO_SEGMENT
        voting = vote & known
        if self.generation[voting].any():  # a group's row reused: the pairs tell them apart
            held = np.unique(np.column_stack([segment, self.generation])[voting], axis=0)
        else:
            segments = np.unique(segment[voting])
            held = np.column_stack([segments, np.zeros_like(segments)])
        gone = [(s, g) for s, g in held.tolist() if not current(s, g)]
        if gone:  # their region merged or faded, or their group went: it moved, they did not
            stale = vote & _pairs_in(segment, self.generation, gone)
            segment = np.where(stale, NO_SEGMENT, segment)
            candidate = np.where(stale, NO_SEGMENT, candidate)
            votes = np.where(stale, 0, votes)
        first = vote & (segment == NO_SEGMENT)
        same = vote & (placed == segment)
        other = vote & ~first & ~same
        counted = np.where(placed == candidate, votes + 1, 1)
        adopted = other & (counted >= confirmations)
        left = np.where(adopted, segment, NO_SEGMENT)
        new_segment = np.where(first | adopted, placed, segment)
        new_candidate = np.where(same | adopted, NO_SEGMENT, np.where(other, placed, candidate))
        new_votes = np.where(same | adopted, 0, np.where(other, counted, votes))
        new_generation = self.generation
        if (first | adopted).any():
            places = np.unique(placed[first | adopted])
            of = dict(zip(places.tolist(), map(generation, places.tolist()), strict=True))
            placed_generation = np.array([of.get(s, 0) for s in placed.tolist()], np.int64)
            new_generation = np.where(first | adopted, placed_generation, self.generation)
        confirmed = Votes(new_segment, new_candidate, new_votes, streak, new_generation)
        return Confirmed(confirmed, left, became_outlier)

    def changed(self, before: Votes) -> np.ndarray:
        """The rows whose votes differ from ``before``'s."""
        differs = np.zeros(len(self.segment), dtype=bool)
        for now, then in zip(self, before, strict=True):
            differs |= now != then
        return np.flatnonzero(differs)

    def write(self, states: Sequence[CustomerState], rows: np.ndarray) -> None:
        """Store the votes of ``rows`` in their states."""
        columns = zip(*(column[rows].tolist() for column in self), strict=True)
        for i, (segment, candidate, votes, streak, generation) in zip(
            rows.tolist(), columns, strict=True
        ):
            state = states[i]
            state.segment = None if segment == NO_SEGMENT else segment
            state.segment_candidate = None if candidate == NO_SEGMENT else candidate
            state.segment_votes, state.outlier_streak = votes, streak
            state.segment_generation = generation


def _pairs_in(
    segment: np.ndarray, generation: np.ndarray, pairs: list[tuple[int, int]]
) -> np.ndarray:
    """Whether each (segment, generation) is one of ``pairs``."""
    found = np.zeros(len(segment), dtype=bool)
    for s, g in pairs:
        found |= (segment == s) & (generation == g)
    return found


class Confirmed(NamedTuple):
    """What :meth:`Votes.confirm` gives: the new votes, the segment each customer left
    (:data:`NO_SEGMENT`: none) and whether they just became an outlier."""

    votes: Votes
    left: np.ndarray
    became_outlier: np.ndarray
