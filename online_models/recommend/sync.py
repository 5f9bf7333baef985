"""A recommender's side of the group's model: what it learned of the items since its last
delta, and the group's item buckets applied."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from online_models.recommend.items import ItemShare, merge_items

__all__ = ["BucketUpdate", "ItemSync"]

logger = logging.getLogger(__name__)

#: A bucket of the group's model for :meth:`ItemSync.apply`: the group's share, this
#: worker's pending deltas of it, and the positions that changed (None: all of them).
BucketUpdate = tuple["ItemShare", Sequence["ItemShare"], np.ndarray | None]


class ItemSync:
    """The group half of :class:`~online_models.recommend.recommender.Recommender`:
    :meth:`delta` and :meth:`apply` of its items, bucket by bucket.

    A mixin: the recommender holds the state these methods read, declared here.
    """

    # The recommender's hyperparameters and state that syncing reads (set in its __init__).
    buckets: int
    _items: list[str]
    _hashes: np.ndarray
    _factors: np.ndarray
    _popularity: np.ndarray
    _unsent_factors: np.ndarray
    _unsent_popularity: np.ndarray
    _unsent_pairs: dict[int, dict[int, float]]
    _touched: set[int]
    _by_hash: tuple[np.ndarray, np.ndarray] | None
    _group_neighbors: dict[int, tuple[np.ndarray, np.ndarray]]
    _neighbors: dict[int, dict[int, float]]
    _neighbor_arrays: dict[int, tuple[np.ndarray, np.ndarray]]

    if TYPE_CHECKING:

        def _row(self, item: str) -> int: ...

        def _dangle(self, row: int, refs: np.ndarray, counts: np.ndarray) -> None: ...

    def delta(self) -> dict[int, ItemShare]:
        """What this model learned since its last delta, by bucket: the factor steps, the
        popularity and the co-purchase counts of the items it touched."""
        rows = set(self._touched)
        for row, paired in self._unsent_pairs.items():
            rows.add(row)
            rows.update(paired)
        by_bucket: dict[int, list[int]] = {}
        for row in sorted(rows):
            by_bucket.setdefault(int(self._hashes[row]) % self.buckets, []).append(row)
        deltas = {}
        for bucket, bucket_rows in by_bucket.items():
            at = np.array(bucket_rows, dtype=np.int64)
            lists = [self._unsent_pairs.get(row, {}) for row in bucket_rows]
            offsets = np.zeros(len(at) + 1, dtype=np.int64)
            offsets[1:] = np.cumsum([len(pairs) for pairs in lists])
            others = [other for pairs in lists for other in pairs]
            deltas[bucket] = ItemShare(
                tuple(self._items[row] for row in bucket_rows),
                self._unsent_factors[at].copy(),
                self._unsent_popularity[at].copy(),
                offsets,
                self._hashes[np.array(others, dtype=np.int64)] if others else np.zeros(0, np.int64),
                np.array([count for pairs in lists for count in pairs.values()], dtype=float),
            )
        n = len(self._items)
        self._unsent_factors[:n] = 0.0
        self._unsent_popularity[:n] = -np.inf
        self._unsent_pairs = {}
        self._touched = set()
        return deltas

    def apply(self, buckets: Mapping[int, BucketUpdate]) -> None:
        """Score with the group's buckets plus what the group has not merged yet of this
        model's: its ``pending`` deltas for each bucket and what it learned since.

        A bucket's ``changed`` positions (those that changed since the version of it applied
        before) limit the work to its changed items; None applies every item of it.
        """
        updates = []
        for group, pending, changed in buckets.values():
            own = pending[0] if pending else None
            for share in pending[1:]:
                own = merge_items(own, share) if own is not None else share
            positions = np.arange(len(group.items)) if changed is None else changed
            items = [group.items[p] for p in positions.tolist()]
            updates.append((group, own, positions, [self._row(item) for item in items], items))
        hashes, rows_by_hash = self._hash_index()
        # Every bucket's changed co-purchase lists, resolved to rows in one pass.
        slices = [
            (group, a, b)
            for group, _, positions, _, _ in updates
            for a, b in zip(group.offsets[positions], group.offsets[positions + 1], strict=True)
        ]
        if not slices:
            return
        resolved = self._rows_of_hashes(np.concatenate([group.refs[a:b] for group, a, b in slices]))
        bounds = np.concatenate([[0], np.cumsum([b - a for _, a, b in slices])]).tolist()
        next_slice = 0
        for group, own, positions, rows, items in updates:
            at = np.array(rows, dtype=np.int64)
            factors = group.factors[positions] + self._unsent_factors[at]
            popularity = np.logaddexp(group.popularity[positions], self._unsent_popularity[at])
            own_at = own.positions if own is not None else {}
            for i, (row, item) in enumerate(zip(rows, items, strict=True)):
                _, a, b = slices[next_slice]
                start, end = bounds[next_slice], bounds[next_slice + 1]
                next_slice += 1
                neighbor_rows = resolved[start:end]
                known = neighbor_rows >= 0
                self._group_neighbors[row] = (neighbor_rows[known], group.counts[a:b][known])
                # Counts naming an item this worker does not know yet: linked when it comes.
                self._dangle(row, group.refs[a:b][~known], group.counts[a:b][~known])
                local = dict(self._unsent_pairs.get(row, {}))
                mine = own_at.get(item)
                if own is not None and mine is not None:
                    factors[i] += own.factors[mine]
                    popularity[i] = np.logaddexp(popularity[i], own.popularity[mine])
                    for ref, count in zip(*own.neighbors(mine), strict=True):
                        other = self._row_of_hash(int(ref), hashes, rows_by_hash)
                        if other is not None:
                            local[other] = local.get(other, 0.0) + float(count)
                if local:
                    self._neighbors[row] = local
                else:
                    self._neighbors.pop(row, None)
                self._neighbor_arrays.pop(row, None)
            if len(at):
                self._factors[at] = factors
                self._popularity[at] = popularity

    @staticmethod
    def _row_of_hash(ref: int, hashes: np.ndarray, rows: np.ndarray) -> int | None:
        found = int(np.searchsorted(hashes, ref))
        return int(rows[found]) if found < len(hashes) and hashes[found] == ref else None

    def _rows_of_hashes(self, values: np.ndarray) -> np.ndarray:
        """The row of each item hash of ``values``, -1 for one not known here."""
        hashes, rows = self._hash_index()
        if not len(hashes):
            return np.full(len(values), -1, dtype=np.intp)
        found = np.minimum(np.searchsorted(hashes, values), len(hashes) - 1)
        return np.where(hashes[found] == values, rows[found], -1)

    def _hash_index(self) -> tuple[np.ndarray, np.ndarray]:
        """The item hashes sorted, and the row of each: for resolving co-purchase refs."""
        n = len(self._items)
        if self._by_hash is None or len(self._by_hash[0]) != n:
            order = np.argsort(self._hashes[:n], kind="stable")
            self._by_hash = (self._hashes[:n][order], order)
        return self._by_hash
