"""Which items a batch of rankings has to score: each customer's top ``k`` of a catalogue
found among a few candidate columns instead of every item.

A catalogue brings items nobody bought or looked at yet. Their only signals are the
catalogue's content cosine and, rarely, an EASE or co-purchase weight; their factor,
popularity and co-purchase scores are zero. Every arm of the blend scores such an item
``w * cosine`` (``w`` the arm's content weight, maybe 0), the same increasing function for
all of them, so for each customer only their ``k`` best never-sold items by cosine can make
their list, whatever the arm: the rest are ranked below at least ``k`` of those.
:func:`new_item_candidates` finds them; the ranking scores the sold items, the items with an
EASE or co-purchase weight and these, and gives the lists ranking every item gives.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import numpy as np
from scipy import sparse

__all__ = [
    "at_rows",
    "candidate_rows",
    "ease_columns",
    "new_item_candidates",
    "places",
    "top_k_columns",
]

logger = logging.getLogger(__name__)

# Cosines this close below a customer's k-th best are kept too: an arm's weight times two
# float32 cosines a few units of the last place apart may round to one score, which ranks
# them by column instead of by cosine.
_ROUNDING_MARGIN = 1e-6


def top_k_columns(scores: np.ndarray, k: int, probe: np.ndarray | None = None) -> np.ndarray:
    """The columns of each row's ``k`` largest values, best first, ties broken by the lower
    column (a ``float32`` matrix; ``-inf`` ranks last).

    ``probe``, some columns likely to score well in every row (the popular items), makes it
    faster and changes nothing: the ``k``-th best of a row's probe columns is a floor no
    column below it can pass, so only the few columns at or above their row's floor are
    sorted.

    >>> top_k_columns(np.array([[0.0, 2.0, 0.0, -np.inf, 2.0]], dtype=np.float32), 3)
    array([[1, 4, 0]])
    """
    m, n = scores.shape
    k = min(k, n)
    if probe is not None and k <= len(probe) and 8 * len(probe) < n:
        floor = np.take_along_axis(
            scores[:, probe], _top_k_columns(scores[:, probe], k)[:, k - 1 :], axis=1
        )
        rows, columns = np.nonzero(scores >= floor)
        if len(rows) < m * n // 4:
            order = np.lexsort((columns, -scores[rows, columns], rows))
            starts = np.searchsorted(rows[order], np.arange(m))
            top: np.ndarray = columns[order][starts[:, None] + np.arange(k)]
            return top
    return _top_k_columns(scores, k)


def _top_k_columns(scores: np.ndarray, k: int) -> np.ndarray:
    """:func:`top_k_columns` of every column. numpy's ``argpartition`` slows down tenfold on
    rows of many equal values (a catalogue's never-sold items all score 0, excluded ones
    ``-inf``), so each value is made distinct first: its float32 bits, mapped to an integer
    of the same order, then its column in the low 32 bits."""
    n = scores.shape[1]
    if k == 1:
        return scores.argmax(axis=1)[:, None]  # the first of equals, like a stable sort
    bits = (scores + np.float32(0.0)).view(np.int32)  # + 0.0: -0.0 ties with 0.0
    keys = (bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))).astype(np.int64)
    keys <<= 32
    keys |= np.int64(0xFFFFFFFF) - np.arange(n, dtype=np.int64)
    top = np.argpartition(keys, n - k, axis=1)[:, n - k :] if k < n else keys.argsort(axis=1)
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def new_item_candidates(
    new: np.ndarray,
    similarity: np.ndarray | None,
    excluded: Sequence[np.ndarray],
    k: int,
) -> np.ndarray:
    """The never-sold rows (of ``new``, allowed, in row order) any customer's top ``k`` may
    hold, whatever the arm: each customer's ``k`` best by cosine (``similarity``, customers x
    ``new``, float32, overwritten; None when no arm scores content), ties to the lower row,
    with those within float32 rounding of the ``k``-th, and the first ``k`` rows none
    excludes (an arm that weighs content 0 ranks them all 0, by row). ``excluded`` are each
    customer's positions in ``new`` left out of their list.

    No sort: one partition finds each customer's ``k``-th best cosine, and a column is kept
    when someone's cosine reaches it. When that is 0 (fewer than ``k`` positive), their
    positive ones are kept, and their best zeros are among the first rows kept anyway.

    >>> near = np.array([[0.9, 0.1, 0.5, 0.0], [0.0, 0.0, 0.0, 0.2]], dtype=np.float32)
    >>> new_item_candidates(np.array([3, 5, 8, 9]), near.copy(), [np.array([0]), np.array([])], 1)
    array([3, 5, 8, 9])
    >>> new_item_candidates(np.array([3, 5, 8, 9]), near.copy(), [np.array([]), np.array([])], 1)
    array([3, 9])
    """
    most_excluded = max((len(rows) for rows in excluded), default=0)
    # Ranked 0 by an arm without content: the first rows no customer of the batch excludes.
    kept = np.zeros(len(new), dtype=bool)
    kept[: k + most_excluded] = True
    if similarity is not None and len(new) > k + most_excluded:
        counts = [len(rows) for rows in excluded]
        if any(counts):  # by (row, column) pairs: the matrix may be a Fortran-ordered slice
            users = np.repeat(np.arange(len(excluded)), counts)
            similarity[users, np.concatenate([np.asarray(r, np.intp) for r in excluded])] = -np.inf
        kth = np.partition(similarity, len(new) - k, axis=1)[:, len(new) - k :][:, :1]
        smallest = np.nextafter(np.float32(0.0), np.float32(1.0))
        floor = np.where(kth > 0, kth * np.float32(1.0 - _ROUNDING_MARGIN), smallest)
        kept |= (similarity >= floor).any(axis=0)
    return new[kept]


def candidate_rows(
    popularity: np.ndarray,
    allowed: np.ndarray | None,
    named: np.ndarray,
    similarity: np.ndarray | None,
    excluded: tuple[np.ndarray, np.ndarray],
    k: int,
) -> np.ndarray:
    """The rows worth scoring, ascending: every sold item allowed (finite ``popularity``),
    every item a user's EASE or co-purchase weights name (``named``), and the never-sold
    items that can make a list (:func:`new_item_candidates`; ``similarity``, users x rows,
    and ``excluded``, the (user, row) pairs left out, users ascending, choose them)."""
    n = len(popularity)
    new = ~np.isfinite(popularity)
    rankable = np.ones(n, dtype=bool) if allowed is None else allowed
    new_rows = np.flatnonzero(new & rankable & ~named)
    users, rows = excluded
    at = places(new_rows, n)[rows]
    users, at = users[at >= 0], at[at >= 0]
    m = 0 if similarity is None else len(similarity)
    m = max(m, int(users.max()) + 1 if len(users) else 0)
    bounds = np.searchsorted(users, np.arange(m + 1)).tolist()
    mine = [at[start:end] for start, end in itertools.pairwise(bounds)]
    near = None if similarity is None else similarity[:, new_rows]
    picked = new_item_candidates(new_rows, near, mine, k)
    # Named items are scored even when not allowed (they rank -inf): the co-purchase
    # scores are scaled by each user's strongest count, whatever its item.
    chosen = (~new & rankable) | named
    chosen[picked] = True
    return np.flatnonzero(chosen)


def at_rows(values: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """``values`` of ``rows`` (all of them when None)."""
    return values if rows is None else values[rows]


def places(columns: np.ndarray, n: int) -> np.ndarray:
    """Each of ``n`` rows' place in ``columns`` (-1 when not there)."""
    spots = np.full(n, -1, dtype=np.intp)
    spots[columns] = np.arange(len(columns))
    return spots


def ease_columns(
    products: sparse.csr_matrix | None, m: int, width: int, n: int, columns: np.ndarray | None
) -> np.ndarray:
    """Users' EASE weights (``products``) as scores of the ``n`` rows (of ``columns``, which
    hold every row weighed, when given), scaled to a maximum of 1 over each user's row."""
    scores = np.zeros((m, width), dtype=np.float32)
    if products is None:
        return scores
    size = products.shape[1]
    strongest = products.max(axis=1).toarray()
    if columns is None:
        ease = products.toarray()[:, :n]
        target = scores[:, : min(size, n)]
    else:
        inside = columns[columns < size]
        ease = products[:, inside].toarray()
        target = scores[:, : len(inside)]  # columns are sorted: the fit's rows come first
    np.divide(ease, strongest, out=ease, where=strongest > 0)
    np.maximum(ease, 0.0, out=ease)
    target[...] = ease
    return scores
