"""Segments on Online Retail: k-means and density segments against batch DBSCAN, their
stability, and the synthetic resellers each finds.

    python benchmarks/quality.py --only segments    (the full quality run includes it)

For each cutoff T both segmentations (``CRM_SEGMENT_MODEL=kmeans``, the default, and
``density``) are backtested on every event before T with 50 synthetic resellers injected
(:class:`Resellers`), taking every customer's score at T - 7 days too (a snapshot of the same
run), and judged on the real customers:

* fit: silhouette and inertia on the segment features at T (the scorer's own scaled
  features), for density over the customers in a dense region, with the share in none;
* agreement: adjusted Rand index against batch DBSCAN on the same features, noise as one
  more label, with eps and min_samples taken from the online model (its radius, and the
  customers its minimum weight share of them makes) and from the k-distance knee;
* stability: of the customers with no event in the week before T, the share whose segment id
  (and whose segment name) changed between T - 7 days and T;
* outliers: the share of the resellers flagged ``segment_outlier`` at T, against the share of
  real customers, how well ``outlier_score`` ranks them above the real customers (ROC AUC),
  who of each got an ``unusual_customer`` alert before T, and whether batch DBSCAN (same
  settings, everyone) calls the resellers noise.

A third run per cutoff, k-means only, has the real customers plus a handful of each kind of
:class:`Loners` (lone resellers, one enormous order, bots who only view) and no reseller group,
so that unusual customers too few to make a segment are measured alone: per kind, the share
flagged at T, the share alerted before T and the median ``outlier_score``, and the same for the
real customers. On both k-means runs a fence sweep tells who the outlier fence would flag at
T at each of :data:`FENCE_MADS` (median + k x MAD of the log distances; the segmenter's
``outlier_fence_score``).
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, NamedTuple, Protocol

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.neighbors import NearestNeighbors

from online_models.customer.activity import DAY
from online_models.evaluation.measures import roc_auc
from online_models.scoring.scorer import CustomerScore, ScorerConfig, make_segmenter
from online_models.segments.density import UNUSUAL, DensitySegmenter
from online_models.segments.kmeans import Segmenter
from online_models.segments.names import segment_vector
from schemas.events import AnyEvent, PurchaseEvent, validate_event
from streams.commands.backtest import Backtest, run_backtest
from streams.commands.transactions import LoadedEvent

__all__ = [
    "FENCE_MADS",
    "MODELS",
    "Basket",
    "FencedSegmenter",
    "Loners",
    "Resellers",
    "basket_lines",
    "bot_views",
    "enormous_orders",
    "evaluate_loners",
    "evaluate_segments",
    "fence_sweep",
    "inertia",
    "kmeans_segmenter",
    "knee_eps",
    "loners_report",
    "segment_stability",
    "show_fence_sweep",
    "show_loners",
    "show_segments",
    "typical_basket",
]

logger = logging.getLogger(__name__)

#: The segmentations compared: the default config, and the one ``CRM_SEGMENT_MODEL=density``
#: gives.
MODELS = {
    "kmeans": ScorerConfig(),
    "density": replace(ScorerConfig(), segment_model="density"),
}
WEEK = timedelta(days=7)
#: The outlier fences swept on the k-means runs: a customer is flagged when their distance to
#: their segment is beyond the median + k x MAD of the log distances, for each k here.
FENCE_MADS = (2.0, 2.5, 3.0, 3.5)
#: A segment at least this share of whose customers are resellers is a segment of their own.
OWN_SEGMENT = 0.8


class Basket(NamedTuple):
    """A basket's lines, units and amount."""

    lines: int
    quantity: float
    amount: float


