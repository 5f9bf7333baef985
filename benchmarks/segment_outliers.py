"""Who the segment benchmark's segmenter flags at a backtest's cutoff: the resellers against the
real customers (flags, alerts, ``outlier_score``'s ROC AUC, a segment of their own), each kind
of loner's outcome, and who each outlier fence of :data:`FENCE_MADS` would flag.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from online_models.evaluation.measures import roc_auc
from online_models.scoring.scorer import CustomerScore
from online_models.segments.kmeans import Segmenter
from streams.commands.backtest import Backtest

__all__ = [
    "FENCE_MADS",
    "OWN_SEGMENT",
    "FencedSegmenter",
    "beyond_fence",
    "cutoff_scores",
    "fence_sweep",
    "group_outcome",
    "kmeans_segmenter",
    "known",
    "loners_report",
    "mean_or_none",
    "outlier_report",
    "own_segment",
    "real_customers",
    "unusual_alerted",
]

logger = logging.getLogger(__name__)

#: The outlier fences swept on the k-means runs: a customer is flagged when their distance to
#: their segment is beyond the median + k x MAD of the log distances, for each k here.
FENCE_MADS = (2.0, 2.5, 3.0, 3.5)
#: A segment at least this share of whose customers are resellers is a segment of their own.
OWN_SEGMENT = 0.8


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
        "resellers_in_own_segment": mean_or_none(own),
        "resellers_flagged_or_own_segment": mean_or_none(found),
        "reseller_segment_purity": {str(s): round(p, 4) for s, p in sorted(purity.items())},
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


def mean_or_none(values: Sequence[float]) -> float | None:
    """The mean of ``values``, None when there are none."""
    return float(np.mean(values)) if len(values) else None


def group_outcome(
    scores: Mapping[str, CustomerScore], alerted: Collection[str], customers: Sequence[str]
) -> dict[str, Any]:
    """How many ``customers`` there are, the shares of them flagged ``segment_outlier`` at the
    cutoff and ``alerted`` before it, and their median ``outlier_score``."""
    outlier_scores = [known(scores[c]) for c in customers]
    return {
        "count": len(customers),
        "flagged": mean_or_none([scores[c].segment_outlier for c in customers]),
        "alerted": mean_or_none([c in alerted for c in customers]),
        "median_outlier_score": float(np.median(outlier_scores)) if outlier_scores else None,
    }


def beyond_fence(
    scores: Mapping[str, CustomerScore], customers: Collection[str], fence: float | None
) -> float | None:
    """The share of ``customers`` whose ``outlier_score`` reaches ``fence`` (None: no fence)."""
    if fence is None:
        return None
    return mean_or_none([known(scores[c]) >= fence for c in customers])


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
