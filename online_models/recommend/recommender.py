"""Streaming product recommender: implicit matrix factorisation, decayed popularity, co-purchase."""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from river import stats, utils

from online_models.customer.activity import DAY
from online_models.recommend.content import ContentModel, ContentView

__all__ = [
    "ItemShare",
    "RankRequest",
    "RecommendationQuality",
    "Recommender",
    "initial_latent",
    "item_hash",
    "merge_items",
]

logger = logging.getLogger(__name__)

# Item rows are allocated in blocks that double when full.
_INITIAL_CAPACITY = 64
# Standard deviation of the initial latent factors (River's FunkMF initialiser's).
_INIT_SIGMA = 0.1
#: The least content cosine that earns a new item (no interaction yet) a place in a list.
NEW_ITEM_MIN_SIMILARITY = 0.2
# Most (users x items) scores ranked at once: 16 MB of float64 per matrix.
_MAX_SCORE_CELLS = 2_000_000
_PROBE_RANKINGS = 64

#: A bucket of the group's model for :meth:`Recommender.apply`: the group's share, this
#: worker's pending deltas of it, and the positions that changed (None: all of them).
BucketUpdate = tuple["ItemShare", Sequence["ItemShare"], np.ndarray | None]

#: What :meth:`Recommender.rank_many` ranks for: a user (an id the model holds factors for,
#: or the user's own latent factors), items to leave out, recent items.
RankRequest = tuple[str | np.ndarray | None, Collection[str], Sequence[str]]


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
    order = np.lexsort((refs, owners))
    owners, refs, counts = owners[order], refs[order], counts[order]
    first = np.ones(len(owners), dtype=bool)
    first[1:] = (owners[1:] != owners[:-1]) | (refs[1:] != refs[:-1])
    starts = np.flatnonzero(first)
    owners, refs, counts = owners[starts], refs[starts], np.add.reduceat(counts, starts)
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


