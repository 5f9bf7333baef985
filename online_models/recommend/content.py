"""Content-based item similarity from a product catalogue: hashed text and attribute features."""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

__all__ = ["ContentModel", "ContentView", "item_features"]

logger = logging.getLogger(__name__)

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Weight of each kind of feature in an item's vector, before its IDF.
_NAME_WORD, _NAME_PAIR, _DESCRIPTION_WORD = 1.0, 0.5, 0.4
_CATEGORY, _BRAND, _PRICE_BAND, _PROPERTY = 1.0, 1.0, 0.3, 0.5
_MAX_DESCRIPTION_WORDS = 200


def _words(text: str | None) -> list[str]:
    """Lower-cased words of two characters or more, a plural 's' taken off."""
    if not text:
        return []
    words = []
    for word in _WORD.findall(text.lower()):
        if len(word) < 2:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        words.append(word)
    return words


def item_features(item: Mapping[str, Any]) -> dict[str, float]:
    """The weighted features of a catalogue item (its JSON fields as a dict).

    Name words and pairs of adjacent name words, description words, every level of the
    category path (``home``, ``home/lighting``), the brand, a price band (powers of two) and
    each scalar property as ``key=value``.

    >>> sorted(item_features({"name": "Red Lamps", "category": "home/lighting", "price": 20}))
    ['cat:home', 'cat:home/lighting', 'pair:red lamp', 'price:4', 'word:lamp', 'word:red']
    """
    features: dict[str, float] = {}

    def add(feature: str, weight: float) -> None:
        features[feature] = max(features.get(feature, 0.0), weight)

    name = _words(item.get("name"))
    for word in name:
        add(f"word:{word}", _NAME_WORD)
    for first, second in itertools.pairwise(name):
        add(f"pair:{first} {second}", _NAME_PAIR)
    for word in _words(item.get("description"))[:_MAX_DESCRIPTION_WORDS]:
        add(f"word:{word}", _DESCRIPTION_WORD)
    category = item.get("category")
    if category:
        levels = [level.strip().lower() for level in str(category).split("/") if level.strip()]
        for depth in range(1, len(levels) + 1):
            add("cat:" + "/".join(levels[:depth]), _CATEGORY)
    brand = item.get("brand")
    if brand:
        add(f"brand:{str(brand).strip().lower()}", _BRAND)
    price = item.get("price")
    if isinstance(price, int | float) and math.isfinite(price) and price >= 0:
        add(f"price:{int(math.log2(price + 1.0))}", _PRICE_BAND)
    for key, value in (item.get("properties") or {}).items():
        if isinstance(value, str | int | float | bool):
            add(f"prop:{str(key).lower()}={str(value).strip().lower()}", _PROPERTY)
    return features


def _feature_vector(feature: str, dimensions: int) -> np.ndarray:
    """A feature's fixed random direction, seeded by the feature: the same on every worker."""
    seed = int.from_bytes(
        hashlib.blake2b(feature.encode("utf-8"), digest_size=8, person=b"crm-feat").digest(),
        "little",
    )
    return np.random.default_rng(seed).standard_normal(dimensions).astype(np.float32)


@dataclass(frozen=True)
class ContentView:
    """Items' unit content vectors in a fixed order (:meth:`ContentModel.view`): dense, or
    factored as ``features`` (items x features, sparse) times ``directions``."""

    vectors: np.ndarray | None = None
    features: sparse.csr_matrix | None = None
    directions: np.ndarray | None = None

    @property
    def factored(self) -> bool:
        return self.features is not None

    def cosines(self, profiles: np.ndarray) -> np.ndarray:
        """Each profile's (a unit vector per row) cosine with each item (profiles x items;
        column-major when factored)."""
        if self.features is None or self.directions is None:
            assert self.vectors is not None
            dense: np.ndarray = profiles @ self.vectors.T
            return dense
        by_feature = self.directions @ profiles.T  # features x profiles
        # Items x profiles, read as profiles x items (column-major): a copy to row-major
        # order would cost as much as the product.
        return np.asarray(self.features @ by_feature, dtype=np.float32).T


