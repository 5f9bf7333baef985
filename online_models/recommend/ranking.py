"""Ranking a recommender's items for users: its four signals blended into top-k lists."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from online_models.recommend.blend import SIGNALS, Arm
from online_models.recommend.candidates import (
    at_rows,
    candidate_rows,
    ease_columns,
    places,
    top_k_columns,
)
from online_models.recommend.content import ContentModel, ContentView
from online_models.recommend.ease import EaseShare

__all__ = [
    "CANDIDATES_FROM_NEW_SHARE",
    "NEW_ITEM_MIN_SIMILARITY",
    "RankRequest",
    "Ranker",
    "top_k_columns",
]

logger = logging.getLogger(__name__)

#: The least content cosine that earns a new item (no interaction yet) a place in a list.
NEW_ITEM_MIN_SIMILARITY = 0.2
# Most (users x items) scores ranked at once: 16 MB of float64 per matrix.
_MAX_SCORE_CELLS = 2_000_000
_PROBE_RANKINGS = 64
#: Rank candidate columns (:mod:`~online_models.recommend.candidates`) instead of every item
#: when at least this share of the rankable items were never sold: a catalogue's.
CANDIDATES_FROM_NEW_SHARE = 0.25

#: What :meth:`Ranker.rank_many` ranks for: a user (an id the model holds factors for,
#: or the user's own latent factors), items to leave out, recent items.
RankRequest = (
    tuple[str | np.ndarray | None, Collection[str], Sequence[str]]
    | tuple[str | np.ndarray | None, Collection[str], Sequence[str], Sequence[str]]
)


class Ranker:
    """The ranking half of :class:`~online_models.recommend.recommender.Recommender`: scores
    every item for a batch of users from the four signals it learned (factors, popularity,
    co-purchase counts, catalogue content) and keeps each user's top ``k``.

    A mixin: the recommender holds the state these methods read, declared here.
    """

    # The recommender's hyperparameters and state that ranking reads (set in its __init__).
    content: ContentModel | None
    cf_weight: float
    popularity_weight: float
    co_purchase_weight: float
    content_weight: float
    new_item_slots: int
    _registered_version: int
    _content_view: tuple[int, int, ContentView, np.ndarray] | None
    _probe: tuple[int, int, np.ndarray | None]
    _users: dict[str, np.ndarray]
    _index: dict[str, int]
    _items: list[str]
    _factors: np.ndarray
    _popularity: np.ndarray
    _group_neighbors: dict[int, tuple[np.ndarray, np.ndarray]]
    _neighbors: dict[int, dict[int, float]]
    _neighbor_arrays: dict[int, tuple[np.ndarray, np.ndarray]]
    _ease_weights: sparse.csr_matrix | None
    _ease_fit: EaseShare | None
    _ease_unresolved: int
    arm: int

    if TYPE_CHECKING:

        @property
        def arms(self) -> tuple[Arm, ...]: ...

        def _resolve_ease(self, share: EaseShare) -> None: ...

        def register(self, items: Iterable[str]) -> None: ...

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
        """:meth:`rank` for many ``(user, exclude, recent)`` requests at once (a fourth
        element, the items the user owns, feeds EASE; ``recent`` does without it).

        One matrix product scores the catalogue for every user and one partition per row
        finds the top ``k``: the per-item work runs in numpy, never in a Python loop, and
        a flush of hundreds of scores ranks them together. The signals are blended by the
        served arm (:mod:`~online_models.recommend.blend`).

        >>> from online_models.recommend.recommender import Recommender
        >>> rec = Recommender(seed=7)
        >>> rec.learn_one("ann", "tea", time=0.0)
        >>> rec.learn_one("ann", "cup", time=60.0, basket=["tea"])
        >>> rec.rank_many([("ann", {"cup"}, ["cup"]), ("bob", (), ())], 2)
        [['tea'], ['cup', 'tea']]
        """
        return self.rank_arms(requests, k, [self.arms[self.arm]])[0]

    def rank_arms(
        self, requests: Sequence[RankRequest], k: int, arms: Sequence[Arm]
    ) -> list[list[list[str]]]:
        """Each of ``arms``' lists for ``requests``: the signals are scored once."""
        content = self.content
        if content is not None and content.version != self._registered_version:
            # New catalogue items get rows (their seeded factors, no popularity) to rank.
            self.register(content.available_items)
            self._registered_version = content.version
        n = len(self._items)
        if k <= 0 or n == 0:
            return [[[] for _ in requests] for _ in arms]
        # Users ranked together share (users x items) score matrices: bounded in size.
        chunk = max(1, _MAX_SCORE_CELLS // (n * max(len(arms), 1)))
        if len(requests) > chunk:
            ranked: list[list[list[str]]] = [[] for _ in arms]
            for start in range(0, len(requests), chunk):
                for mine, part in zip(
                    ranked, self.rank_arms(requests[start : start + chunk], k, arms), strict=True
                ):
                    mine += part
            return ranked
        wanted = {s for arm in arms for s in arm.weights}
        users, rows = self._excluded_rows(requests)
        signals, columns = self._signals(requests, n, wanted, k, (users, rows))
        width = n
        if columns is not None:
            width, rows = len(columns), places(columns, n)[rows]
            users, rows = users[rows >= 0], rows[rows >= 0]
        excluded = users * width + rows
        lists = []
        new_items: dict[int, list[str]] | None = None
        for arm in arms:
            scores = self._blend(signals, arm.weights, (len(requests), width))
            if len(excluded):
                scores.reshape(-1)[excluded] = -np.inf
            top = self._top_lists(scores, k, n, columns)
            similarity = signals.get("content")
            if similarity is not None and self.new_item_slots > 0:
                if new_items is None:  # which scores are -inf is the same for every arm
                    new_items = self._new_items(scores, similarity, signals["new"], k, columns)
                for user, chosen in new_items.items():
                    kept = [item for item in top[user] if item not in chosen]
                    top[user] = kept[: k - len(chosen)] + chosen
            lists.append(top)
        return lists

    def _excluded_rows(self, requests: Sequence[RankRequest]) -> tuple[np.ndarray, np.ndarray]:
        """The (user, item row) pairs of the items each user leaves out."""
        index = self._index
        users, rows = [], []
        for row, (_, exclude, *_) in enumerate(requests):
            for item in exclude:
                at = index.get(item)
                if at is not None:
                    users.append(row)
                    rows.append(at)
        return np.array(users, dtype=np.intp), np.array(rows, dtype=np.intp)

    def _signals(
        self,
        requests: Sequence[RankRequest],
        n: int,
        wanted: set[str],
        k: int,
        excluded: tuple[np.ndarray, np.ndarray],
    ) -> tuple[dict[str, Any], np.ndarray | None]:
        """Each wanted signal of every user (matrices) or item (vectors), in [0, 1]; the
        catalogue's ``allowed`` flags always, when there is a catalogue. Of the candidate
        columns' items (their rows, the second value), or of every item (None)."""
        signals: dict[str, Any] = {}
        m = len(requests)
        recents = [request[2] for request in requests]
        popularity = self._popularity[:n]
        allowed = similarity = None
        if self.content is not None:
            allowed = self._content_allowed(n)
            # Content also finds new items their slots, whatever the arm weighs.
            content_wanted = "content" in wanted or self.new_item_slots > 0
            if content_wanted and self.content_weight > 0 and len(self.content):
                similarity = self._content_similarity(recents, n)
        co_purchase = self._co_purchase_cells(recents) if "co_purchase" in wanted else None
        ease = None
        if "ease" in wanted:
            owned = [request[3] if len(request) > 3 else request[2] for request in requests]
            ease = self._ease_products(owned, m)
        named = np.zeros(n, dtype=bool)  # the rows a user's EASE or co-purchase weights name
        if co_purchase is not None:
            named[co_purchase[1]] = True
        if ease is not None:
            named[ease.indices[ease.data > 0]] = True
        columns = None
        if (~np.isfinite(popularity)).sum() >= CANDIDATES_FROM_NEW_SHARE * n:
            columns = candidate_rows(popularity, allowed, named, similarity, excluded, k)
        width = n if columns is None else len(columns)
        if "factors" in wanted:
            signals["factors"] = self._factor_scores([r[0] for r in requests], m, n, columns)
        if "popularity" in wanted:
            top = popularity.max()
            if top > -np.inf:
                signals["popularity"] = at_rows(np.exp(popularity - top), columns)
        if co_purchase is not None:
            signals["co_purchase"] = self._co_purchase_scores(co_purchase, m, n, columns)
        if allowed is not None:
            signals["allowed"] = at_rows(allowed, columns)
        if similarity is not None:
            signals["content"] = similarity if columns is None else similarity[:, columns]
        if "ease" in wanted:
            signals["ease"] = ease_columns(ease, m, width, n, columns)
        signals["new"] = ~np.isfinite(at_rows(popularity, columns))
        return signals, columns

    def _blend(
        self, signals: dict[str, Any], weights: Mapping[str, float], shape: tuple[int, int]
    ) -> np.ndarray:
        # float32: ranking reads and writes the whole matrix a few times, and single
        # precision halves that traffic; the order it gives is what float64 gives.
        scores = np.zeros(shape, dtype=np.float32)
        for name in SIGNALS:
            weight, signal = weights.get(name, 0.0), signals.get(name)
            if weight > 0 and signal is not None:
                if signal.ndim == 1:
                    scores += (weight * signal).astype(np.float32)
                else:
                    scores += np.float32(weight) * signal
        allowed = signals.get("allowed")
        if allowed is not None and not allowed.all():
            scores[:, ~allowed] = -np.inf
        return scores

    def _top_lists(
        self,
        scores: np.ndarray,
        k: int,
        n: int,
        columns: np.ndarray | None,
    ) -> list[list[str]]:
        # Best score first; ties broken by row, i.e. by first appearance of the item.
        probe = self._popular_head(n, k)
        if probe is not None and columns is not None:
            spots = places(columns, n)[probe]  # any probe ranks alike: the head ranked here
            probe = spots[spots >= 0]
        top_rows = top_k_columns(scores, k, probe)
        finite = np.isfinite(np.take_along_axis(scores, top_rows, axis=1))
        items = self._items
        rows = top_rows if columns is None else columns[top_rows]
        ranked = []
        for picks, keep in zip(rows.tolist(), finite.tolist(), strict=True):
            # Never an excluded item, even to fill the list.
            ranked.append([items[row] for row, kept in zip(picks, keep, strict=True) if kept])
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

    def _new_items(
        self,
        scores: np.ndarray,
        similarity: np.ndarray,
        new: np.ndarray,
        k: int,
        rows: np.ndarray | None,
    ) -> dict[int, list[str]]:
        """Each user's best-matching new items (no interaction yet, allowed, not excluded,
        cosine >= ``NEW_ITEM_MIN_SIMILARITY``), by user, for the last ``new_item_slots``
        places of their list (``new`` flags the columns, ``rows`` their items' rows, None
        when they are every row)."""
        if not new.any():
            return {}
        columns = np.flatnonzero(new)
        near = similarity[:, columns]
        # Only items someone in the flush is similar enough to can win a slot.
        reachable = near.max(axis=0) >= NEW_ITEM_MIN_SIMILARITY
        if not reachable.any():
            return {}
        columns, near = columns[reachable], near[:, reachable]
        candidates = np.where(np.isfinite(scores[:, columns]), near, -np.inf).astype(np.float32)
        slots = min(self.new_item_slots, k, len(columns))
        best = top_k_columns(candidates, slots)
        chosen_ones = np.take_along_axis(candidates, best, axis=1) >= NEW_ITEM_MIN_SIMILARITY
        items = self._items
        if rows is not None:
            columns = rows[columns]
        return {
            user: [
                items[int(columns[pick])]
                for pick, good in zip(best[user], chosen_ones[user], strict=True)
                if good
            ]
            for user in np.flatnonzero(chosen_ones.any(axis=1)).tolist()
        }

    def _factor_scores(
        self, users: list[str | np.ndarray | None], m: int, n: int, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """Each user's clipped factor score of every item (of ``rows``, when given; none for
        a stranger)."""
        factors = self._factors[:n] if rows is None else self._factors[rows]
        popularity = self._popularity[:n] if rows is None else self._popularity[rows]
        scores = np.zeros((m, len(factors)), dtype=np.float32)
        known = []
        for row, user in enumerate(users):
            latent = self._users.get(user) if isinstance(user, str) else user
            if latent is not None:
                known.append((row, latent))
        if not known:
            return scores  # ``get``, not ``[]``: never creates factors for a stranger
        at = [row for row, _ in known]
        users_factors = np.stack([latent for _, latent in known]).astype(np.float32)
        cf = users_factors @ factors.astype(np.float32).T
        np.maximum(cf, 0.0, out=cf)
        np.minimum(cf, 1.0, out=cf)
        # An item nobody interacted with (a catalogue item not sold yet) has only its random
        # starting factors: no evidence, so no factor score.
        unseen = ~np.isfinite(popularity)
        if unseen.any():
            cf[:, unseen] = 0.0
        if len(at) == m:
            return cf
        scores[at] = cf
        return scores

    def _co_purchase_cells(
        self, recents: list[Sequence[str]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Each user's (user, neighbour row, count over the strongest) of their recent items'
        co-purchase neighbours, in the order the counts add up; None when there are none."""
        users: list[np.ndarray] = []
        cells: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for row, recent in enumerate(recents):
            for item in dict.fromkeys(recent):
                arrays = self._neighbor_arrays_of(item)
                if arrays is not None:
                    users.append(np.full(len(arrays[0]), row, dtype=np.intp))
                    cells.append(arrays[0])
                    values.append(arrays[1])
        if not cells:
            return None
        return np.concatenate(users), np.concatenate(cells), np.concatenate(values)

    def _co_purchase_scores(
        self,
        cells: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
        m: int,
        n: int,
        columns: np.ndarray | None = None,
    ) -> np.ndarray:
        """Each user's co-purchase score: neighbour counts of their recent items (each
        scaled by its strongest), scaled to a maximum of 1 (of ``columns``' items, which
        hold every neighbour, when given).

        All users' counts are summed by one ``bincount`` over (user, item) cells.
        """
        width = n if columns is None else len(columns)
        if cells is None:
            return np.zeros((m, width), dtype=np.float32)
        users, rows, values = cells
        if columns is not None:
            rows = places(columns, n)[rows]
        counts = np.bincount(users * width + rows, weights=values, minlength=m * width)
        co: np.ndarray = counts.reshape(m, width).astype(np.float32)
        strongest = co.max(axis=1, keepdims=True)
        np.divide(co, strongest, out=co, where=strongest > 0)
        return co

    def _content_allowed(self, n: int) -> np.ndarray:
        """Which of the first ``n`` rows the catalogue allows (its view kept per version)."""
        content = self.content
        assert content is not None
        view = self._content_view
        if view is None or view[0] != content.version or view[1] != n:
            items = self._items[:n]
            view = (content.version, n, content.view(items), content.allowed(items))
            self._content_view = view
        return view[3]

    def _content_similarity(self, recents: list[Sequence[str]], n: int) -> np.ndarray:
        """Each user's content cosine with every item (their recent items' profile)."""
        content = self.content
        assert content is not None
        self._content_allowed(n)
        assert self._content_view is not None
        return content.scores_against(recents, self._content_view[2])

    def _ease_scores(self, owned: list[Sequence[str]], m: int, n: int) -> np.ndarray:
        """Each user's EASE score (the weights of the items they own, summed), scaled to a
        maximum of 1; zero for items the fit does not know."""
        return ease_columns(self._ease_products(owned, m), m, n, n, None)

    def _ease_products(self, owned: list[Sequence[str]], m: int) -> sparse.csr_matrix | None:
        """Each user's EASE weights (of the items they own, summed; users x the fit's rows),
        sparse; None before a fit or when nobody owns an item it knows."""
        weights = self._ease_weights
        if weights is None:
            return None
        fit = self._ease_fit
        if self._ease_unresolved and fit is not None and weights.shape[0] < len(self._items):
            self._resolve_ease(fit)  # items named by the fit arrived since it was applied
            weights = self._ease_weights
            assert weights is not None
        size = weights.shape[0]
        index = self._index
        rows, cols = [], []
        for row, items in enumerate(owned):
            for item in dict.fromkeys(items):
                at = index.get(item)
                if at is not None and at < size:
                    rows.append(row)
                    cols.append(at)
        if not rows:
            return None
        users = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(m, size))
        products: sparse.csr_matrix = users @ weights
        return products

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
