"""The quality benchmark's targets: whether a cutoff's report meets what the issues asked of
churn, recommendations, segments, scale-out, lifetime value and the live gauge."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["judge", "value_targets"]

logger = logging.getLogger(__name__)


def value_targets(value: dict[str, Any], workers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Issue 30's targets for the value forecast served: Spearman and top-decile capture at
    least the best of historic spend and batch BG/NBD + Gamma-Gamma, mean absolute error no
    worse than the batch fit's; with ``workers`` (a group's run), within 0.01 of one worker."""
    best = {
        measure: max(value[f"historic_spend_{measure}"], value[f"batch_bgnbd_gg_{measure}"])
        for measure in ("spearman", "top_decile_capture")
    }
    targets: dict[str, Any] = {
        "spearman_vs_best": value["online_spearman"] - best["spearman"],
        "top_decile_vs_best": value["online_top_decile_capture"] - best["top_decile_capture"],
        "mae_vs_batch_bgnbd": value["online_mae"] - value["batch_bgnbd_gg_mae"],
    }
    met = (
        targets["spearman_vs_best"] >= 0
        and targets["top_decile_vs_best"] >= 0
        and targets["mae_vs_batch_bgnbd"] <= 0
    )
    if workers is not None:
        for measure in ("spearman", "top_decile_capture"):
            gap = workers[f"online_{measure}"] - value[f"online_{measure}"]
            targets[f"workers_{measure}_vs_one"] = gap
            met = met and abs(gap) <= 0.01
    targets["met"] = met
    return targets


def judge(report: dict[str, Any]) -> dict[str, Any]:
    churn, recs, segs = report["churn"], report["recommendations"], report["segments"]
    online_auc = churn[f"online_{report['default_churn_model']}_auc"]
    return {
        "churn_auc_vs_batch_logistic": online_auc - churn["batch_logistic_auc"],
        "churn_auc_vs_batch_boosted": online_auc - churn["batch_boosted_auc"],
        "churn_target_met": online_auc >= churn["batch_logistic_auc"]
        and online_auc >= churn["batch_boosted_auc"] - 0.02,
        "hit_rate_vs_popularity": recs["online_hit_rate"] / max(recs["popularity_hit_rate"], 1e-9),
        "recommendation_target_met": recs["online_hit_rate"] >= 1.5 * recs["popularity_hit_rate"]
        and recs["online_hit_rate"] >= recs["item_item_hit_rate"],
        "inertia_ratio": segs["online_inertia"] / segs["batch_inertia"],
        "segment_target_met": segs["online_inertia"] <= 1.2 * segs["batch_inertia"],
        "lifetime_target_met": value_targets(report["lifetime"])["met"],
        "live_auc_within_0_05": abs(report["live_quality"]["cohort_churn_auc"] - online_auc)
        <= 0.05,
        # Scale-out at the default sync: within 0.01 of one worker's AUC and hit rate.
        "scale_out_target_met": all(
            abs(group["churn_auc_vs_one_worker"]) <= 0.01
            and abs(group["hit_rate_vs_one_worker"]) <= 0.01
            for name, group in report["scale_out"].items()
            if not name.endswith("slow_sync")
        ),
    }