class ContentModel:
    """Item vectors from a catalogue, and how well each item matches a customer's history.

    A hashing vectoriser with weights learned online: every feature of
    :func:`item_features` is hashed to a fixed random direction in ``dimensions``
    dimensions (a random projection of the sparse feature space, so no vocabulary is
    shipped or downloaded, and every worker computes the same vectors), weighted by its
    inverse document frequency over the catalogue as it is now (``log((1 + n) / (1 + df))
    + 1``, updated as items come and go), and the item's vector is their normalised sum. A
    customer's content profile is the normalised mean of the vectors of their recent items;
    an item's content score is the cosine of the two, clipped to [0, 1].

    Items are ``available`` or not; a removed item is remembered as removed. With
    ``catalogue_only``, once the catalogue holds any item, items it does not hold are not
    recommendable either (:meth:`allowed`).

    >>> content = ContentModel(dimensions=64)
    >>> content.upsert("lamp-red", {"name": "Red table lamp", "category": "home/lighting"})
    >>> content.upsert("lamp-blue", {"name": "Blue table lamp", "category": "home/lighting"})
    >>> content.upsert("mug", {"name": "Coffee mug", "category": "kitchen"})
    >>> scores = content.scores([["lamp-red"]], ["lamp-blue", "mug", "unknown"])
    >>> bool(scores[0, 0] > scores[0, 1]), float(scores[0, 2])
    (True, 0.0)
    >>> content.upsert("mug", {"name": "Coffee mug", "available": False})
    >>> content.allowed(["lamp-blue", "mug", "unknown"]).tolist()
    [True, False, False]
    """

    def __init__(self, dimensions: int = 256, catalogue_only: bool = True) -> None:
        if dimensions < 1:
            msg = f"dimensions must be >= 1, got {dimensions}"
            raise ValueError(msg)
        self.dimensions = dimensions
        self.catalogue_only = catalogue_only
        self._items: dict[str, tuple[dict[int, float], bool]] = {}  # id -> features, available
        self._removed: set[str] = set()
        self._feature_ids: dict[str, int] = {}
        self._document_frequency: list[int] = []
        self._directions = np.zeros((0, dimensions), dtype=np.float32)
        self._vectors: dict[str, np.ndarray] | None = None  # built on demand, dropped on change
        self._dense = np.zeros((0, dimensions), dtype=np.float32)  # the same, a row per item
        # Built with the vectors: each item's row of the normalised sparse feature matrix.
        self._factored: tuple[dict[str, int], sparse.csr_matrix] = ({}, sparse.csr_matrix((0, 0)))
        #: Bumped by every change: views built from the catalogue compare it.
        self.version = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    @property
    def available_items(self) -> list[str]:
        """Ids of the items that may be recommended, in the order they were first added."""
        return [item for item, (_, available) in self._items.items() if available]

    def upsert(self, item_id: str, item: Mapping[str, Any]) -> None:
        """Add or replace ``item_id`` (its catalogue fields; ``available`` defaults to true)."""
        old = self._items.get(item_id)
        features = {
            self._feature_id(feature): weight for feature, weight in item_features(item).items()
        }
        available = bool(item.get("available", True))
        if old is not None and old[0] == features:
            # Only its availability (or nothing) changed: the vectors stay as they are.
            self._items[item_id] = (features, available)
            self.version += 1
            return
        if old is not None:
            self._count(old[0], -1)
        self._count(features, +1)
        self._items[item_id] = (features, available)
        self._removed.discard(item_id)
        self._changed()

    def remove(self, item_id: str) -> None:
        """Take ``item_id`` out of the catalogue: never recommended again until re-added."""
        old = self._items.pop(item_id, None)
        if old is not None:
            self._count(old[0], -1)
        self._removed.add(item_id)
        self._changed()

    def allowed(self, items: Sequence[str]) -> np.ndarray:
        """For each of ``items``: may it be recommended?"""
        strict = self.catalogue_only and bool(self._items)
        entries, removed = self._items, self._removed
        flags = []
        for item in items:
            entry = entries.get(item)
            flags.append(entry[1] if entry is not None else not strict and item not in removed)
        return np.array(flags, dtype=bool)

    def allows_all(self, items: Iterable[str]) -> bool:
        """Whether every one of ``items`` may be recommended (:meth:`allowed`, for a few).

        >>> content = ContentModel()
        >>> content.upsert("tea", {"name": "green tea"})
        >>> content.allows_all(["tea"]), content.allows_all(["tea", "cup"])
        (True, False)
        """
        strict = self.catalogue_only and bool(self._items)
        entries, removed = self._items, self._removed
        for item in items:
            entry = entries.get(item)
            if not (entry[1] if entry is not None else not strict and item not in removed):
                return False
        return True

    def vectors(self, items: Sequence[str]) -> np.ndarray:
        """The unit content vectors of ``items`` (rows of zeros for items without one)."""
        built = self._built()
        out = np.zeros((len(items), self.dimensions), dtype=np.float32)
        for row, item in enumerate(items):
            vector = built.get(item)
            if vector is not None:
                out[row] = vector
        return out

    def profiles(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """Each customer's content profile: the normalised mean vector of their items.

        The mean's direction is the sum's: one sparse product of the customers' items
        (each once) with every item's vector, then each row normalised.
        """
        self._built()
        rows_of, dense = self._factored[0], self._dense
        rows: list[int] = []
        ends = [0]
        for history in histories:
            for item in dict.fromkeys(history):
                row = rows_of.get(item)
                if row is not None:
                    rows.append(row)
            ends.append(len(rows))
        if not rows:
            return np.zeros((len(histories), self.dimensions), dtype=np.float32)
        owned = sparse.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), rows, ends),
            shape=(len(histories), len(dense)),
        )
        out = np.asarray(owned @ dense, dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    def scores(self, histories: Sequence[Sequence[str]], items: Sequence[str]) -> np.ndarray:
        """Cosine of each customer's profile (``histories``) with each of ``items``, in [0, 1]."""
        return self.scores_against(histories, self.view(items))

    def view(self, items: Sequence[str]) -> ContentView:
        """``items``' unit vectors, to score many profiles against (:meth:`scores_against`).

        Kept factored, as the items' sparse feature weights and the features' directions,
        when that is smaller than the dense vectors (a catalogue names fewer distinct words,
        categories and price bands than it has items): a profile's cosines then cost a
        product with the directions and a sparse one, instead of reading every item's
        vector, which a ranking of a few customers spends most of its time on.

        >>> content = ContentModel(dimensions=64)
        >>> for n in range(100):
        ...     content.upsert(f"sku-{n}", {"name": f"red mug {n % 3}", "category": "mugs"})
        >>> items = [f"sku-{n}" for n in range(100)]
        >>> content.view(items).factored
        True
        >>> dense = content.profiles([["sku-1"]]) @ content.vectors(items).T
        >>> bool(np.allclose(content.view(items).cosines(content.profiles([["sku-1"]])), dense,
        ...                  atol=1e-6))
        True
        """
        self._built()
        rows_of, matrix = self._factored
        n_features = matrix.shape[1]
        if n_features * self.dimensions + matrix.nnz < len(items) * self.dimensions:
            missing = matrix.shape[0]  # an extra row of zeros for items without a vector
            padded = sparse.vstack([matrix, sparse.csr_matrix((1, n_features))], format="csr")
            rows = [rows_of.get(item, missing) for item in items]
            return ContentView(
                features=padded[rows].astype(np.float32),
                directions=self._directions[:n_features].copy(),
            )
        return ContentView(vectors=self.vectors(items))

    def scores_against(self, histories: Sequence[Sequence[str]], view: ContentView) -> np.ndarray:
        """:meth:`scores` against a :meth:`view` of the items."""
        similarity = view.cosines(self.profiles(histories))
        np.clip(similarity, 0.0, 1.0, out=similarity)
        return similarity

    # --- internals ----------------------------------------------------------------------------

    def _changed(self) -> None:
        self._vectors = None
        self.version += 1

    def _feature_id(self, feature: str) -> int:
        found = self._feature_ids.get(feature)
        if found is not None:
            return found
        found = self._feature_ids[feature] = len(self._document_frequency)
        self._document_frequency.append(0)
        if found == len(self._directions):
            grown = np.zeros((max(64, 2 * found), self.dimensions), dtype=np.float32)
            grown[:found] = self._directions
            self._directions = grown
        self._directions[found] = _feature_vector(feature, self.dimensions)
        return found

    def _count(self, features: Mapping[int, float], change: int) -> None:
        frequency = self._document_frequency
        for feature in features:
            frequency[feature] += change

    def _built(self) -> dict[str, np.ndarray]:
        """Every item's unit vector, computed in one sparse product after any change."""
        if self._vectors is not None:
            return self._vectors
        ids = list(self._items)
        rows, cols, weights = [], [], []
        for row, item in enumerate(ids):
            for feature, weight in self._items[item][0].items():
                rows.append(row)
                cols.append(feature)
                weights.append(weight)
        n_features = len(self._document_frequency)
        frequency = np.array(self._document_frequency, dtype=float)
        idf = np.log((1.0 + len(ids)) / (1.0 + frequency)) + 1.0
        matrix = sparse.csr_matrix(
            (np.array(weights) * idf[cols] if cols else [], (rows, cols)),
            shape=(len(ids), n_features),
        )
        dense = np.asarray(matrix @ self._directions[:n_features], dtype=np.float32)
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        np.divide(dense, norms, out=dense, where=norms > 0)
        self._vectors = dict(zip(ids, dense, strict=True))
        self._dense = dense
        # The same unit vectors, factored: each row's feature weights over its vector's norm,
        # times the features' directions.
        scale = np.divide(1.0, norms[:, 0], out=np.zeros(len(ids)), where=norms[:, 0] > 0)
        self._factored = (
            {item: row for row, item in enumerate(ids)},
            sparse.csr_matrix(sparse.diags(scale) @ matrix, dtype=np.float32),
        )
        return self._vectors
