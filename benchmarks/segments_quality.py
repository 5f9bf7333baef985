"""Segments on Online Retail: k-means and density segments against batch DBSCAN, their
stability, and the synthetic resellers each finds.

    python benchmarks/quality.py --only segments    (the full quality run includes it)

For each cutoff T both segmentations (``CRM_SEGMENT_MODEL=kmeans``, the default, and
``density``) are backtested on every event before T with 50 synthetic resellers injected
(:class:`~benchmarks.unusual_customers.Resellers`), taking every customer's score at T - 7 days
too (a snapshot of the same run), and judged on the real customers:

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
:class:`~benchmarks.unusual_customers.Loners` (lone resellers, one enormous order, bots who only
view) and no reseller group, so that unusual customers too few to make a segment are measured
alone: per kind, the share flagged at T, the share alerted before T and the median
``outlier_score``, and the same for the real customers. On both k-means runs a fence sweep
tells who the outlier fence would flag at T at each of
:data:`~benchmarks.segment_outliers.FENCE_MADS` (median + k x MAD of the log distances; the
segmenter's ``outlier_fence_score``).

The synthetic customers are ``benchmarks/unusual_customers.py``'s, the outlier measures
``benchmarks/segment_outliers.py``'s and the tables ``benchmarks/segments_report.py``'s.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import numpy as np
from rich.console import Console
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.neighbors import NearestNeighbors

from benchmarks.segment_outliers import (
    cutoff_scores,
    fence_sweep,
    kmeans_segmenter,
    loners_report,
    mean_or_none,
    outlier_report,
    own_segment,
)
from benchmarks.unusual_customers import WEEK, Basket, Loners, Resellers, typical_basket
from online_models.scoring.scorer import CustomerScore, ScorerConfig, make_segmenter
from online_models.segments.density import UNUSUAL, DensitySegmenter
from online_models.segments.names import segment_vector
from schemas.events import AnyEvent
from streams.commands.backtest import Backtest, run_backtest
from streams.commands.transactions import LoadedEvent

__all__ = [
    "MODELS",
    "evaluate_loners",
    "evaluate_segments",
    "inertia",
    "knee_eps",
    "segment_stability",
]

logger = logging.getLogger(__name__)

#: The segmentations compared: the default config, and the one ``CRM_SEGMENT_MODEL=density``
#: gives.
MODELS = {
    "kmeans": ScorerConfig(),
    "density": replace(ScorerConfig(), segment_model="density"),
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
        "segment_name_differs": mean_or_none(
            [a[c].segment_name != b[c].segment_name for c in real]
        ),
        "flag_differs": mean_or_none([a[c].segment_outlier != b[c].segment_outlier for c in real]),
        "real_flagged": [mean_or_none([s[c].segment_outlier for c in real]) for s in (a, b)],
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
