"""Streaming product recommender: implicit matrix factorisation, decayed popularity, co-purchase.

It learns here; it ranks with :class:`~online_models.recommend.ranking.Ranker` and syncs its items
with the group through :class:`~online_models.recommend.sync.ItemSync`.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np
from scipy import sparse

from online_models.customer.activity import DAY
from online_models.recommend.blend import Arm, basket_weight, choose_arm, make_arms, outcomes
from online_models.recommend.content import ContentModel, ContentView
from online_models.recommend.ease import EaseCounts, EaseShare
from online_models.recommend.items import initial_latent, item_hash
from online_models.recommend.ranking import Ranker
from online_models.recommend.sync import ItemSync

__all__ = ["Recommender"]

logger = logging.getLogger(__name__)

# The blend's arms, by name (their weights follow the recommender's).
_ARM_NAMES = tuple(arm.name for arm in make_arms({}))
_NO_HITS = np.zeros((0, len(_ARM_NAMES)), dtype=bool)
# Item rows are allocated in blocks that double when full.
_INITIAL_CAPACITY = 64


class Recommender(Ranker, ItemSync):
    """Top-K product recommendations learned online from implicit feedback.

    Which blend of the signals below is served is learned (:mod:`~online_models.recommend.blend`):
    every sampled basket judges each arm (:meth:`learn_outcomes`), and the group's model
    chooses. In a group (see :meth:`ease_delta`) a fifth signal joins: EASE's item-item
    weights, refitted by the group's model from the ownership counts (:meth:`learn_owned`;
    :mod:`~online_models.recommend.ease`) and applied with :meth:`apply_ease`.

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

    counts_ownership = False
    arm = 1
    _ease_weights: sparse.csr_matrix | None = None

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
        #: The arm of :attr:`arms` served (the hybrid until the group's model chooses).
        self.arm = 1
        self._ease_weights = None  # the group's EASE weights, by row (a sparse n x n)
        self._ease_fit: EaseShare | None = None
        self._ease_unresolved = 0  # weights of the fit naming items unknown when applied
        #: Count ownership for :meth:`ease_delta` (set by the group's worker sync).
        self.counts_ownership = False
        self._owned: list[tuple[int, list[int]]] = []  # (item row, rows owned before)
        self._owned_at = -math.inf
        # The blend's outcomes since the last delta (log weights; blend.outcomes).
        self._trials, self._hits, self._wins = outcomes(np.zeros(0), _NO_HITS)

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

    def learn_owned(self, item: str, owned: Sequence[str], *, time: float) -> None:
        """Count that a customer who owned ``owned`` bought ``item``, new to them (EASE's
        Gram: one owner of ``item``, one pair with each of ``owned``). Counted only for the
        group's model (:attr:`counts_ownership`)."""
        if not self.counts_ownership:
            return
        index, row = self._index, self._row
        # Rows, made hashes a delta at a time: what a customer owned was learned, so known.
        self._owned.append(
            (row(item), [index[o] if o in index else row(o) for o in owned if o != item])
        )
        self._owned_at = max(self._owned_at, time)

    def learn_outcomes(self, times: Sequence[float], hits: np.ndarray) -> None:
        """Judged baskets: at event ``times``, whether each arm's list held the basket's
        first item (``hits``, baskets x arms)."""
        if not len(times):
            return
        weights = np.array([basket_weight(t) for t in times])
        trials, arm_hits, wins = outcomes(weights, hits)
        self._trials = float(np.logaddexp(self._trials, trials))
        self._hits = np.logaddexp(self._hits, arm_hits)
        self._wins = np.logaddexp(self._wins, wins)

    def ease_delta(self) -> EaseCounts:
        """The ownership counts and the blend's outcomes since the last call."""
        hashes = self._hashes
        counts = EaseCounts.of_purchases(
            (
                (int(hashes[item]), hashes[np.asarray(before, dtype=np.intp)])
                for item, before in self._owned
            ),
            time=self._owned_at,
        )
        if math.isfinite(self._trials):
            counts = replace(counts, trials=self._trials, hits=self._hits, wins=self._wins)
        self._owned, self._owned_at = [], -math.inf
        self._trials, self._hits, self._wins = outcomes(np.zeros(0), _NO_HITS)
        return counts

    @property
    def arms(self) -> tuple[Arm, ...]:
        """The arms the blend is learned among, the hybrid's weights as they are now."""
        return make_arms(
            {"factors": self.cf_weight, "popularity": self.popularity_weight,
             "co_purchase": self.co_purchase_weight, "content": self.content_weight}
        )  # fmt: skip

    def apply_ease(self, share: EaseShare) -> None:
        """Rank with the group's EASE fit and serve the arm it chose."""
        self._resolve_ease(share)
        fitted = len(share.refs) > 0
        arms = self.arms
        chosen = 0 <= share.arm < len(arms) and (fitted or not arms[share.arm].uses_ease)
        self.arm = (
            share.arm if chosen else choose_arm(-math.inf, None, None, now=0.0, fitted=fitted)
        )

    def _resolve_ease(self, share: EaseShare) -> None:
        """The fit's weights by row; weights naming items not known here yet are resolved
        again once more items are (:meth:`_ease_scores` asks)."""
        n = len(self._items)
        owners = np.repeat(share.items, np.diff(share.offsets))
        sources, targets = self._rows_of_hashes(owners), self._rows_of_hashes(share.refs)
        known = (sources >= 0) & (targets >= 0)
        self._ease_weights = sparse.csr_matrix(
            (share.weights[known], (sources[known], targets[known])), shape=(n, n)
        )
        self._ease_fit = share
        self._ease_unresolved = int((~known).sum())

    @property
    def arm_hit_rates(self) -> dict[str, float]:
        """Each arm's recent hit rate as the group's model had it at the last fit (NaN
        before outcomes)."""
        fit = self._ease_fit
        if fit is None or fit.hits is None or len(fit.hits) != len(self.arms):
            return {arm.name: math.nan for arm in self.arms}
        rates = np.exp(fit.hits - fit.trials).tolist()
        return {arm.name: rate for arm, rate in zip(self.arms, rates, strict=True)}

    @property
    def ease_items(self) -> int:
        """Items the group's EASE fit gave weights (0 before a fit)."""
        fit = self._ease_fit
        return 0 if fit is None else int((np.diff(fit.offsets) > 0).sum())

    def forget_user(self, user: str) -> bool:
        """Drop the latent factors the model holds for ``user``; True if it held any."""
        return self._users.pop(user, None) is not None

    # --- internals ----------------------------------------------------------------------------

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
