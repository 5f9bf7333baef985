"""EASE in the stream: who owns what together, the group's Gram matrix, its closed-form refit.

EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019) scores item
``j`` for a customer who owns the items ``x_u`` as ``x_u B``, with the item x item weights
``B = I - P / diag(P)``, ``P = (X'X + lambda I)^-1`` and a zero diagonal. Everything it needs
of the purchases is the Gram matrix ``G = X'X``: ``G[i, j]`` customers own both ``i`` and
``j``, ``G[i, i]`` own ``i``. That is a sum over customers, so the stream can count it:

* a worker counts, when a customer buys an item new to them, one owner of it and one pair
  with each item they owned before (:class:`EaseCounts`, a delta: counts add);
* the group's model adds every worker's counts into one Gram over the items that matter
  (:class:`EaseGram`, at most ``max_items``: the most owned; pairs with other items are not
  kept) and refits ``B`` from it off the event loop (:func:`fit_ease`), keeping each item's
  ``neighbors`` strongest positive weights (:class:`EaseShare`, what workers rank with).

The counts of one worker are the same as those of many, and, while the catalogue's owned items
fit in ``max_items``, the Gram does not depend on the order deltas arrive in: one worker and
eight fit the same weights.

>>> gram = EaseGram(max_items=10)
>>> counts = EaseCounts.of_purchases([(1, [2, 3]), (2, [1]), (3, []), (1, [3])], time=0.0)
>>> gram.add(counts)
>>> share = fit_ease(gram.snapshot(), strength=0.5, neighbors=2, fitted_at=0.0)
>>> sorted(share.items.tolist()), share.pairs
([1, 2, 3], 4.0)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import linalg

from online_models.recommend.blend import ARM_COUNT
from online_models.recommend.items import sum_pairs

__all__ = ["EaseCounts", "EaseGram", "EaseShare", "GramSnapshot", "fit_ease"]

logger = logging.getLogger(__name__)

# The Gram's rows grow in blocks that double, up to max_items.
_INITIAL_ITEMS = 256
# Rows of the weights whose strongest are found at once in a refit.
_TOP_BLOCK = 256


@dataclass(frozen=True)
class EaseCounts:
    """Ownership counts one worker made since its last delta (every field adds).

    ``left`` and ``right`` are item hashes of pairs owned together (``left < right``) and
    ``counts`` how many customers came to own both; ``owners`` counts new owners of each item
    of ``owned``; ``time`` is the newest event time counted. ``trials`` and ``hits`` are the
    blend's outcomes (:mod:`~online_models.recommend.blend`): the log of the forward-decayed
    number of baskets judged, for each arm the log of the baskets it would have hit, and
    ``wins[i, j]`` the log of the baskets arm ``i`` hit and arm ``j`` missed.
    """

    left: np.ndarray
    right: np.ndarray
    counts: np.ndarray
    owned: np.ndarray
    owners: np.ndarray
    time: float
    trials: float = -math.inf
    hits: np.ndarray | None = None
    wins: np.ndarray | None = None

    @classmethod
    def empty(cls) -> EaseCounts:
        """Nothing counted."""
        none = np.zeros(0, np.int64)
        return cls(none, none, np.zeros(0), none, np.zeros(0), -math.inf)

    @classmethod
    def of_purchases(
        cls, purchases: Iterable[tuple[int, Sequence[int] | np.ndarray]], *, time: float
    ) -> EaseCounts:
        """The counts of ``(item, items owned before)`` purchases of items new to their buyer.

        >>> c = EaseCounts.of_purchases([(5, [7]), (7, [5]), (9, [5, 7])], time=1.0)
        >>> c.left.tolist(), c.right.tolist(), c.counts.tolist(), c.owners.tolist()
        ([5, 5, 7], [7, 9, 9], [2.0, 1.0, 1.0], [1.0, 1.0, 1.0])
        """
        items, befores = [], []
        for item, before in purchases:
            items.append(item)
            befores.append(np.asarray(before, dtype=np.int64))
        if not items:
            return cls.empty()
        bought = np.asarray(items, dtype=np.int64)
        sizes = np.array([len(b) for b in befores], dtype=np.int64)
        new = np.repeat(bought, sizes)
        old = np.concatenate(befores) if sizes.sum() else np.zeros(0, np.int64)
        keep = new != old
        left, right = np.minimum(new, old)[keep], np.maximum(new, old)[keep]
        left, right, counts = sum_pairs(left, right, np.ones(len(left)))
        owned, owners = np.unique(bought, return_counts=True)
        return cls(left, right, counts, owned, owners.astype(float), time)

    def split(self, max_pairs: int) -> list[EaseCounts]:
        """These counts as pieces of at most ``max_pairs`` pairs each (the first holds the
        owners and the outcomes): each piece is a delta of its own, so no delta outgrows a
        model record however many pairs a sync counted.

        >>> c = EaseCounts.of_purchases([(1, [2, 3, 4])], time=1.0)
        >>> [len(piece.left) for piece in c.split(2)], [len(p.owned) for p in c.split(2)]
        ([2, 1], [1, 0])
        """
        if len(self.left) <= max_pairs:
            return [self]
        pieces = []
        for start in range(0, len(self.left), max_pairs):
            end = start + max_pairs
            first = start == 0
            pieces.append(
                EaseCounts(
                    self.left[start:end],
                    self.right[start:end],
                    self.counts[start:end],
                    self.owned if first else np.zeros(0, np.int64),
                    self.owners if first else np.zeros(0),
                    self.time,
                    self.trials if first else -math.inf,
                    self.hits if first else None,
                    self.wins if first else None,
                )
            )
        return pieces

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Metadata and arrays for a delta record."""
        hits = np.zeros(0) if self.hits is None else self.hits
        wins = np.zeros((0, 0)) if self.wins is None else self.wins
        # Times and log weights may be -inf (nothing yet), which JSON has no word for.
        clock = np.array([self.time, self.trials])
        arrays = {"left": self.left, "right": self.right, "counts": self.counts,
                  "owned": self.owned, "owners": self.owners, "hits": hits, "wins": wins,
                  "clock": clock}  # fmt: skip
        return {}, arrays

    @classmethod
    def from_arrays(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> EaseCounts:
        """The counts a delta record carries; ValueError when they are not counts."""
        left, right = arrays["left"], arrays["right"]
        counts, owned, owners = arrays["counts"], arrays["owned"], arrays["owners"]
        hits = np.asarray(arrays["hits"], dtype=float)
        time, trials = (float(x) for x in np.asarray(arrays["clock"], dtype=float).reshape(2))
        if (
            left.dtype.kind != "i"
            or right.dtype.kind != "i"
            or owned.dtype.kind != "i"
            or not left.shape == right.shape == counts.shape
            or owned.shape != owners.shape
            or left.ndim != 1
            or owned.ndim != 1
            or hits.shape not in ((0,), (ARM_COUNT,))
            or (left >= right).any()
            or not (np.isfinite(counts).all() and (counts >= 0).all())
            or not (np.isfinite(owners).all() and (owners >= 0).all())
            or np.isnan(hits).any()
            or (hits == np.inf).any()
            or math.isnan(time)
            or time == math.inf
            or math.isnan(trials)
            or trials == math.inf
        ):
            msg = (
                "ease counts must be pairs of item hashes (left < right) with counts >= 0 "
                f"and outcomes of {ARM_COUNT} arms"
            )
            raise ValueError(msg)
        wins = _wins_of(arrays, len(hits))
        return cls(
            left.astype(np.int64), right.astype(np.int64), counts.astype(float),
            owned.astype(np.int64), owners.astype(float), time, trials, hits if len(hits) else None,
            wins,
        )  # fmt: skip


def merge_counts(a: EaseCounts, b: EaseCounts) -> EaseCounts:
    """Two workers' (or two syncs') counts together.

    >>> one = EaseCounts.of_purchases([(1, [2])], time=1.0)
    >>> both = merge_counts(one, one)
    >>> both.counts.tolist(), both.owners.tolist(), both.time
    ([2.0], [2.0], 1.0)
    """
    left, right, counts = sum_pairs(
        np.concatenate([a.left, b.left]),
        np.concatenate([a.right, b.right]),
        np.concatenate([a.counts, b.counts]),
    )
    owned, where = np.unique(np.concatenate([a.owned, b.owned]), return_inverse=True)
    owners = np.bincount(where, weights=np.concatenate([a.owners, b.owners]), minlength=len(owned))
    return EaseCounts(
        left, right, counts, owned, owners, max(a.time, b.time),
        float(np.logaddexp(a.trials, b.trials)), _add_logs(a.hits, b.hits),
        _add_logs(a.wins, b.wins),
    )  # fmt: skip


def _wins_of(arrays: Mapping[str, np.ndarray], arms: int) -> np.ndarray | None:
    """The ``wins`` a record carries (arms x arms log weights), None when it has none (records
    from before them, or no outcomes); ValueError when they are not log weights."""
    if "wins" not in arrays or not np.size(arrays["wins"]):
        return None
    wins = np.asarray(arrays["wins"], dtype=float)
    if wins.shape != (arms, arms) or np.isnan(wins).any() or (wins == np.inf).any():
        msg = f"wins of shape {wins.shape} are not log weights of {arms} arms x {arms}"
        raise ValueError(msg)
    return wins


def _add_logs(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """Two arrays of log weights added; one missing, the other; of other shapes, ``b``."""
    if a is None or (b is not None and a.shape != b.shape):
        return b
    return a if b is None else np.logaddexp(a, b)


@dataclass(frozen=True)
class GramSnapshot:
    """What a refit reads of :class:`EaseGram`: the items and their Gram (a copy)."""

    items: np.ndarray
    gram: np.ndarray
    pairs: float
    time: float


class EaseGram:
    """The group's ownership counts: the Gram matrix of the ``max_items`` most owned items.

    Every item's owners are counted; the pairs of items in the Gram are counted exactly
    from the moment both are in it. When the Gram is full, an item owned by more than
    twice as many customers as the least owned item in it takes that item's place at the
    next :meth:`snapshot` (its pairs counted from then on). Below ``max_items`` the Gram is
    the same whatever order the counts come in; once it is full, which items made it in
    first depends on that order (up to the factor of two).
    """

    def __init__(self, max_items: int = 4000) -> None:
        if max_items < 2:
            msg = f"max_items must be >= 2, got {max_items}"
            raise ValueError(msg)
        self.max_items = max_items
        self.owners: dict[int, float] = {}  # every item's owners
        self.position: dict[int, int] = {}  # item hash -> row of the Gram
        self._items = np.zeros(0, np.int64)  # row -> item hash
        # Single precision: counts are whole numbers, exact below 2**24 customers per pair.
        self._gram = np.zeros((0, 0), np.float32)
        self.pairs = 0.0  # pair counts added, all told
        self.time = -math.inf  # the newest event time counted
        self.started = math.inf  # the event time of the first counts added
        self.trials = -math.inf
        self.hits: np.ndarray | None = None
        self.wins: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.position)

    def add(self, counts: EaseCounts) -> None:
        """Add a worker's counts."""
        owners = self.owners
        for item, n in zip(counts.owned.tolist(), counts.owners.tolist(), strict=True):
            owners[item] = owners.get(item, 0.0) + n
        # Items a pair names join while there is room, whether or not their owners were
        # counted yet (another worker's delta may bring them later): no pair is lost to the
        # order deltas arrive in.
        if len(self.position) < self.max_items:
            named = np.unique(np.concatenate([counts.owned, counts.left, counts.right]))
            for item in named.tolist():
                if item not in self.position:
                    if len(self.position) >= self.max_items:
                        break
                    self._admit(item)
        self.time = max(self.time, counts.time)
        if math.isfinite(counts.time):
            self.started = min(self.started, counts.time)
        self.trials = float(np.logaddexp(self.trials, counts.trials))
        self.hits = _add_logs(self.hits, counts.hits)
        self.wins = _add_logs(self.wins, counts.wins)
        if not len(counts.left):
            return
        rows = self._rows(counts.left)
        cols = self._rows(counts.right)
        kept = (rows >= 0) & (cols >= 0)
        rows, cols, values = rows[kept], cols[kept], counts.counts[kept]
        np.add.at(self._gram, (rows, cols), values)
        np.add.at(self._gram, (cols, rows), values)
        self.pairs += float(values.sum())

    def snapshot(self) -> GramSnapshot:
        """The items and their Gram (owners on the diagonal) for a refit, taking the most
        owned items into the Gram first when it is full."""
        self._rotate()
        n = len(self.position)
        gram = self._gram[:n, :n].astype(np.float64)
        items = self._items[:n].copy()
        gram[np.diag_indices(n)] = [self.owners.get(item, 0.0) for item in items.tolist()]
        return GramSnapshot(items, gram, self.pairs, self.time)

    def _rows(self, hashes: np.ndarray) -> np.ndarray:
        position = self.position
        return np.fromiter(
            (position.get(h, -1) for h in hashes.tolist()), dtype=np.int64, count=len(hashes)
        )

    def _admit(self, item: int, row: int | None = None) -> None:
        if row is None:
            row = len(self.position)
            if row >= len(self._items):
                size = min(max(2 * row, _INITIAL_ITEMS), self.max_items)
                grown = np.zeros((size, size), np.float32)
                grown[:row, :row] = self._gram[:row, :row]
                self._gram = grown
                self._items = np.concatenate([self._items, np.zeros(size - row, np.int64)])
        self.position[item] = row
        self._items[row] = item

    def _rotate(self) -> None:
        """Swap in items outside the Gram owned by more than twice its least owned ones."""
        if len(self.position) < self.max_items or len(self.owners) <= len(self.position):
            return
        outside = sorted(
            ((n, item) for item, n in self.owners.items() if item not in self.position),
            reverse=True,
        )
        inside = sorted((self.owners.get(item, 0.0), item) for item in self.position)
        for (n_out, item_out), (n_in, item_in) in zip(outside, inside, strict=False):
            if n_out <= 2 * n_in:
                break
            row = self.position.pop(item_in)
            self._gram[row, :] = 0.0
            self._gram[:, row] = 0.0
            self._admit(item_out, row)


@dataclass(frozen=True)
class EaseShare:
    """The group's fitted EASE weights: for each of ``items`` (hashes), its strongest
    positive weights ``weights[offsets[i]:offsets[i + 1]]`` towards the items ``refs``.

    ``strength`` is the lambda fitted with, ``fitted_at`` the event time of the counts,
    ``pairs`` the pair counts they held; ``trials``, ``hits`` and ``wins`` the blend's outcomes
    as the group's model had them at the fit, and ``arm`` the blend chosen from them.
    """

    items: np.ndarray
    offsets: np.ndarray
    refs: np.ndarray
    weights: np.ndarray
    strength: float
    fitted_at: float
    pairs: float
    trials: float = -math.inf
    hits: np.ndarray | None = None
    arm: int = -1
    wins: np.ndarray | None = None

    @classmethod
    def empty(cls) -> EaseShare:
        """No fit yet."""
        none = np.zeros(0, np.int64)
        return cls(none, np.zeros(1, np.int64), none, np.zeros(0, np.float32), 0.0,
                   -math.inf, 0.0)  # fmt: skip

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Metadata and arrays for a model record."""
        meta = {"arm": self.arm}
        arrays = {
            "fit": np.array([self.strength, self.fitted_at, self.pairs, self.trials]),
            "items": self.items,
            "offsets": self.offsets.astype(np.int64),
            "refs": self.refs,
            "weights": self.weights.astype(np.float32),
            "hits": np.zeros(0) if self.hits is None else self.hits,
            "wins": np.zeros((0, 0)) if self.wins is None else self.wins,
        }
        return meta, arrays

    @classmethod
    def from_arrays(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> EaseShare:
        """The share a model record carries; ValueError when it is not a fit."""
        items, offsets, refs = arrays["items"], arrays["offsets"], arrays["refs"]
        weights, hits = arrays["weights"], np.asarray(arrays["hits"], dtype=float)
        fit = np.asarray(arrays["fit"], dtype=float).reshape(4)
        strength, fitted_at, pairs, trials = (float(x) for x in fit)
        arm = int(meta["arm"])
        if (
            items.dtype.kind != "i"
            or refs.dtype.kind != "i"
            or offsets.dtype.kind != "i"
            or items.ndim != 1
            or offsets.shape != (len(items) + 1,)
            or refs.shape != weights.shape
            or refs.ndim != 1
            or offsets[0] != 0
            or offsets[-1] != len(refs)
            or (np.diff(offsets) < 0).any()
            or not np.isfinite(weights).all()
            or hits.shape not in ((0,), (ARM_COUNT,))
            or np.isnan(hits).any()
            or (hits == np.inf).any()
            or not (math.isfinite(strength) and strength >= 0)
            or math.isnan(fitted_at)
            or fitted_at == math.inf
            or not (math.isfinite(pairs) and pairs >= 0)
            or math.isnan(trials)
            or trials == math.inf
        ):
            msg = (
                f"ease share of {len(items)} items with offsets {offsets.shape}, refs "
                f"{refs.shape} and weights {weights.shape} is not a fit"
            )
            raise ValueError(msg)
        wins = _wins_of(arrays, len(hits))
        return cls(
            items.astype(np.int64), offsets.astype(np.int64), refs.astype(np.int64),
            weights.astype(np.float32), strength, fitted_at, pairs, trials,
            hits if len(hits) else None, arm, wins,
        )  # fmt: skip


def fit_ease(
    snapshot: GramSnapshot, *, strength: float, neighbors: int, fitted_at: float
) -> EaseShare:
    """EASE's weights of ``snapshot``'s Gram, each item keeping its ``neighbors`` strongest
    positive weights (items nobody owns yet are left out).

    The inverse of the regularised Gram is the whole cost: ``n^3`` for ``n`` items (2.4-2.9 s
    of one core at 4,000 items, ``benchmarks/ease_cost.py``), in ``8 n^2`` bytes inverted in
    place, besides the snapshot's copy.

    >>> snap = GramSnapshot(np.array([10, 20, 30]),
    ...                     np.array([[3., 2., 0.], [2., 3., 1.], [0., 1., 2.]]), 3.0, 0.0)
    >>> fit = fit_ease(snap, strength=1.0, neighbors=1, fitted_at=0.0)
    >>> fit.items.tolist(), fit.refs.tolist()
    ([10, 20, 30], [20, 10, 20])
    """
    if not strength > 0:
        msg = f"strength must be > 0, got {strength}"
        raise ValueError(msg)
    owned = np.flatnonzero(np.diag(snapshot.gram) > 0)
    items = snapshot.items[owned]
    n = len(items)
    if n < 2:
        return EaseShare(items, np.zeros(n + 1, np.int64), np.zeros(0, np.int64),
                         np.zeros(0, np.float32), strength, fitted_at, snapshot.pairs)  # fmt: skip
    weights = _inverse(snapshot.gram, owned, strength)
    weights /= -np.diag(weights).copy()  # column j over -P[j, j]: B = I - P / diag(P)
    weights[np.diag_indices(n)] = 0.0
    keep = min(neighbors, n - 1)
    tops, values = [], []
    for start in range(0, n, _TOP_BLOCK):  # a block of rows at a time: no n x n index matrix
        block = weights[start : start + _TOP_BLOCK]
        top = np.argpartition(block, block.shape[1] - keep, axis=1)[:, -keep:]
        value = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-value, axis=1, kind="stable")
        tops.append(np.take_along_axis(top, order, axis=1))
        values.append(np.take_along_axis(value, order, axis=1))
    top, value = np.concatenate(tops), np.concatenate(values)
    positive = value > 0
    offsets = np.zeros(n + 1, np.int64)
    offsets[1:] = np.cumsum(positive.sum(axis=1))
    return EaseShare(
        items, offsets, items[top[positive]], value[positive].astype(np.float32),
        strength, fitted_at, snapshot.pairs,
    )  # fmt: skip


def _inverse(gram: np.ndarray, owned: np.ndarray, strength: float) -> np.ndarray:
    """``(G + strength I)^-1`` of the ``owned`` rows and columns of ``gram``.

    A Gram matrix plus a ridge is positive definite: its Cholesky inverse runs in place (the
    transpose of the symmetric matrix is the same matrix in Fortran order, which LAPACK does
    not copy). Counts that are not quite a Gram (items that joined it late miss the pairs
    counted before) may not be; they get a general inverse of a fresh copy.
    """
    regularised = gram[np.ix_(owned, owned)]
    regularised[np.diag_indices(len(owned))] += strength
    try:
        return linalg.inv(regularised.T, overwrite_a=True, check_finite=False, assume_a="pos")
    except TypeError:  # SciPy before 1.17 has no assume_a here: a copying inverse
        return linalg.inv(regularised, check_finite=False)
    except linalg.LinAlgError:
        logger.warning("EASE's Gram is not positive definite: fitted with a general inverse")
    regularised = gram[np.ix_(owned, owned)]
    regularised[np.diag_indices(len(owned))] += strength
    return np.linalg.inv(regularised)