class Recommender:
    """Top-K product recommendations learned online from implicit feedback.

    Three signals are blended, each scaled to [0, 1] before weighting, and a fourth when the
    model has a catalogue (:attr:`content`):

    * collaborative filtering: matrix factorisation (River's ``FunkMF`` step) trained on
      positives (target 1) and ``negative_samples`` uniformly sampled known items (target 0);
      its prediction, an estimate of "would interact", is clipped to [0, 1]. Users without
      factors get none.
    * popularity: event-time exponentially decayed sum of event weights, divided by its max.
    * co-purchase: bounded co-bought counters of the ``recent`` items, divided by its max.
    * content: the cosine of the ``recent`` items' content profile with each catalogue item
      (:class:`~online_models.recommend.content.ContentModel`); the catalogue's items are rankable
      from the moment they are added, and what it does not allow is never recommended.
      Items nobody interacted with yet have no factor, popularity or co-purchase score, so
      they would rarely outrank known ones: the last ``new_item_slots`` places of a list go
      to the new items whose content matches the user best (cosine at least
      ``NEW_ITEM_MIN_SIMILARITY``), when there are such items.

    The event ``weight`` acts as a sample weight for the factorisation: the squared-loss
    gradient of the positive step and of its negative steps is multiplied by ``weight``.

    A user's latent factors belong to the user: the scorer keeps them in the customer's state
    and passes them in (``latent``); given only an id, the model keeps them itself, as
    River's ``FunkMF`` does. Items are the model's, and in a group of workers (``shared``)
    they are the group's: :meth:`delta` says what this worker learned about them, bucket by
    bucket (``buckets`` by :func:`item_hash`), and :meth:`apply` takes the group's buckets.

    >>> rec = Recommender(seed=7)
    >>> rec.learn_one("ann", "tea", time=0.0)
    >>> rec.learn_one("ann", "cup", time=60.0, basket=["tea"])
    >>> rec.learn_one("bob", "tea", time=120.0)
    >>> rec.rank("new-customer", 2)
    ['tea', 'cup']
    >>> rec.rank("new-customer", 5, recent=["tea"], exclude={"tea"})
    ['cup']
    >>> rec.n_items, rec.n_users
    (2, 2)
    """

    def __init__(
        self,
        n_factors: int = 16,
        learning_rate: float = 0.05,
        l2: float = 0.001,
        negative_samples: int = 3,
        popularity_halflife_days: float = 30.0,
        co_purchase_neighbors: int = 50,
        cf_weight: float = 2.0,
        popularity_weight: float = 0.3,
        co_purchase_weight: float = 4.0,
        content_weight: float = 4.0,
        new_item_slots: int = 1,
        seed: int = 42,
        buckets: int = 64,
    ) -> None:
        if n_factors < 1 or buckets < 1:
            msg = f"n_factors and buckets must be >= 1, got {n_factors} and {buckets}"
            raise ValueError(msg)
        if not learning_rate > 0:
            msg = f"learning_rate must be > 0, got {learning_rate}"
            raise ValueError(msg)
        if not popularity_halflife_days > 0:
            msg = f"popularity_halflife_days must be > 0, got {popularity_halflife_days}"
            raise ValueError(msg)
        for name, value in (
            ("l2", l2),
            ("negative_samples", negative_samples),
            ("co_purchase_neighbors", co_purchase_neighbors),
            ("cf_weight", cf_weight),
            ("popularity_weight", popularity_weight),
            ("co_purchase_weight", co_purchase_weight),
            ("content_weight", content_weight),
            ("new_item_slots", new_item_slots),
        ):
            if not value >= 0:
                msg = f"{name} must be >= 0, got {value}"
                raise ValueError(msg)

        self.n_factors = n_factors
        self.learning_rate = learning_rate
        self.l2 = l2
        self.negative_samples = negative_samples
        self.popularity_halflife_days = popularity_halflife_days
        self.co_purchase_neighbors = co_purchase_neighbors
        self.cf_weight = cf_weight
        self.popularity_weight = popularity_weight
        self.co_purchase_weight = co_purchase_weight
        self.content_weight = content_weight
        self.new_item_slots = new_item_slots
        self.seed = seed
        self.buckets = buckets
        #: In a group: keep what was learned since the last delta, for :meth:`delta`.
        self.shared = False
        #: The catalogue's content model, when there is a catalogue (see :meth:`attach`).
        self.content: ContentModel | None = None
        # The catalogue's vectors and allowed flags by row, and the (version, rows) they are of.
        self._content_view: tuple[int, int, ContentView, np.ndarray] | None = None
        self._registered_version = -1  # the catalogue version whose items have rows
        # The popular head ranking probes (see top_k_columns): (rows, rankings left, probe).
        self._probe: tuple[int, int, np.ndarray | None] = (0, 0, None)
        # River's FunkMF settings of the factor step: squared loss, plain SGD, clipping.
        self.clip_gradient = 1e12
        self._users: dict[str, np.ndarray] = {}  # factors of users given by id only
        self._rng = random.Random(seed)  # negative sampling
        self._tau = popularity_halflife_days * DAY / math.log(2.0)  # decay time constant (s)
        self._index: dict[str, int] = {}  # item id -> row
        self._items: list[str] = []  # row -> item id
        self._hashes = np.zeros(_INITIAL_CAPACITY, dtype=np.int64)  # row -> item_hash
        self._factors = np.zeros((_INITIAL_CAPACITY, n_factors))
        self._popularity = np.full(_INITIAL_CAPACITY, -np.inf)  # log popularity
        # Co-purchase counts: the group's (co-bought rows and counts, by row) and this
        # worker's not merged yet (dicts, by row).
        self._group_neighbors: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._neighbors: dict[int, dict[int, float]] = {}
        # Group co-purchase counts naming items not known here yet: hash -> {row: count},
        # and the hashes each row waits for.
        self._dangling: dict[int, dict[int, float]] = {}
        self._dangling_of: dict[int, set[int]] = {}
        # row -> (neighbour rows, counts / strongest) as arrays, until the row's counts change
        self._neighbor_arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # What the group has not got yet (shared only).
        self._unsent_factors = np.zeros((_INITIAL_CAPACITY, n_factors))
        self._unsent_popularity = np.full(_INITIAL_CAPACITY, -np.inf)
        self._unsent_pairs: dict[int, dict[int, float]] = {}
        self._touched: set[int] = set()
        self._by_hash: tuple[np.ndarray, np.ndarray] | None = None  # sorted hashes, rows

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_factors={self.n_factors}, "
            f"learning_rate={self.learning_rate}, l2={self.l2}, "
            f"negative_samples={self.negative_samples}, "
            f"popularity_halflife_days={self.popularity_halflife_days}, "
            f"co_purchase_neighbors={self.co_purchase_neighbors}, "
            f"cf_weight={self.cf_weight}, popularity_weight={self.popularity_weight}, "
            f"co_purchase_weight={self.co_purchase_weight}, "
            f"content_weight={self.content_weight}, "
            f"new_item_slots={self.new_item_slots}, seed={self.seed}, "
            f"buckets={self.buckets})"
        )

    @property
    def n_items(self) -> int:
        """Number of distinct items seen (as a learned item, in a basket, or from the group)."""
        return len(self._items)

    @property
    def n_users(self) -> int:
        """Number of users whose latent factors the model itself holds (given by id)."""
        return len(self._users)

    def user_latent(self, user: str) -> np.ndarray:
        """The latent factors a new user starts with (a fresh array: the caller keeps it)."""
        return initial_latent(user, self.n_factors, kind="user")

    def register(self, items: Iterable[str]) -> None:
        """Give every item a row (those new start from their seeded factors)."""
        for item in items:
            if item not in self._index:
                self._row(item)

    def attach(self, content: ContentModel) -> None:
        """Rank with ``content``, a catalogue: its items become rankable as they are added."""
        self.content = content
        self._content_view = None
        self._registered_version = -1

    def recommendable(self, items: Iterable[str]) -> bool:
        """Whether every one of ``items`` may still be recommended (none withdrawn from the
        catalogue since it was ranked)."""
        return self.content is None or self.content.allows_all(items)

    def bucket_of(self, item: str) -> int:
        """The bucket of the group's model that holds ``item``."""
        return item_hash(item) % self.buckets

    def learn_one(
        self,
        user: str,
        item: str,
        *,
        time: float,
        weight: float = 1.0,
        basket: Sequence[str] = (),
        latent: np.ndarray | None = None,
    ) -> None:
        """Learn that ``user`` interacted with ``item`` at event time ``time`` (epoch seconds).

        ``weight`` grades the evidence (purchase 1.0, cart add ~0.5, view ~0.2). ``basket``
        holds the user's other recently purchased items; co-purchase counts are updated with
        them only when ``weight >= 1.0``. ``latent`` are the user's factors, updated in place;
        without them the model keeps the user's factors itself.
        """
        if not (weight > 0 and math.isfinite(weight)):
            msg = f"weight must be a positive finite number, got {weight}"
            raise ValueError(msg)
        if not math.isfinite(time):
            msg = f"time must be finite, got {time}"
            raise ValueError(msg)

        if latent is None:
            latent = self._users.get(user)
            if latent is None:
                latent = self._users[user] = self.user_latent(user)
        row = self._row(item)
        self._learn_factors(latent, row, weight)
        self._add_popularity(row, time, weight)
        if weight >= 1.0 and basket and self.co_purchase_neighbors > 0:
            others = [self._row(other) for other in dict.fromkeys(basket) if other != item]
            for other in others:
                self._count_pair(row, other)
                self._count_pair(other, row)

    def rank(
        self,
        user: str | np.ndarray | None,
        k: int,
        *,
        exclude: Collection[str] = (),
        recent: Sequence[str] = (),
    ) -> list[str]:
        """The ``k`` best items for ``user`` (an id, or the user's latent factors), best
        first, none of them in ``exclude``.

        ``recent`` are items the user just bought or looked at: their co-purchase
        neighbours are boosted, which is what personalises the list of an unknown user.
        """
        return self.rank_many([(user, exclude, recent)], k)[0]

    def rank_many(self, requests: Sequence[RankRequest], k: int) -> list[list[str]]:
        """:meth:`rank` for many ``(user, exclude, recent)`` requests at once.

        One matrix product scores the catalogue for every user and one partition per row
        finds the top ``k``: the per-item work runs in numpy, never in a Python loop, and
        a flush of hundreds of scores ranks them together.

        >>> rec = Recommender(seed=7)
        >>> rec.learn_one("ann", "tea", time=0.0)
        >>> rec.learn_one("ann", "cup", time=60.0, basket=["tea"])
        >>> rec.rank_many([("ann", {"cup"}, ["cup"]), ("bob", (), ())], 2)
        [['tea'], ['cup', 'tea']]
        """
        content = self.content
        if content is not None and content.version != self._registered_version:
            # New catalogue items get rows (their seeded factors, no popularity) to rank.
            self.register(content.available_items)
            self._registered_version = content.version
        n = len(self._items)
        if k <= 0 or n == 0:
            return [[] for _ in requests]
        # Users ranked together share (users x items) score matrices: bounded in size.
        chunk = max(1, _MAX_SCORE_CELLS // n)
        if len(requests) > chunk:
            ranked = []
            for start in range(0, len(requests), chunk):
                ranked += self.rank_many(requests[start : start + chunk], k)
            return ranked
        m = len(requests)
        # float32: ranking reads and writes the whole matrix a few times, and single
        # precision halves that traffic; the order it gives is what float64 gives.
        scores = np.zeros((m, n), dtype=np.float32)
        if self.cf_weight > 0:
            self._add_factor_scores(scores, [user for user, _, _ in requests], n)
        if self.popularity_weight > 0:
            popularity = self._popularity[:n]
            top = popularity.max()
            if top > -np.inf:
                relative = np.exp(popularity - top)
                scores += (self.popularity_weight * relative).astype(np.float32)
        if self.co_purchase_weight > 0:
            self._add_co_purchase_scores(scores, [recent for _, _, recent in requests])
        similarity = None
        if self.content is not None:
            similarity = self._add_content_scores(scores, [recent for _, _, recent in requests])
        index = self._index
        excluded = [
            row * n + index[item]
            for row, (_, exclude, _) in enumerate(requests)
            for item in exclude
            if item in index
        ]
        if excluded:
            scores.reshape(-1)[excluded] = -np.inf
        # Best score first; ties broken by row, i.e. by first appearance of the item.
        top_rows = top_k_columns(scores, k, self._popular_head(n, k))
        finite = np.isfinite(np.take_along_axis(scores, top_rows, axis=1))
        items = self._items
        ranked = []
        for rows, keep in zip(top_rows.tolist(), finite.tolist(), strict=True):
            # Never an excluded item, even to fill the list.
            ranked.append([items[row] for row, kept in zip(rows, keep, strict=True) if kept])
        if similarity is not None and self.new_item_slots > 0:
            self._give_new_items_slots(ranked, scores, similarity, k)
        return ranked

    def _popular_head(self, n: int, k: int) -> np.ndarray | None:
        """The most popular rows, a probe for :func:`top_k_columns` (None when few are).

        Found again every ``_PROBE_RANKINGS`` rankings: any probe gives the same ranking, a
        popular one just makes it faster, and the head moves slowly.
        """
        rows, left, probe = getattr(self, "_probe", (0, 0, None))
        if rows == n and left > 0 and (probe is None or len(probe) >= k):
            self._probe = (n, left - 1, probe)
            return probe
        size = max(4 * k, 64)
        popularity = self._popularity[:n]
        probe = None
        if size < n and np.isfinite(popularity).sum() >= size:
            probe = np.argpartition(popularity, n - size)[n - size :]
        self._probe = (n, _PROBE_RANKINGS, probe)
        return probe

    def _give_new_items_slots(
        self, ranked: list[list[str]], scores: np.ndarray, similarity: np.ndarray, k: int
    ) -> None:
        """Put each user's best-matching new items (no interaction yet, allowed, not
        excluded, cosine >= ``NEW_ITEM_MIN_SIMILARITY``) in the last ``new_item_slots``
        places of their list, in place."""
        n = scores.shape[1]
        new = ~np.isfinite(self._popularity[:n])
        if not new.any():
            return
        columns = np.flatnonzero(new)
        near = similarity[:, columns]
        # Only items someone in the flush is similar enough to can win a slot.
        reachable = near.max(axis=0) >= NEW_ITEM_MIN_SIMILARITY
        if not reachable.any():
            return
        columns, near = columns[reachable], near[:, reachable]
        candidates = np.where(np.isfinite(scores[:, columns]), near, -np.inf).astype(np.float32)
        slots = min(self.new_item_slots, k, len(columns))
        best = top_k_columns(candidates, slots)
        chosen_ones = np.take_along_axis(candidates, best, axis=1) >= NEW_ITEM_MIN_SIMILARITY
        items = self._items
        for user in np.flatnonzero(chosen_ones.any(axis=1)).tolist():
            chosen = [
                items[int(columns[pick])]
                for pick, good in zip(best[user], chosen_ones[user], strict=True)
                if good
            ]
            ranking = ranked[user]
            kept = [item for item in ranking if item not in chosen]
            ranking[:] = kept[: k - len(chosen)] + chosen

    def forget_user(self, user: str) -> bool:
        """Drop the latent factors the model holds for ``user``; True if it held any."""
        return self._users.pop(user, None) is not None

    # --- the group's model ------------------------------------------------------------------

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
        refs = np.concatenate([group.refs[a:b] for group, a, b in slices])
        found = np.minimum(np.searchsorted(hashes, refs), max(len(hashes) - 1, 0))
        resolved = np.where(hashes[found] == refs, rows_by_hash[found], -1)
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

    # --- internals ----------------------------------------------------------------------------

    def _hash_index(self) -> tuple[np.ndarray, np.ndarray]:
        """The item hashes sorted, and the row of each: for resolving co-purchase refs."""
        n = len(self._items)
        if self._by_hash is None or len(self._by_hash[0]) != n:
            order = np.argsort(self._hashes[:n], kind="stable")
            self._by_hash = (self._hashes[:n][order], order)
        return self._by_hash

    def _add_factor_scores(
        self, scores: np.ndarray, users: list[str | np.ndarray | None], n: int
    ) -> None:
        """Add each user's clipped factor score of every item (none for a stranger)."""
        known = []
        for row, user in enumerate(users):
            latent = self._users.get(user) if isinstance(user, str) else user
            if latent is not None:
                known.append((row, latent))
        if not known:
            return  # ``get``, not ``[]``: never creates factors for a stranger
        rows = [row for row, _ in known]
        users_factors = np.stack([latent for _, latent in known]).astype(np.float32)
        cf = users_factors @ self._factors[:n].astype(np.float32).T
        np.maximum(cf, 0.0, out=cf)
        np.minimum(cf, 1.0, out=cf)
        # An item nobody interacted with (a catalogue item not sold yet) has only its random
        # starting factors: no evidence, so no factor score.
        unseen = ~np.isfinite(self._popularity[:n])
        if unseen.any():
            cf[:, unseen] = 0.0
        cf *= self.cf_weight
        if len(rows) == len(users):
            scores += cf
        else:
            scores[rows] += cf

    def _add_co_purchase_scores(self, scores: np.ndarray, recents: list[Sequence[str]]) -> None:
        """Add each user's co-purchase score: neighbour counts of their recent items (each
        scaled by its strongest), scaled to a maximum of ``co_purchase_weight``.

        All users' counts are summed by one ``bincount`` over (user, item) cells.
        """
        m, n = scores.shape
        cells: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for row, recent in enumerate(recents):
            for item in dict.fromkeys(recent):
                arrays = self._neighbor_arrays_of(item)
                if arrays is not None:
                    cells.append(arrays[0] + row * n)
                    values.append(arrays[1])
        if not cells:
            return
        counts = np.bincount(np.concatenate(cells), weights=np.concatenate(values), minlength=m * n)
        co: np.ndarray = counts.reshape(m, n).astype(np.float32)
        strongest = co.max(axis=1, keepdims=True)
        np.divide(co, strongest, out=co, where=strongest > 0)
        scores += self.co_purchase_weight * co

    def _add_content_scores(
        self, scores: np.ndarray, recents: list[Sequence[str]]
    ) -> np.ndarray | None:
        """Add each user's content score, and rule out what the catalogue does not allow;
        returns the users' cosines with every item (None without a content signal)."""
        content = self.content
        assert content is not None
        n = scores.shape[1]
        view = self._content_view
        if view is None or view[0] != content.version or view[1] != n:
            items = self._items[:n]
            view = (content.version, n, content.view(items), content.allowed(items))
            self._content_view = view
        _, _, items_view, allowed = view
        similarity = None
        if self.content_weight > 0 and len(content):
            similarity = content.scores_against(recents, items_view)
            scores += self.content_weight * similarity
        if not allowed.all():
            scores[:, ~allowed] = -np.inf
        return similarity

    def _neighbor_arrays_of(self, item: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The co-bought rows of ``item`` and their counts over the strongest (cached): the
        group's counts plus this worker's since."""
        source = self._index.get(item)
        if source is None:
            return None
        arrays = self._neighbor_arrays.get(source)
        if arrays is None:
            rows, counts = self._group_neighbors_of(source)
            local = self._neighbors.get(source)
            if local:
                merged = dict(zip(rows.tolist(), counts.tolist(), strict=True))
                for other, count in local.items():
                    merged[other] = merged.get(other, 0.0) + count
                rows = np.fromiter(merged.keys(), dtype=np.intp, count=len(merged))
                counts = np.fromiter(merged.values(), dtype=float, count=len(merged))
            if not len(rows):
                return None
            arrays = (rows.astype(np.intp), counts / counts.max())
            self._neighbor_arrays[source] = arrays
        return arrays

    def _group_neighbors_of(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """The group's co-bought rows of the item at ``row`` and their counts."""
        return self._group_neighbors.get(row, (np.zeros(0, np.intp), np.zeros(0)))

    def _row(self, item: str) -> int:
        """Row of ``item``, allocating one (with the item's initial factors) if new."""
        row = self._index.get(item)
        if row is not None:
            return row
        row = len(self._items)
        if row == len(self._popularity):
            self._grow(2 * row)
        self._factors[row] = initial_latent(item, self.n_factors)
        hashed = self._hashes[row] = item_hash(item)
        self._index[item] = row
        self._items.append(item)
        for source, count in self._dangling.pop(hashed, {}).items():
            self._dangling_of[source].discard(hashed)
            rows, counts = self._group_neighbors.get(source, (np.zeros(0, np.intp), np.zeros(0)))
            self._group_neighbors[source] = (np.append(rows, row), np.append(counts, count))
            self._neighbor_arrays.pop(source, None)
        return row

    def _dangle(self, row: int, refs: np.ndarray, counts: np.ndarray) -> None:
        """Remember the group's counts of ``row`` naming items not known here yet (they are
        linked when the items arrive), instead of the ones remembered before."""
        for ref in self._dangling_of.pop(row, ()):
            self._dangling.get(ref, {}).pop(row, None)
        if len(refs):
            self._dangling_of[row] = set(refs.tolist())
            for ref, count in zip(refs.tolist(), counts.tolist(), strict=True):
                self._dangling.setdefault(ref, {})[row] = count

    def _grow(self, capacity: int) -> None:
        row = len(self._items)
        for name, fill in (
            ("_factors", 0.0),
            ("_unsent_factors", 0.0),
            ("_popularity", -np.inf),
            ("_unsent_popularity", -np.inf),
            ("_hashes", 0),
        ):
            old = getattr(self, name)
            new = np.full((capacity, *old.shape[1:]), fill, dtype=old.dtype)
            new[:row] = old[:row]
            setattr(self, name, new)

    def _learn_factors(self, latent: np.ndarray, row: int, weight: float) -> None:
        """One weighted positive step and ``negative_samples`` weighted negative steps."""
        rows = [row]
        others = len(self._items) - 1
        if others > 0:
            draw = self._rng.random
            for _ in range(self.negative_samples):
                negative = int(draw() * others)
                if negative >= row:  # uniform over the other known items
                    negative += 1
                rows.append(negative)
        self._step(latent, rows, weight)

    def _step(self, latent: np.ndarray, rows: list[int], weight: float) -> None:
        """SGD step of a user (``latent``) on the items of ``rows``: the first towards 1 (what
        the user interacted with), the others towards 0 (negative samples), all with sample
        weight ``weight``, as one mini-batch (every gradient taken at the same point).

        With squared loss the gradient is 2 * (pred - y); learning towards
        pred + weight * (target - pred) multiplies it by exactly ``weight``.

        For one row this is River's ``FunkMF.learn_one`` (squared loss, plain SGD, gradient
        clipping) written out on the model's own latent vectors (a test pins the numbers):
        River's per-call dict and optimizer overhead was 40% of a backtest's time, and one
        step per sample another 20% of a worker's.
        """
        item_latents = self._factors[rows]
        gradients = item_latents @ latent
        gradients[0] -= 1.0  # the targets: 1, then 0 for each negative sample
        gradients *= 2.0 * weight
        # np.clip's Python-level overhead is most of its cost on a few numbers; ufuncs are not.
        np.maximum(gradients, -self.clip_gradient, out=gradients)
        np.minimum(gradients, self.clip_gradient, out=gradients)
        user_step = gradients @ item_latents + (self.l2 * len(rows)) * latent
        item_steps = gradients[:, None] * latent + self.l2 * item_latents
        latent -= self.learning_rate * user_step
        self._factors[rows] = item_latents - self.learning_rate * item_steps
        if self.shared:
            # With a row drawn twice the last write wins, as in the factor matrix itself.
            self._unsent_factors[rows] += self._factors[rows] - item_latents
            self._touched.update(rows)

    def _add_popularity(self, row: int, time: float, weight: float) -> None:
        """Forward decay in log space: add log(weight) + time / tau (order of events is free,
        and no landmark: the log of a sum of exponentials never overflows)."""
        contribution = math.log(weight) + time / self._tau
        self._popularity[row] = np.logaddexp(self._popularity[row], contribution)
        if self.shared:
            self._unsent_popularity[row] = np.logaddexp(self._unsent_popularity[row], contribution)
            self._touched.add(row)

    def _count_pair(self, row: int, other: int) -> None:
        """Count ``other`` as co-bought with ``row``, keeping the strongest neighbours.

        A list may grow to twice ``co_purchase_neighbors`` before it is cut back to the
        strongest (oldest first on ties), so the cut costs little per pair.
        """
        neighbors = self._neighbors.get(row)
        if neighbors is None:
            neighbors = self._neighbors[row] = {}
        self._neighbor_arrays.pop(row, None)
        if self.shared:
            unsent = self._unsent_pairs.setdefault(row, {})
            unsent[other] = unsent.get(other, 0.0) + 1.0
        if other in neighbors:
            neighbors[other] += 1.0
            return
        if len(neighbors) >= 2 * self.co_purchase_neighbors:
            keep = sorted(neighbors.items(), key=lambda kv: kv[1], reverse=True)
            kept = dict(keep[: self.co_purchase_neighbors - 1])
            neighbors.clear()
            neighbors.update(kept)
        neighbors[other] = 1.0


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
