"""Ranking a recommender's items for users: its four signals blended into top-k lists."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from online_models.recommend.blend import SIGNALS, Arm
from online_models.recommend.content import ContentModel, ContentView
from online_models.recommend.ease import EaseShare

__all__ = ["NEW_ITEM_MIN_SIMILARITY", "RankRequest", "Ranker", "top_k_columns"]

logger = logging.getLogger(__name__)

#: The least content cosine that earns a new item (no interaction yet) a place in a list.
NEW_ITEM_MIN_SIMILARITY = 0.2
# Most (users x items) scores ranked at once: 16 MB of float64 per matrix.
_MAX_SCORE_CELLS = 2_000_000
_PROBE_RANKINGS = 64

#: What :meth:`Ranker.rank_many` ranks for: a user (an id the model holds factors for,
#: or the user's own latent factors), items to leave out, recent items.
RankRequest = (
    tuple[str | np.ndarray | None, Collection[str], Sequence[str]]
    | tuple[str | np.ndarray | None, Collection[str], Sequence[str], Sequence[str]]
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
        signals = self._signals(requests, n, {s for arm in arms for s in arm.weights})
        similarity = signals.get("content")
        index = self._index
        excluded = [
            row * n + index[item]
            for row, (_, exclude, *_) in enumerate(requests)
            for item in exclude
            if item in index
        ]
        lists = []
        for arm in arms:
            scores = self._blend(signals, arm.weights, (len(requests), n))
            if excluded:
                scores.reshape(-1)[excluded] = -np.inf
            lists.append(self._top_lists(scores, similarity, k, n))
        return lists

    def _signals(self, requests: Sequence[RankRequest], n: int, wanted: set[str]) -> dict[str, Any]:
        """Each wanted signal of every user (matrices) or item (vectors), in [0, 1]; the
        catalogue's ``allowed`` flags always, when there is a catalogue."""
        signals: dict[str, Any] = {}
        m = len(requests)
        recents = [request[2] for request in requests]
        if "factors" in wanted:
            signals["factors"] = self._factor_scores([r[0] for r in requests], m, n)
        if "popularity" in wanted:
            popularity = self._popularity[:n]
            top = popularity.max()
            if top > -np.inf:
                signals["popularity"] = np.exp(popularity - top)
        if "co_purchase" in wanted:
            signals["co_purchase"] = self._co_purchase_scores(recents, m, n)
        if self.content is not None:
            signals["allowed"] = self._content_allowed(n)
            # Content also finds new items their slots, whatever the arm weighs.
            content_wanted = "content" in wanted or self.new_item_slots > 0
            if content_wanted and self.content_weight > 0 and len(self.content):
                signals["content"] = self._content_similarity(recents, n)
        if "ease" in wanted:
            owned = [request[3] if len(request) > 3 else request[2] for request in requests]
            signals["ease"] = self._ease_scores(owned, m, n)
        return signals

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
        self, scores: np.ndarray, similarity: np.ndarray | None, k: int, n: int
    ) -> list[list[str]]:
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

    def _factor_scores(self, users: list[str | np.ndarray | None], m: int, n: int) -> np.ndarray:
        """Each user's clipped factor score of every item (none for a stranger)."""
        scores = np.zeros((m, n), dtype=np.float32)
        known = []
        for row, user in enumerate(users):
            latent = self._users.get(user) if isinstance(user, str) else user
            if latent is not None:
                known.append((row, latent))
        if not known:
            return scores  # ``get``, not ``[]``: never creates factors for a stranger
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
        if len(rows) == m:
            return cf
        scores[rows] = cf
        return scores

    def _co_purchase_scores(self, recents: list[Sequence[str]], m: int, n: int) -> np.ndarray:
        """Each user's co-purchase score: neighbour counts of their recent items (each
        scaled by its strongest), scaled to a maximum of 1.

        All users' counts are summed by one ``bincount`` over (user, item) cells.
        """
        cells: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for row, recent in enumerate(recents):
            for item in dict.fromkeys(recent):
                arrays = self._neighbor_arrays_of(item)
                if arrays is not None:
                    cells.append(arrays[0] + row * n)
                    values.append(arrays[1])
        if not cells:
            return np.zeros((m, n), dtype=np.float32)
        counts = np.bincount(np.concatenate(cells), weights=np.concatenate(values), minlength=m * n)
        co: np.ndarray = counts.reshape(m, n).astype(np.float32)
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
        scores = np.zeros((m, n), dtype=np.float32)
        weights = self._ease_weights
        if weights is None:
            return scores
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
            return scores
        users = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(m, size))
        ease = (users @ weights).toarray()
        strongest = ease.max(axis=1, keepdims=True)
        np.divide(ease, strongest, out=ease, where=strongest > 0)
        np.maximum(ease, 0.0, out=ease)
        scores[:, : min(size, n)] = ease[:, :n]
        return scores

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
