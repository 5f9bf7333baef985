"""Streaming product recommender: implicit matrix factorisation, decayed popularity, co-purchase."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from river import optim, reco, stats, utils

from online_models.activity import DAY

__all__ = ["RankRequest", "RecommendationQuality", "Recommender"]

logger = logging.getLogger(__name__)

# Item rows are allocated in blocks that double when full.
_INITIAL_CAPACITY = 64
# Forward-decay weights are exp((t - t0) / tau); past this exponent t0 moves forward and every
# score is rescaled, far below the float64 overflow at exp(709).
_MAX_EXPONENT = 50.0
# Standard deviation of River's random initial latent factors.
_INIT_SIGMA = 0.1

# Most (users x items) scores ranked at once: 16 MB of float64 per matrix.
_MAX_SCORE_CELLS = 2_000_000

#: What :meth:`Recommender.rank_many` ranks for: a user, items to leave out, recent items.
RankRequest = tuple[str, Collection[str], Sequence[str]]


class Recommender:
    """Top-K product recommendations learned online from implicit feedback.

    Three signals are blended, each scaled to [0, 1] before weighting:

    * collaborative filtering: River ``FunkMF`` trained on positives (target 1) and
      ``negative_samples`` uniformly sampled known items (target 0); its prediction, an
      estimate of "would interact", is clipped to [0, 1]. Users without factors get none.
    * popularity: event-time exponentially decayed sum of event weights, divided by its max.
    * co-purchase: bounded co-bought counters of the ``recent`` items, divided by its max.

    The event ``weight`` acts as a sample weight for the factorisation: the squared-loss
    gradient of the positive step and of its negative steps is multiplied by ``weight``.

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
        seed: int = 42,
    ) -> None:
        if n_factors < 1:
            msg = f"n_factors must be >= 1, got {n_factors}"
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
        self.seed = seed

        self._mf = reco.FunkMF(
            n_factors=n_factors,
            optimizer=optim.SGD(learning_rate),
            loss=optim.losses.Squared(),
            l2=l2,
            initializer=optim.initializers.Normal(mu=0.0, sigma=_INIT_SIGMA, seed=seed),
            seed=seed,
        )
        self._rng = random.Random(seed)  # negative sampling
        self._tau = popularity_halflife_days * DAY / math.log(2.0)  # decay time constant (s)
        self._t0: float | None = None  # forward-decay landmark (event time)
        self._index: dict[str, int] = {}  # item id -> row
        self._items: list[str] = []  # row -> item id
        self._factors = np.zeros((_INITIAL_CAPACITY, n_factors))  # rows synced from i_latents
        self._popularity = np.zeros(_INITIAL_CAPACITY)  # sum of weight * exp((t - t0) / tau)
        self._neighbors: dict[int, dict[int, float]] = {}  # row -> {co-bought row: count}
        # row -> (neighbour rows, counts / strongest) as arrays, until the row's counts change
        self._neighbor_arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_factors={self.n_factors}, "
            f"learning_rate={self.learning_rate}, l2={self.l2}, "
            f"negative_samples={self.negative_samples}, "
            f"popularity_halflife_days={self.popularity_halflife_days}, "
            f"co_purchase_neighbors={self.co_purchase_neighbors}, "
            f"cf_weight={self.cf_weight}, popularity_weight={self.popularity_weight}, "
            f"co_purchase_weight={self.co_purchase_weight}, seed={self.seed})"
        )

    @property
    def n_items(self) -> int:
        """Number of distinct items seen (as a learned item or in a basket)."""
        return len(self._items)

    @property
    def n_users(self) -> int:
        """Number of users that currently have latent factors."""
        return len(self._mf.u_latents)

    def learn_one(
        self,
        user: str,
        item: str,
        *,
        time: float,
        weight: float = 1.0,
        basket: Sequence[str] = (),
    ) -> None:
        """Learn that ``user`` interacted with ``item`` at event time ``time`` (epoch seconds).

        ``weight`` grades the evidence (purchase 1.0, cart add ~0.5, view ~0.2). ``basket``
        holds the user's other recently purchased items; co-purchase counts are updated with
        them only when ``weight >= 1.0``.
        """
        if not (weight > 0 and math.isfinite(weight)):
            msg = f"weight must be a positive finite number, got {weight}"
            raise ValueError(msg)
        if not math.isfinite(time):
            msg = f"time must be finite, got {time}"
            raise ValueError(msg)

        row = self._row(item)
        self._learn_factors(user, row, weight)
        self._add_popularity(row, time, weight)
        if weight >= 1.0 and basket and self.co_purchase_neighbors > 0:
            others = [self._row(other) for other in dict.fromkeys(basket) if other != item]
            for other in others:
                self._count_pair(row, other)
                self._count_pair(other, row)

    def rank(
        self,
        user: str,
        k: int,
        *,
        exclude: Collection[str] = (),
        recent: Sequence[str] = (),
    ) -> list[str]:
        """The ``k`` best items for ``user``, best first, none of them in ``exclude``.

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
            if top > 0:
                scores += ((self.popularity_weight / top) * popularity).astype(np.float32)
        if self.co_purchase_weight > 0:
            self._add_co_purchase_scores(scores, [recent for _, _, recent in requests])
        index = self._index
        excluded = [
            row * n + index[item]
            for row, (_, exclude, _) in enumerate(requests)
            for item in exclude
            if item in index
        ]
        if excluded:
            scores.reshape(-1)[excluded] = -np.inf
        if k < n:
            top_rows = np.argpartition(scores, n - k, axis=1)[:, n - k :]
        else:
            top_rows = np.broadcast_to(np.arange(n), (m, n))
        top_scores = np.take_along_axis(scores, top_rows, axis=1)
        items = self._items
        ranked = []
        for rows, row_scores in zip(top_rows, top_scores, strict=True):
            keep = np.isfinite(row_scores)  # never an excluded item, even to fill the list
            rows, row_scores = rows[keep], row_scores[keep]
            # Best score first; ties broken by row, i.e. by first appearance of the item.
            order = rows[np.lexsort((rows, -row_scores))]
            ranked.append([items[row] for row in order.tolist()])
        return ranked

    def _add_factor_scores(self, scores: np.ndarray, users: list[str], n: int) -> None:
        """Add each user's clipped factor score of every item (none for a stranger)."""
        latents = self._mf.u_latents
        known = [(row, latents[user]) for row, user in enumerate(users) if user in latents]
        if not known:
            return  # ``in``, not ``latents[user]``: never creates factors for a stranger
        rows = [row for row, _ in known]
        users_factors = np.stack([latent for _, latent in known]).astype(np.float32)
        cf = users_factors @ self._factors[:n].astype(np.float32).T
        np.maximum(cf, 0.0, out=cf)
        np.minimum(cf, 1.0, out=cf)
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

    def _neighbor_arrays_of(self, item: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The co-bought rows of ``item`` and their counts over the strongest (cached)."""
        source = self._index.get(item)
        if source is None:
            return None
        arrays = self._neighbor_arrays.get(source)
        if arrays is None:
            neighbors = self._neighbors.get(source)
            if not neighbors:
                return None
            counts = np.fromiter(neighbors.values(), dtype=float, count=len(neighbors))
            arrays = (
                np.fromiter(neighbors.keys(), dtype=np.intp, count=len(neighbors)),
                counts / counts.max(),
            )
            self._neighbor_arrays[source] = arrays
        return arrays

    def forget_user(self, user: str) -> bool:
        """Drop the user's latent factors; True if the user had any."""
        forgotten = self._mf.u_latents.pop(user, None) is not None
        if forgotten:
            logger.debug("forgot the latent factors of a user")
        return forgotten

    def _row(self, item: str) -> int:
        """Row of ``item``, allocating one (with River's initial factors) if new.

        River's ``i_latents[item]`` is a view of the row: the matrix the ranking reads and
        the vectors River's API shows are one and the same memory.
        """
        row = self._index.get(item)
        if row is not None:
            return row
        row = len(self._items)
        if row == len(self._popularity):
            capacity = 2 * row
            factors = np.zeros((capacity, self.n_factors))
            factors[:row] = self._factors
            popularity = np.zeros(capacity)
            popularity[:row] = self._popularity
            self._factors, self._popularity = factors, popularity
            self._link_item_latents()
        self._factors[row] = self._mf.i_latents[item]
        self._mf.i_latents[item] = self._factors[row]
        self._index[item] = row
        self._items.append(item)
        return row

    def _link_item_latents(self) -> None:
        """Point River's item vectors at the rows of the factor matrix (after it moved)."""
        latents = self._mf.i_latents
        for item, row in self._index.items():
            latents[item] = self._factors[row]

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Pickling copies the row views: a restored model links them to its matrix again.
        self.__dict__.update(state)
        self._link_item_latents()

    def _learn_factors(self, user: str, row: int, weight: float) -> None:
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
        self._step(user, rows, weight)

    def _step(self, user: str, rows: list[int], weight: float) -> None:
        """SGD step of ``user`` on the items of ``rows``: the first towards 1 (what the user
        interacted with), the others towards 0 (negative samples), all with sample weight
        ``weight``, as one mini-batch (every gradient taken at the same point).

        With squared loss the gradient is 2 * (pred - y); learning towards
        pred + weight * (target - pred) multiplies it by exactly ``weight``.

        For one row this is River's ``FunkMF.learn_one`` (squared loss, plain SGD, gradient
        clipping) written out on the model's own latent vectors (a test pins the numbers):
        River's per-call dict and optimizer overhead was 40% of a backtest's time, and one
        step per sample another 20% of a worker's.
        """
        mf = self._mf
        user_latent = mf.u_latents[user]  # created first, as River's predict_one does
        item_latents = self._factors[rows]
        gradients = item_latents @ user_latent
        gradients[0] -= 1.0  # the targets: 1, then 0 for each negative sample
        gradients *= 2.0 * weight
        # np.clip's Python-level overhead is most of its cost on a few numbers; ufuncs are not.
        np.maximum(gradients, -mf.clip_gradient, out=gradients)
        np.minimum(gradients, mf.clip_gradient, out=gradients)
        user_step = gradients @ item_latents + (self.l2 * len(rows)) * user_latent
        item_steps = gradients[:, None] * user_latent + self.l2 * item_latents
        user_latent -= self.learning_rate * user_step
        self._factors[rows] = item_latents - self.learning_rate * item_steps

    def _add_popularity(self, row: int, time: float, weight: float) -> None:
        """Forward decay: add weight * exp((time - t0) / tau); order of events is free."""
        if self._t0 is None:
            self._t0 = time
        exponent = (time - self._t0) / self._tau
        if exponent > _MAX_EXPONENT:
            n = len(self._items)
            self._popularity[:n] *= math.exp(-exponent)
            self._t0 = time
            exponent = 0.0
            logger.debug("popularity landmark moved to event time %s", time)
        self._popularity[row] += weight * math.exp(exponent)

    def _count_pair(self, row: int, other: int) -> None:
        """Count ``other`` as co-bought with ``row``, keeping the strongest neighbours.

        A list may grow to twice ``co_purchase_neighbors`` before it is cut back to the
        strongest (oldest first on ties), so the cut costs little per pair.
        """
        neighbors = self._neighbors.get(row)
        if neighbors is None:
            neighbors = self._neighbors[row] = {}
        self._neighbor_arrays.pop(row, None)
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
