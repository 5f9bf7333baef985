"""Customer segmentation by River's incremental k-means, with ids that stay put."""

from __future__ import annotations

import logging
import math

from river import cluster

__all__ = ["Segmenter"]

logger = logging.getLogger(__name__)

_RENAME_EVERY = 32


class Segmenter:
    """Sequential k-means over RFM and engagement features on fixed scales.

    Centres are seeded from the first ``n_segments`` distinct customers instead of River's
    random draw (random centres far from the data never win a point and stay empty); after
    that each point nudges only its nearest centre by ``halflife``, so centre ``i`` stays
    segment ``i`` and a small ``halflife`` keeps customers from flapping between segments.

    >>> segmenter = Segmenter(n_segments=2, halflife=0.1)
    >>> low = {"monetary": 0.1, "frequency": 0.1}
    >>> high = {"monetary": 0.9, "frequency": 0.8}
    >>> segmenter.learn_predict_one(low), segmenter.learn_predict_one(high)
    (0, 1)
    >>> segmenter.predict_one({"monetary": 0.85, "frequency": 0.9})
    1
    """

    def __init__(
        self, n_segments: int = 6, halflife: float = 0.02, min_seed_distance: float = 0.15
    ):
        self.n_segments = n_segments
        self.halflife = halflife
        self.min_seed_distance = min_seed_distance
        self._kmeans = cluster.KMeans(n_clusters=n_segments, halflife=halflife, seed=0)
        self._seeded = 0
        self._learned = 0
        self._names: dict[int, str] = {}
        self._names_at = -1

    @property
    def learned(self) -> int:
        """Points learned so far."""
        return self._learned

    @property
    def ready(self) -> bool:
        """Whether every centre has been seeded from data."""
        return self._seeded >= self.n_segments

    def centers(self) -> dict[int, dict[str, float]]:
        """Each segment's centre (only seeded ones)."""
        return {i: dict(self._kmeans.centers[i]) for i in range(self._seeded)}

    def predict_one(self, x: dict[str, float]) -> int:
        """The segment nearest to ``x`` among seeded centres (0 before any learning)."""
        if self._seeded == 0:
            return 0
        # Own distance: River's predict_one would invent centre values for unknown keys.
        best, best_distance = 0, math.inf
        for segment in range(self._seeded):
            distance = self._squared_distance(segment, x)
            if distance < best_distance:
                best, best_distance = segment, distance
        return best

    def learn_one(self, x: dict[str, float]) -> None:
        """Move the nearest centre towards ``x`` (or seed a new centre with it)."""
        self.learn_predict_one(x)

    def learn_predict_one(self, x: dict[str, float]) -> int:
        """Learn ``x`` and return its segment."""
        self._learned += 1
        if not self.ready:
            nearest = min((self._distance(i, x) for i in range(self._seeded)), default=math.inf)
            if nearest >= self.min_seed_distance:
                segment = self._seeded
                self._kmeans.centers[segment].clear()
                self._kmeans.centers[segment].update(x)
                self._seeded += 1
                return segment
        # River's KMeans step (nearest centre moves by ``halflife`` towards x), with the
        # nearest found by our distance, which never invents centre values for unknown keys.
        segment = self.predict_one(x)
        center = self._kmeans.centers[segment]
        for key, value in x.items():
            old = center.get(key, value)
            center[key] = old + self.halflife * (value - old)
        return segment

    def _distance(self, segment: int, x: dict[str, float]) -> float:
        return math.sqrt(self._squared_distance(segment, x))

    def _squared_distance(self, segment: int, x: dict[str, float]) -> float:
        """Squared Euclidean distance; a key missing on either side counts as 0 there."""
        center = self._kmeans.centers[segment]
        total = 0.0
        shared = 0
        for key, value in x.items():
            mean = center.get(key)
            if mean is None:
                total += value * value
            else:
                shared += 1
                delta = mean - value
                total += delta * delta
        if len(center) > shared:
            total += sum(value * value for key, value in center.items() if key not in x)
        return total

    def describe(self, segment: int) -> str:
        """The segment in CRM words (names are refreshed as the centres move)."""
        # Centres move by ``halflife`` per point: renaming every few dozen points is plenty.
        if len(self._names) != self._seeded or self._learned - self._names_at >= _RENAME_EVERY:
            self._names = self.describe_all()
            self._names_at = self._learned
        return self._names.get(segment, "new customers")

    def describe_all(self) -> dict[int, str]:
        """A distinct CRM name for every seeded segment, from where its centre sits.

        Names rank the centres against each other: among buyers, a centre silent for
        months is "lapsing" ("lapsing big spenders" for the biggest spenders among them,
        "hibernating" after about 4.5 months, "lost" after 6), the highest spend and
        frequency is "loyal big spenders", the lowest "occasional buyers"; centres of
        customers who never ordered are "browsers".
        """
        centers = self.centers()
        buyers = [i for i, c in centers.items() if c.get("ordered", 1.0) >= 0.5]
        browsers = [i for i in centers if i not in buyers]
        names: dict[int, str] = {}
        for i in browsers:
            names[i] = "inactive browsers" if centers[i].get("recency", 0.0) >= 0.5 else "browsers"
        lapsing = [i for i in buyers if centers[i].get("recency", 0.0) >= 0.4]
        # Among lapsing centres the biggest spenders are the ones to win back first; months
        # more of silence make a centre "hibernating", then "lost".
        by_spend = sorted(lapsing, key=lambda i: centers[i].get("monetary", 0.0), reverse=True)
        for rank, i in enumerate(by_spend):
            if centers[i].get("recency", 0.0) >= 1.0:
                names[i] = "lost"
            elif centers[i].get("recency", 0.0) >= 0.75:
                names[i] = "hibernating"
            elif rank == 0 and centers[i].get("monetary", 0.0) >= 0.6:
                names[i] = "lapsing big spenders"
            else:
                names[i] = "lapsing"
        active = sorted(
            (i for i in buyers if i not in lapsing),
            key=lambda i: centers[i].get("monetary", 0.0) + centers[i].get("frequency", 0.0),
            reverse=True,
        )
        ladder = ["loyal big spenders", "regulars", "promising", "occasional buyers"]
        for rank, i in enumerate(active):
            if rank == len(active) - 1 and rank > 0:
                names[i] = "occasional buyers"
            else:
                names[i] = ladder[min(rank, len(ladder) - 2)]
        seen: dict[str, int] = {}
        for i in sorted(names):
            count = seen[names[i]] = seen.get(names[i], 0) + 1
            if count > 1:
                names[i] = f"{names[i]} {count}"
        return names