def typical_basket(events: Iterable[LoadedEvent], before: float) -> tuple[Basket, list[str]]:
    """The median basket (a customer's purchase lines sharing a time) before ``before``, and
    the item of every purchase line then (each item as often as it sold)."""
    baskets: dict[tuple[str, float], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    items = []
    for loaded in events:
        event = loaded.event
        if loaded.time < before and isinstance(event, PurchaseEvent):
            basket = baskets[event.customer_id, loaded.time]
            basket[0] += 1
            basket[1] += event.quantity
            basket[2] += event.amount
            items.append(event.item_id)
    lines, quantity, amount = np.median(np.array(list(baskets.values())), axis=0)
    return Basket(max(round(lines), 1), float(quantity), float(amount)), items


def basket_lines(
    customer: str, basket_id: str, moment: float, items: Sequence[str], basket: Basket, times: float
) -> list[AnyEvent]:
    """One basket of ``customer`` at ``moment``: a purchase line of each of ``items``, sharing
    ``times`` the typical ``basket``'s units and amount; event ids ``{basket_id}-NNN``."""
    timestamp = datetime.fromtimestamp(moment, UTC).isoformat()
    return [
        validate_event(
            {
                "event_id": f"{basket_id}-{line:03d}",
                "customer_id": customer,
                "type": "purchase",
                "timestamp": timestamp,
                "item_id": item,
                "amount": round(times * basket.amount / basket.lines, 2),
                "quantity": max(round(times * basket.quantity / basket.lines), 1),
            }
        )
        for line, item in enumerate(items)
    ]


@dataclass(frozen=True, slots=True)
class Resellers:
    """``count`` synthetic resellers: from a random week in the first half of the ``weeks``
    before the cutoff, each buys every week (same weekday and hour) a basket of the typical
    basket's lines of sold items, with ``scale`` times its units and amount (drawn per basket).
    Their customer ids are ``synthetic-{name}-NN``."""

    count: int = 50
    weeks: int = 26
    scale: tuple[float, float] = (10.0, 20.0)
    seed: int = 0
    name: str = "reseller"

    def events(self, basket: Basket, items: Sequence[str], cutoff: float) -> list[AnyEvent]:
        """Their purchase lines before ``cutoff``, validated, in event-time order."""
        rng = np.random.default_rng(self.seed)
        start = cutoff - self.weeks * WEEK.total_seconds()
        events = []
        for n in range(self.count):
            customer = f"synthetic-{self.name}-{n:02d}"
            offset = float(rng.integers(7) * DAY + rng.integers(8, 18) * 3600.0)
            for week in range(int(rng.integers(self.weeks // 2)), self.weeks):
                moment = start + week * WEEK.total_seconds() + offset
                times = rng.uniform(*self.scale)
                picks = rng.choice(len(items), basket.lines, replace=False)
                basket_id = f"{customer}-{week:02d}"
                events += basket_lines(
                    customer, basket_id, moment, [items[p] for p in picks], basket, times
                )
        return sorted(events, key=attrgetter("timestamp"))


def enormous_orders(
    count: int,
    basket: Basket,
    items: Sequence[str],
    cutoff: float,
    *,
    scale: float,
    weeks: int,
    rng: np.random.Generator,
) -> list[AnyEvent]:
    """``count`` new customers (``synthetic-enormous-order-NN``) whose only basket, at a random
    second of the ``weeks`` before ``cutoff``, is the typical basket's lines of sold items
    with ``scale`` times its units and amount; in event-time order."""
    span = weeks * WEEK.total_seconds()
    events = []
    for n in range(count):
        customer = f"synthetic-enormous-order-{n:02d}"
        moment = cutoff - span + float(rng.integers(int(span)))
        picks = rng.choice(len(items), basket.lines, replace=False)
        events += basket_lines(customer, customer, moment, [items[p] for p in picks], basket, scale)
    return sorted(events, key=attrgetter("timestamp"))


def bot_views(
    count: int,
    items: Sequence[str],
    cutoff: float,
    *,
    views: int,
    weeks: int,
    rng: np.random.Generator,
) -> list[AnyEvent]:
    """``count`` customers (``synthetic-bot-NN``) who each view ``views`` items drawn from
    the sold ones, at random seconds of one random week among the ``weeks`` before
    ``cutoff``, and never buy; in event-time order."""
    catalogue = sorted(set(items))
    week = WEEK.total_seconds()
    events = []
    for n in range(count):
        customer = f"synthetic-bot-{n:02d}"
        start = cutoff - (weeks - int(rng.integers(weeks))) * week
        seconds = np.sort(rng.integers(int(week), size=views))
        picks = rng.integers(len(catalogue), size=views)
        for view, (second, pick) in enumerate(zip(seconds.tolist(), picks.tolist(), strict=True)):
            document = {
                "event_id": f"{customer}-{view:05d}",
                "customer_id": customer,
                "type": "view",
                "timestamp": datetime.fromtimestamp(start + second, UTC).isoformat(),
                "item_id": catalogue[pick],
            }
            events.append(validate_event(document))
    return sorted(events, key=attrgetter("timestamp"))


@dataclass(frozen=True, slots=True)
class Loners:
    """Unusual customers too few to make a segment of their own, each kind a handful:

    * ``lone reseller``: :class:`Resellers` as separate individuals (ids
      ``synthetic-lone-reseller-NN``, drawn with ``seed``, not the group's);
    * ``enormous order``: new customers whose one basket is ``scale`` times the typical one;
    * ``bot``: customers who view ``views`` items over one week and never buy.

    Enormous orders and bots fall in the ``weeks`` before the cutoff.
    """

    lone_resellers: int = 5
    enormous_orders: int = 5
    bots: int = 5
    scale: float = 50.0
    views: int = 3_000
    weeks: int = 8
    seed: int = 1

    def events(
        self, basket: Basket, items: Sequence[str], cutoff: float
    ) -> dict[str, list[AnyEvent]]:
        """Each kind's events before ``cutoff``, validated, in event-time order."""
        # One generator per kind: the count of one kind does not move another's customers.
        orders_rng, bots_rng = (np.random.default_rng([self.seed, kind]) for kind in (1, 2))
        resellers = Resellers(count=self.lone_resellers, seed=self.seed, name="lone-reseller")
        orders = enormous_orders(self.enormous_orders, basket, items, cutoff,
                                 scale=self.scale, weeks=self.weeks, rng=orders_rng)  # fmt: skip
        bots = bot_views(self.bots, items, cutoff, views=self.views, weeks=self.weeks, rng=bots_rng)
        return {
            "lone reseller": resellers.events(basket, items, cutoff),
            "enormous order": orders,
            "bot": bots,
        }


def segment_stability(
    before: Mapping[str, CustomerScore],
    after: Mapping[str, CustomerScore],
    customers: Collection[str],
) -> dict[str, Any]:
    """Of ``customers`` (scored both times), the shares whose segment id and segment name
    differ between the two scores."""
    count = len(customers)
    ids = sum(before[c].segment != after[c].segment for c in customers)
    names = sum(before[c].segment_name != after[c].segment_name for c in customers)
    return {
        "customers": count,
        "segment_id_changed": ids / count if count else None,
        "segment_name_changed": names / count if count else None,
    }


def knee_eps(features: np.ndarray, min_samples: int) -> float:
    """DBSCAN's eps at the knee of the sorted k-distance curve (Ester et al. 1996): every
    point's distance to its ``min_samples``-th nearest point, itself included (what makes it a
    core point), sorted; the knee is where the curve lies farthest below the chord from its
    smallest to its largest value, both scaled to 0..1 (Kneedle, Satopaa et al. 2011)."""
    nearest = NearestNeighbors(n_neighbors=min_samples).fit(features)
    curve = np.sort(nearest.kneighbors(features)[0][:, -1])
    rise = (curve - curve[0]) / max(curve[-1] - curve[0], 1e-12)
    return float(curve[np.argmax(np.linspace(0.0, 1.0, len(curve)) - rise)])


def inertia(features: np.ndarray, labels: np.ndarray) -> float:
    total = 0.0
    for label in set(labels.tolist()):
        members = features[labels == label]
        total += float(((members - members.mean(axis=0)) ** 2).sum())
    return total


def dbscan_settings(features: np.ndarray) -> dict[str, tuple[float, int]]:
    """Batch DBSCAN's eps and min_samples for these customers: the online density model's
    (eps its radius; min_samples the customers its minimum weight share of them makes, at
    least its minimum weight), and the k-distance knee's with min_samples twice the number of
    features (Sander et al. 1998)."""
    density = make_segmenter(MODELS["density"])
    assert isinstance(density, DensitySegmenter)
    share = math.ceil(density.minimum_weight_share * len(features))
    twice = 2 * features.shape[1]
    return {
        "radius": (density.clustering_threshold, max(share, round(density.minimum_weight))),
        "knee": (knee_eps(features, twice), twice),
    }


def batch_dbscan(
    features: np.ndarray, settings: Mapping[str, tuple[float, int]]
) -> dict[str, np.ndarray]:
    """Batch DBSCAN's labels (noise -1) with each of ``settings``."""
    return {
        name: DBSCAN(eps=eps, min_samples=min_samples).fit(features).labels_
        for name, (eps, min_samples) in settings.items()
    }


def fit_report(features: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Silhouette and inertia of the customers in a segment (density's unusual are in none)."""
    placed = labels != UNUSUAL
    sizes = Counter(labels[placed].tolist())
    fit: dict[str, Any] = {
        "segments": len(sizes),
        "in_no_segment": float((~placed).mean()),
        "largest_segment_share": max(sizes.values(), default=0) / len(labels),
    }
    if fit["segments"] >= 2:
        fit["silhouette"] = float(silhouette_score(features[placed], labels[placed]))
    fit["inertia"] = inertia(features[placed], labels[placed])
    fit["inertia_per_customer"] = fit["inertia"] / max(int(placed.sum()), 1)
    return fit


def outlier_report(
    run: Backtest, real: Sequence[str], resellers: Sequence[str], batch_noise: dict[str, float]
) -> dict[str, Any]:
    """Who of the resellers and of the real customers is flagged at the cutoff, and who got an
    ``unusual_customer`` alert on the way; ``batch_noise``: the resellers batch DBSCAN calls
    noise."""
    scores = cutoff_scores(run)
    alerted = unusual_alerted(run)
    return {
        "resellers": len(resellers),
        "resellers_flagged": float(np.mean([scores[c].segment_outlier for c in resellers])),
        "real_flagged": float(np.mean([scores[c].segment_outlier for c in real])),
        "resellers_alerted": float(np.mean([c in alerted for c in resellers])),
        "real_alerted": float(np.mean([c in alerted for c in real])),
        "resellers_median_outlier_score": float(np.median([known(scores[c]) for c in resellers])),
        # Whether the score ranks them above the real customers, whatever the cut.
        "outlier_score_auc": float(
            roc_auc(
                [c in resellers for c in (*real, *resellers)],
                [known(scores[c]) for c in (*real, *resellers)],
            )
        ),
        "reseller_segments": dict(Counter(scores[c].segment_name for c in resellers)),
        **own_segment(scores, real, resellers),
        "resellers_batch_dbscan_noise": batch_noise,
    }


def own_segment(
    scores: Mapping[str, CustomerScore], real: Sequence[str], resellers: Sequence[str]
) -> dict[str, Any]:
    """The share of ``resellers`` in a segment at least :data:`OWN_SEGMENT` of whose customers
    are resellers (a segment of their own), that share and flagged together (the issue's
    test: either reaches 0.8), and each reseller segment's share of resellers."""
    members = Counter(scores[c].segment for c in (*real, *resellers))
    theirs = Counter(scores[c].segment for c in resellers)
    purity = {segment: theirs[segment] / members[segment] for segment in theirs}
    own = [purity[scores[c].segment] >= OWN_SEGMENT for c in resellers]
    found = [o or scores[c].segment_outlier for o, c in zip(own, resellers, strict=True)]
    return {
        "resellers_in_own_segment": _mean(own),
        "resellers_flagged_or_own_segment": _mean(found),
        "reseller_segment_purity": {str(s): round(p, 4) for s, p in sorted(purity.items())},
    }


def model_report(run: Backtest, week_before: float, synthetic: Collection[str]) -> dict[str, Any]:
    """One segmentation's fit, agreement, stability and outliers at the run's cutoff."""
    scores = cutoff_scores(run)
    real = sorted(c for c in scores if c not in synthetic)
    resellers = sorted(c for c in scores if c in synthetic)
    features = {
        c: segment_vector(run.states[c].profile.segment_features(run.as_of)) for c in scores
    }
    x = np.array([features[c] for c in real])
    labels = np.array([scores[c].segment for c in real])
    settings = dbscan_settings(x)
    batch = batch_dbscan(x, settings)
    # The same settings over everyone: does batch DBSCAN find the resellers in no cluster?
    found = batch_dbscan(np.array([features[c] for c in real + resellers]), settings)
    before = run.snapshots[week_before]
    silent = [c for c in real if c in before and run.states[c].profile.last_seen < week_before]
    return {
        "customers": len(real),
        "fit": fit_report(x, labels),
        "dbscan": {
            name: {
                "eps": eps,
                "min_samples": min_samples,
                "clusters": len(set(batch[name].tolist()) - {-1}),
                "noise_share": float((batch[name] == -1).mean()),
            }
            for name, (eps, min_samples) in settings.items()
        },
        "ari": {name: float(adjusted_rand_score(batch[name], labels)) for name in batch},
        "stability": segment_stability(before, scores, silent),
        "outliers": outlier_report(
            run,
            real,
            resellers,
            {name: float((among[len(real) :] == -1).mean()) for name, among in found.items()},
        ),
        "backtest_seconds": round(run.seconds, 1),
    }


class FencedSegmenter(Protocol):
    """A segmenter that tells the ``outlier_score`` at the outlier fence of ``mads`` MADs, or
    None while it has too little data: k-means's
    :class:`~online_models.segments.kmeans.Segmenter`."""

    def outlier_fence_score(self, mads: float) -> float | None: ...


def cutoff_scores(run: Backtest) -> dict[str, CustomerScore]:
    """Every customer's score at the run's cutoff."""
    return {row.customer_id: row.score for row in run.rows}


def unusual_alerted(run: Backtest) -> set[str]:
    """The customers who got an ``unusual_customer`` alert on the way to the run's cutoff."""
    return {c for c, kind, _, _ in run.alert_log if kind == "unusual_customer"}


def real_customers(run: Backtest, kinds: Mapping[str, Collection[str]]) -> list[str]:
    """The run's customers in none of ``kinds``."""
    synthetic = set().union(*kinds.values())
    return sorted(row.customer_id for row in run.rows if row.customer_id not in synthetic)


def known(score: CustomerScore) -> float:
    """A score's ``outlier_score``, 0 while unknown (a segment too young to tell)."""
    return score.outlier_score or 0.0


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def group_outcome(
    scores: Mapping[str, CustomerScore], alerted: Collection[str], customers: Sequence[str]
) -> dict[str, Any]:
    """How many ``customers`` there are, the shares of them flagged ``segment_outlier`` at the
    cutoff and ``alerted`` before it, and their median ``outlier_score``."""
    outlier_scores = [known(scores[c]) for c in customers]
    return {
        "count": len(customers),
        "flagged": _mean([scores[c].segment_outlier for c in customers]),
        "alerted": _mean([c in alerted for c in customers]),
        "median_outlier_score": float(np.median(outlier_scores)) if outlier_scores else None,
    }


def beyond_fence(
    scores: Mapping[str, CustomerScore], customers: Collection[str], fence: float | None
) -> float | None:
    """The share of ``customers`` whose ``outlier_score`` reaches ``fence`` (None: no fence)."""
    if fence is None:
        return None
    return _mean([known(scores[c]) >= fence for c in customers])


def fence_sweep(
    run: Backtest,
    kinds: Mapping[str, Collection[str]],
    segmenter: FencedSegmenter,
    mads: Sequence[float] = FENCE_MADS,
) -> list[dict[str, Any]]:
    """For each fence of ``mads`` MADs, its ``outlier_score`` (None while the segmenter has too
    little data) and the share of each of ``kinds`` and of the real customers (``real``, the
    rest) whose score at the cutoff reaches it: who that fence would flag."""
    scores = cutoff_scores(run)
    groups = {**kinds, "real": real_customers(run, kinds)}
    sweep = []
    for k in mads:
        fence = segmenter.outlier_fence_score(k)
        flagged = {group: beyond_fence(scores, c, fence) for group, c in groups.items()}
        sweep.append({"mads": k, "fence_score": fence, "flagged": flagged})
    return sweep


def kmeans_segmenter(run: Backtest) -> FencedSegmenter:
    """The k-means segmenter of the run's worker (the benchmark runs one)."""
    assert run.scorer is not None and isinstance(run.scorer.segmenter, Segmenter)
    return run.scorer.segmenter


def loners_report(
    run: Backtest, kinds: Mapping[str, Collection[str]], segmenter: FencedSegmenter
) -> dict[str, Any]:
    """Each of ``kinds``' outcome at the run's cutoff, the real customers', and who each fence
    would flag."""
    scores, alerted = cutoff_scores(run), unusual_alerted(run)
    return {
        "kinds": {kind: group_outcome(scores, alerted, sorted(c)) for kind, c in kinds.items()},
        "real": group_outcome(scores, alerted, real_customers(run, kinds)),
        "fence_sweep": fence_sweep(run, kinds, segmenter),
        "backtest_seconds": round(run.seconds, 1),
    }


def backtest_with(
    events: Sequence[LoadedEvent],
    injected: Iterable[AnyEvent],
    as_of: datetime,
    config: ScorerConfig,
    *,
    partitions: int,
    sync_seconds: float,
    snapshots: Sequence[datetime] = (),
    workers: int = 1,
) -> Backtest:
    """The scorer backtested to ``as_of`` on the real ``events`` with the synthetic ones
    (``injected``, in event-time order) merged in, by ``workers`` workers."""
    stream = heapq.merge((e.event for e in events), injected, key=attrgetter("timestamp"))
    return run_backtest(stream, as_of, config, partitions=partitions, workers=workers,
                        sync_seconds=sync_seconds, snapshots=snapshots)  # fmt: skip


def workers_agreement(
    one: Backtest, many: Backtest, workers: int, synthetic: Collection[str]
) -> dict[str, Any]:
    """How far the scores at the cutoff of ``workers`` workers are from one worker's: the
    shares of real customers whose segment name and whose flag differ, and each run's share
    of real customers flagged and of resellers flagged or in a segment of their own."""
    a, b = cutoff_scores(one), cutoff_scores(many)
    common = sorted(set(a) & set(b))
    real = [c for c in common if c not in synthetic]
    resellers = [c for c in common if c in synthetic]
    return {
        "workers": workers,
        "customers": len(real),
        "segment_name_differs": _mean([a[c].segment_name != b[c].segment_name for c in real]),
        "flag_differs": _mean([a[c].segment_outlier != b[c].segment_outlier for c in real]),
        "real_flagged": [_mean([s[c].segment_outlier for c in real]) for s in (a, b)],
        "resellers_flagged_or_own_segment": [
            own_segment(s, real, resellers)["resellers_flagged_or_own_segment"] for s in (a, b)
        ],
        "backtest_seconds": round(many.seconds, 1),
    }


def evaluate_loners(
    events: Sequence[LoadedEvent],
    as_of: datetime,
    console: Console,
    *,
    loners: Loners,
    typical: tuple[Basket, list[str]],
    partitions: int,
    sync_seconds: float,
) -> dict[str, Any]:
    """k-means backtested to ``as_of`` on the real events plus ``loners`` alone (no reseller
    group), judged per kind; ``typical``: the typical basket and the items sold before."""
    by_kind = loners.events(*typical, as_of.timestamp())
    injected = list(heapq.merge(*by_kind.values(), key=attrgetter("timestamp")))
    run = backtest_with(events, injected, as_of, MODELS["kmeans"],
                        partitions=partitions, sync_seconds=sync_seconds)  # fmt: skip
    console.log(f"{as_of.date()} loners kmeans: {run.events:,} events in {run.seconds:.1f}s")
    kinds = {kind: {e.customer_id for e in kind_events} for kind, kind_events in by_kind.items()}
    report = loners_report(run, kinds, kmeans_segmenter(run))
    return {"settings": asdict(loners), "events": len(injected), **report}


def evaluate_segments(
    events: Sequence[LoadedEvent],
    cutoff: str,
    console: Console,
    *,
    partitions: int,
    sync_seconds: float,
    resellers: Resellers | None = None,
    loners: Loners | bool | None = None,
    models: Collection[str] = tuple(MODELS),
    workers: int = 0,
) -> dict[str, Any]:
    """The segmentations of ``models`` (default both) backtested to ``cutoff`` with
    ``resellers`` (default :class:`Resellers`) injected, judged, and k-means again with
    ``loners`` (default :class:`Loners`; False: none) alone (when ``models`` has k-means);
    with ``workers``, each segmentation again by that many workers, compared."""
    resellers = resellers or Resellers()
    as_of = datetime.fromisoformat(cutoff).replace(tzinfo=UTC)
    t = as_of.timestamp()
    basket, items = typical_basket(events, t)
    injected = resellers.events(basket, items, t)
    synthetic = {event.customer_id for event in injected}
    report: dict[str, Any] = {
        "cutoff": cutoff,
        "resellers": {
            "count": resellers.count,
            "weeks": resellers.weeks,
            "scale": list(resellers.scale),
            "typical_basket": basket._asdict(),
            "events": len(injected),
        },
        "models": {},
    }
    for name, config in MODELS.items():
        if name not in models:
            continue
        run = backtest_with(events, injected, as_of, config, partitions=partitions,
                            sync_seconds=sync_seconds, snapshots=[as_of - WEEK])  # fmt: skip
        console.log(f"{cutoff} segments {name}: {run.events:,} events in {run.seconds:.1f}s")
        report["models"][name] = model_report(run, (as_of - WEEK).timestamp(), synthetic)
        if config.segment_model == "kmeans":
            sweep = fence_sweep(run, {"reseller": synthetic}, kmeans_segmenter(run))
            report["models"][name]["fence_sweep"] = sweep
        if workers > 1:
            many = backtest_with(events, injected, as_of, config, partitions=partitions,
                                 sync_seconds=sync_seconds, workers=workers)  # fmt: skip
            console.log(f"{cutoff} segments {name}, {workers} workers: {many.seconds:.1f}s")
            agreement = workers_agreement(run, many, workers, synthetic)
            report["models"][name]["workers_agreement"] = agreement
    if "kmeans" in models and loners is not False:
        chosen = loners if isinstance(loners, Loners) else Loners()
        report["loners"] = evaluate_loners(events, as_of, console, loners=chosen,
                                           typical=(basket, items), partitions=partitions,
                                           sync_seconds=sync_seconds)  # fmt: skip
    return report


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def show_segments(reports: list[dict[str, Any]], console: Console) -> None:
    """The table of every measure, a column per cutoff and segmentation."""
    table = Table(title="Segments on Online Retail: k-means and density (50 resellers injected)")
    table.add_column("measure")
    for report in reports:
        for name in report["models"]:
            table.add_column(f"{report['cutoff']} {name}", justify="right")
    lines = [
        ("customers (real)", lambda m: f"{m['customers']:,}"),
        ("segments", lambda m: str(m["fit"]["segments"])),
        ("share in no segment (unusual)", lambda m: _share(m["fit"]["in_no_segment"])),
        ("share in the largest segment", lambda m: _share(m["fit"]["largest_segment_share"])),
        ("silhouette (customers in a segment)", lambda m: _share(m["fit"].get("silhouette"))),
        ("inertia (customers in a segment)", lambda m: f"{m['fit']['inertia']:.1f}"),
        ("inertia per customer in a segment", lambda m: f"{m['fit']['inertia_per_customer']:.4f}"),
        ("ARI vs DBSCAN (online radius)", lambda m: _share(m["ari"]["radius"])),
        ("ARI vs DBSCAN (k-distance knee)", lambda m: _share(m["ari"]["knee"])),
        ("silent week: customers", lambda m: f"{m['stability']['customers']:,}"),
        ("silent week: segment id changed", lambda m: _share(m["stability"]["segment_id_changed"])),
        ("silent week: name changed", lambda m: _share(m["stability"]["segment_name_changed"])),
        ("resellers flagged segment_outlier", lambda m: _share(m["outliers"]["resellers_flagged"])),
        ("real customers flagged", lambda m: _share(m["outliers"]["real_flagged"])),
        (
            "resellers in a segment >= 80% theirs",
            lambda m: _share(m["outliers"]["resellers_in_own_segment"]),
        ),
        (
            "resellers flagged or in their own",
            lambda m: _share(m["outliers"]["resellers_flagged_or_own_segment"]),
        ),
        (
            "resellers' median outlier_score",
            lambda m: _share(m["outliers"]["resellers_median_outlier_score"]),
        ),
        (
            "outlier_score AUC, resellers vs real",
            lambda m: _share(m["outliers"]["outlier_score_auc"]),
        ),
        (
            "resellers alerted unusual_customer",
            lambda m: _share(m["outliers"]["resellers_alerted"]),
        ),
        ("real customers alerted", lambda m: _share(m["outliers"]["real_alerted"])),
        (
            "resellers DBSCAN calls noise (radius)",
            lambda m: _share(m["outliers"]["resellers_batch_dbscan_noise"]["radius"]),
        ),
        (
            "resellers DBSCAN calls noise (knee)",
            lambda m: _share(m["outliers"]["resellers_batch_dbscan_noise"]["knee"]),
        ),
        (
            "more workers: segment name differs",
            lambda m: _share(m.get("workers_agreement", {}).get("segment_name_differs")),
        ),
        (
            "more workers: flag differs",
            lambda m: _share(m.get("workers_agreement", {}).get("flag_differs")),
        ),
        ("backtest seconds", lambda m: f"{m['backtest_seconds']:.0f}"),
    ]
    for label, get in lines:
        table.add_row(label, *(get(m) for r in reports for m in r["models"].values()))
    console.print(table)
    for report in reports:
        for name, settings in next(iter(report["models"].values()))["dbscan"].items():
            console.print(
                f"as of {report['cutoff']}: DBSCAN ({name}) eps {settings['eps']:.3f}, "
                f"min_samples {settings['min_samples']}: {settings['clusters']} clusters, "
                f"{settings['noise_share']:.1%} noise"
            )
    if all("loners" in r for r in reports):
        show_loners(reports, console)
        show_fence_sweep(reports, console)


#: The loners' table: each row's label and the key of a kind's outcome it shows.
OUTCOME_MEASURES = (
    ("customers", "count"),
    ("flagged segment_outlier", "flagged"),
    ("alerted unusual_customer", "alerted"),
    ("median outlier_score", "median_outlier_score"),
)


def show_loners(reports: list[dict[str, Any]], console: Console) -> None:
    """The loners' run: each kind's outcome and the real customers', a column per cutoff."""
    table = Table(
        title="Unusual customers alone (k-means; real customers plus loners, no reseller group)"
    )
    table.add_column("who")
    table.add_column("measure")
    for report in reports:
        table.add_column(report["cutoff"], justify="right")
    outcomes = [{**r["loners"]["kinds"], "real customers": r["loners"]["real"]} for r in reports]
    for who in outcomes[0]:
        for label, key in OUTCOME_MEASURES:
            cells = [outcome[who][key] for outcome in outcomes]
            shown = [f"{c:,}" if key == "count" else _share(c) for c in cells]
            table.add_row(who if key == "count" else "", label, *shown)
        table.add_section()
    console.print(table)


def show_fence_sweep(reports: list[dict[str, Any]], console: Console) -> None:
    """Who each outlier fence would flag, a column per cutoff and k-means run (with the 50
    resellers, with the loners)."""
    sweeps = {
        f"{r['cutoff']} {run}": {step["mads"]: step for step in sweep}
        for r in reports
        for run, sweep in (
            ("resellers", r["models"]["kmeans"]["fence_sweep"]),
            ("loners", r["loners"]["fence_sweep"]),
        )
    }
    steps = [step for sweep in sweeps.values() for step in sweep.values()]
    # Every group in some run, the real customers last.
    groups = sorted(
        dict.fromkeys(g for step in steps for g in step["flagged"]),
        key=lambda group: group == "real",
    )
    table = Table(title="Outlier fence at median + k x MAD of log distances: share flagged")
    for column in ("k (MADs)", "who", *sweeps):
        table.add_column(column, justify="left" if column == "who" else "right")
    for k in FENCE_MADS:
        at = [sweep.get(k, {"fence_score": None, "flagged": {}}) for sweep in sweeps.values()]
        table.add_row(f"{k:g}", "fence (outlier_score)", *(_share(s["fence_score"]) for s in at))
        for group in groups:
            table.add_row("", group, *(_share(s["flagged"].get(group)) for s in at))
        table.add_section()
    console.print(table)
