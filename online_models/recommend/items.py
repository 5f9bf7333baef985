"""The items a group of workers shares: item hashes, seeded latent factors, the group's item
share and its merge."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

__all__ = ["ItemShare", "initial_latent", "item_hash", "merge_items", "sum_pairs"]

logger = logging.getLogger(__name__)

# Standard deviation of the initial latent factors (River's FunkMF initialiser's).
_INIT_SIGMA = 0.1


def item_hash(item: str) -> int:
    """A 64-bit signed hash of an item id: how a co-purchase pair names its other item.

    >>> item_hash("sku-1") == item_hash("sku-1") != item_hash("sku-2")
    True
    """
    digest = hashlib.blake2b(item.encode("utf-8"), digest_size=8, person=b"crm-item").digest()
    return int.from_bytes(digest, "little", signed=True)


def initial_latent(key: str, n_factors: int, *, kind: str = "item") -> np.ndarray:
    """The latent factors a new item or user (``kind``) starts with: N(0, 0.1) draws seeded
    by its id, so every worker starts the same item or customer at the same place.

    >>> bool((initial_latent("sku-1", 4) == initial_latent("sku-1", 4)).all())
    True
    """
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, person=kind.encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest, "little"))
    return rng.normal(0.0, _INIT_SIGMA, n_factors)


@dataclass(frozen=True)
class ItemShare:
    """The recommender's shared part for one bucket of items, or what one worker learned
    about them since its last delta.

    ``factors`` are the items' latent factors (in a delta: the sum of the steps taken, which
    add); ``popularity`` is the log of each item's popularity with forward decay (the log of
    the sum of ``weight * exp(t / tau)`` over its events, -inf for none), which merges by
    ``logaddexp`` with no landmark to agree on; the co-purchase counts of item ``i`` are
    ``counts[offsets[i]:offsets[i + 1]]`` of the items whose :func:`item_hash` is in ``refs``.
    """

    items: tuple[str, ...]
    factors: np.ndarray
    popularity: np.ndarray
    offsets: np.ndarray
    refs: np.ndarray
    counts: np.ndarray

    @classmethod
    def empty(cls, n_factors: int) -> ItemShare:
        """No item."""
        return cls((), np.zeros((0, n_factors)), np.zeros(0), np.zeros(1, np.int64),
                   np.zeros(0, np.int64), np.zeros(0))  # fmt: skip

    def neighbors(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """The co-bought item hashes of the item at ``position`` and their counts."""
        start, end = self.offsets[position], self.offsets[position + 1]
        return self.refs[start:end], self.counts[start:end]

    @cached_property
    def positions(self) -> dict[str, int]:
        """Each item's position."""
        return {item: i for i, item in enumerate(self.items)}

    @cached_property
    def owners(self) -> np.ndarray:
        """The position of the item each co-purchase count belongs to."""
        return np.repeat(np.arange(len(self.items)), np.diff(self.offsets))

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Metadata and arrays for a model record (factors and counts in single precision)."""
        arrays = {
            "factors": self.factors.astype(np.float32),
            "popularity": self.popularity,
            "offsets": self.offsets.astype(np.int64),
            "refs": self.refs.astype(np.int64),
            "counts": self.counts.astype(np.float32),
        }
        return {"items": list(self.items)}, arrays

    @classmethod
    def from_arrays(
        cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], *, n_factors: int
    ) -> ItemShare:
        """The share a model record carries; ValueError if it does not fit the recommender."""
        items = meta.get("items")
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            msg = "item share must list its item ids"
            raise ValueError(msg)
        n = len(items)
        factors, popularity = arrays["factors"], arrays["popularity"]
        offsets, refs, counts = arrays["offsets"], arrays["refs"], arrays["counts"]
        if (
            factors.shape != (n, n_factors)
            or popularity.shape != (n,)
            or offsets.shape != (n + 1,)
            or refs.shape != counts.shape
            or refs.ndim != 1
            or offsets.dtype.kind != "i"
            or refs.dtype.kind != "i"
            or offsets[0] != 0
            or offsets[-1] != len(refs)
            or (np.diff(offsets) < 0).any()
            or not np.isfinite(factors).all()
            or not np.isfinite(counts).all()
            or np.isnan(popularity).any()
            or (popularity == np.inf).any()
            or len(set(items)) != n
        ):
            msg = (
                f"item share of {n} items with factors {factors.shape}, popularity "
                f"{popularity.shape}, offsets {offsets.shape}, refs {refs.shape} and counts "
                f"{counts.shape} does not fit {n_factors} factors"
            )
            raise ValueError(msg)
        return cls(
            tuple(items),
            factors.astype(float),
            popularity.astype(float),
            offsets.astype(np.int64),
            refs.astype(np.int64),
            counts.astype(float),
        )


def merge_items(
    a: ItemShare,
    b: ItemShare,
    *,
    initial: Callable[[str], np.ndarray] | None = None,
    max_neighbors: int | None = None,
) -> ItemShare:
    """``a`` and ``b`` together: factor steps and co-purchase counts add, popularity adds (in
    log space); items only ``b`` knows are appended.

    ``a`` may be the group's bucket (absolute factors): then ``initial`` gives the factors an
    item new to the group starts from, and an item's co-purchase list longer than
    ``max_neighbors`` keeps its strongest half. Two deltas merge with neither. The work is
    numpy over the bucket plus Python over ``b``'s items only.

    >>> one = ItemShare(("tea",), np.ones((1, 2)), np.zeros(1), np.array([0, 1]),
    ...                 np.array([item_hash("cup")]), np.array([1.0]))
    >>> both = merge_items(one, one)
    >>> both.factors.tolist(), float(np.exp(both.popularity[0])), both.counts.tolist()
    ([[2.0, 2.0]], 2.0, [2.0])
    """
    position = a.positions
    new_items = [item for item in b.items if item not in position]
    items = a.items + tuple(new_items)
    if new_items:
        position = {**position, **{item: len(position) + i for i, item in enumerate(new_items)}}
    n_a, n = len(a.items), len(a.items) + len(new_items)
    factors = np.empty((n, a.factors.shape[1]))
    factors[:n_a] = a.factors
    popularity = np.full(n, -np.inf)
    popularity[:n_a] = a.popularity
    for offset, item in enumerate(new_items):
        factors[n_a + offset] = 0.0 if initial is None else initial(item)
    at = np.array([position[item] for item in b.items], dtype=np.int64)
    if len(at):
        factors[at] += b.factors
        popularity[at] = np.logaddexp(popularity[at], b.popularity)
    if not len(b.refs):
        offsets = np.concatenate([a.offsets, np.full(n - n_a, a.offsets[-1])])
        return _with_positions(
            ItemShare(items, factors, popularity, offsets, a.refs, a.counts), position
        )
    # Counts of the items b touched are summed per (item, ref); the others are kept as they are.
    b_owner = at[b.owners]
    touched = np.zeros(n, dtype=bool)
    touched[b_owner] = True
    keep = ~touched[a.owners]
    owners = np.concatenate([a.owners[~keep], b_owner])
    refs = np.concatenate([a.refs[~keep], b.refs])
    counts = np.concatenate([a.counts[~keep], b.counts])
    owners, refs, counts = sum_pairs(owners, refs, counts)
    if max_neighbors is not None:
        owners, refs, counts = _prune(owners, refs, counts, max_neighbors)
    owners = np.concatenate([a.owners[keep], owners])
    refs = np.concatenate([a.refs[keep], refs])
    counts = np.concatenate([a.counts[keep], counts])
    order = np.argsort(owners, kind="stable")
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.bincount(owners, minlength=n))
    merged = ItemShare(items, factors, popularity, offsets, refs[order], counts[order])
    merged.__dict__["owners"] = owners[order]
    return _with_positions(merged, position)


def sum_pairs(
    left: np.ndarray, right: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``values`` of equal ``(left, right)`` pairs summed, the pairs sorted.

    >>> [a.tolist() for a in sum_pairs(np.array([2, 1, 2]), np.array([5, 9, 5]),
    ...                                np.array([1.0, 2.0, 3.0]))]
    [[1, 2], [9, 5], [2.0, 4.0]]
    """
    if not len(left):
        return left, right, values
    order = np.lexsort((right, left))
    left, right, values = left[order], right[order], values[order]
    first = np.ones(len(left), dtype=bool)
    first[1:] = (left[1:] != left[:-1]) | (right[1:] != right[:-1])
    starts = np.flatnonzero(first)
    return left[starts], right[starts], np.add.reduceat(values, starts)


def _with_positions(share: ItemShare, positions: dict[str, int]) -> ItemShare:
    """``share`` with its :attr:`ItemShare.positions` known already (never mutated after)."""
    share.__dict__["positions"] = positions
    return share


def _prune(
    owners: np.ndarray, refs: np.ndarray, counts: np.ndarray, max_neighbors: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Past ``max_neighbors`` counts, an item keeps its strongest half (``owners`` sorted)."""
    sizes = np.bincount(owners)
    crowded = np.flatnonzero(sizes > max_neighbors)
    if not len(crowded):
        return owners, refs, counts
    keep = np.ones(len(owners), dtype=bool)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for owner in crowded.tolist():
        start, end = starts[owner], starts[owner + 1]
        weakest = np.argsort(-counts[start:end], kind="stable")[max(max_neighbors // 2, 1) :]
        keep[start + weakest] = False
    return owners[keep], refs[keep], counts[keep]
