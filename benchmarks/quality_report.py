"""The quality benchmark's tables: the full report's measures and value-at-risk sweep per
cutoff, and the default scorer alone (``--only core``), printed with rich."""

from __future__ import annotations

import logging
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.quality_sections import VALUE_AT_RISK_SWEEP

__all__ = ["show", "show_core"]

logger = logging.getLogger(__name__)


def show_core(reports: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="The default scorer alone (--only core)")
    table.add_column("measure")
    for report in reports:
        table.add_column(report["cutoff"], justify="right")
    rows = {
        "churn AUC, online": ("churn", "online_logistic_auc"),
        "churn AUC, batch logistic": ("churn", "batch_logistic_auc"),
        "hit@10, online": ("recommendations", "online_hit_rate"),
        "hit@10, popularity": ("recommendations", "popularity_hit_rate"),
        "hit@10, batch item-item": ("recommendations", "item_item_hit_rate"),
        "hit@10, RP3beta (beta chosen before T)": ("recommendations", "rp3beta_hit_rate"),
        "hit@10, EASE (lambda chosen before T)": ("recommendations", "ease_hit_rate"),
        "recall@10, online": ("recommendations", "online_recall"),
        "recall@10, popularity": ("recommendations", "popularity_recall"),
        "recall@10, EASE": ("recommendations", "ease_recall"),
        "EASE lambda (chosen before T)": ("recommendations", "ease_lambda"),
        "CLV Spearman, online": ("lifetime", "online_spearman"),
        "CLV Spearman, historic spend": ("lifetime", "historic_spend_spearman"),
        "CLV Spearman, batch BG/NBD+GG": ("lifetime", "batch_bgnbd_gg_spearman"),
        "top-decile capture, online": ("lifetime", "online_top_decile_capture"),
        "CLV MAE, online": ("lifetime", "online_mae"),
        "CLV MAE, batch BG/NBD+GG": ("lifetime", "batch_bgnbd_gg_mae"),
        "orders MAE, online": ("lifetime", "online_orders_mae"),
        "orders MAE, batch BG/NBD": ("lifetime", "batch_bgnbd_orders_mae"),
        "top-decile capture, historic spend": ("lifetime", "historic_spend_top_decile_capture"),
        "top-decile capture, batch BG/NBD+GG": ("lifetime", "batch_bgnbd_gg_top_decile_capture"),
        "CLV Spearman, online BG/NBD+GG alone": ("lifetime", "online_bgnbd_gg_spearman"),
        "value labels learned": ("lifetime", "value_labels"),
        "live value rank correlation (closed cohorts)": ("lifetime", "live_value_rank_correlation"),
    }
    for key in sorted({k for report in reports for k in report if k.startswith("lifetime_w")}):
        workers = key.removeprefix("lifetime_workers_")
        rows[f"CLV Spearman, {workers} workers"] = (key, "online_spearman")
        rows[f"top-decile capture, {workers} workers"] = (key, "online_top_decile_capture")
        rows[f"CLV MAE, {workers} workers"] = (key, "online_mae")
        ranked = f"recommendations_workers_{workers}"
        rows[f"hit rate@10, online, {workers} workers"] = (ranked, "online_hit_rate")
        rows[f"recall@10, online, {workers} workers"] = (ranked, "online_recall")
    for name, (section, key) in rows.items():
        table.add_row(
            name,
            *(f"{report[section][key]:.4f}" if section in report else "-" for report in reports),
        )
    console.print(table)
    for report in reports:
        targets = report["value_targets"]
        console.print(
            f"as of {report['cutoff']}: value target {'met' if targets['met'] else 'MISSED'} ("
            + ", ".join(f"{k} {v:+.4f}" for k, v in targets.items() if k != "met")
            + ")"
        )


def show(reports: list[dict[str, Any]], console: Console) -> None:
    table = Table(
        title="Quality on Online Retail: online scorer vs batch baselines (90-day window)"
    )
    table.add_column("metric")
    for report in reports:
        table.add_column(f"as of {report['cutoff']}", justify="right")
    lines = [
        (
            "churn AUC: online blend (default)",
            lambda r: r["churn"]["online_logistic_auc"],
        ),
        ("churn AUC: online Hoeffding tree", lambda r: r["churn"]["online_hoeffding_tree_auc"]),
        (
            "churn AUC: online logistic alone (before)",
            lambda r: r["churn"]["online_logistic_alone_auc"],
        ),
        ("churn AUC: online BG/NBD alone", lambda r: r["churn"]["online_bgnbd_alone_auc"]),
        ("churn AUC: batch logistic (RFM)", lambda r: r["churn"]["batch_logistic_auc"]),
        ("churn AUC: batch boosted (RFM)", lambda r: r["churn"]["batch_boosted_auc"]),
        ("hit rate@10: online", lambda r: r["recommendations"]["online_hit_rate"]),
        ("hit rate@10: popularity", lambda r: r["recommendations"]["popularity_hit_rate"]),
        ("hit rate@10: batch item-item", lambda r: r["recommendations"]["item_item_hit_rate"]),
        ("hit rate@10: batch RP3beta", lambda r: r["recommendations"]["rp3beta_hit_rate"]),
        ("hit rate@10: batch EASE", lambda r: r["recommendations"]["ease_hit_rate"]),
        ("recall@10: online", lambda r: r["recommendations"]["online_recall"]),
        ("recall@10: popularity", lambda r: r["recommendations"]["popularity_recall"]),
        ("recall@10: batch item-item", lambda r: r["recommendations"]["item_item_recall"]),
        ("recall@10: batch EASE", lambda r: r["recommendations"]["ease_recall"]),
        ("segments: k", lambda r: r["segments"]["k"]),
        ("inertia: online / batch k-means", lambda r: r["targets"]["inertia_ratio"]),
        ("silhouette: online", lambda r: r["segments"]["online_silhouette"]),
        ("silhouette: batch k-means", lambda r: r["segments"]["batch_silhouette"]),
        ("churn AUC: 4 workers", lambda r: r["scale_out"]["workers_4"]["churn_auc"]),
        ("churn AUC: 8 workers", lambda r: r["scale_out"]["workers_8"]["churn_auc"]),
        (
            "churn AUC: 8 workers, sync 10x slower",
            lambda r: r["scale_out"]["workers_8_slow_sync"]["churn_auc"],
        ),
        ("hit rate@10: 4 workers", lambda r: r["scale_out"]["workers_4"]["hit_rate"]),
        ("hit rate@10: 8 workers", lambda r: r["scale_out"]["workers_8"]["hit_rate"]),
        (
            "hit rate@10: 8 workers, sync 10x slower",
            lambda r: r["scale_out"]["workers_8_slow_sync"]["hit_rate"],
        ),
        ("90d spend Spearman: online", lambda r: r["lifetime"]["online_spearman"]),
        ("90d spend Spearman: historic spend", lambda r: r["lifetime"]["historic_spend_spearman"]),
        ("90d spend Spearman: batch BG/NBD+GG", lambda r: r["lifetime"]["batch_bgnbd_gg_spearman"]),
        ("top-decile capture: online", lambda r: r["lifetime"]["online_top_decile_capture"]),
        (
            "top-decile capture: historic spend",
            lambda r: r["lifetime"]["historic_spend_top_decile_capture"],
        ),
        (
            "top-decile capture: batch BG/NBD+GG",
            lambda r: r["lifetime"]["batch_bgnbd_gg_top_decile_capture"],
        ),
        ("90d spend MAE: online", lambda r: r["lifetime"]["online_mae"]),
        ("90d spend MAE: historic spend", lambda r: r["lifetime"]["historic_spend_mae"]),
        ("90d spend MAE: batch BG/NBD+GG", lambda r: r["lifetime"]["batch_bgnbd_gg_mae"]),
        ("90d orders MAE: online", lambda r: r["lifetime"]["online_orders_mae"]),
        ("90d orders MAE: batch BG/NBD", lambda r: r["lifetime"]["batch_bgnbd_orders_mae"]),
        ("mean p_alive (online)", lambda r: r["lifetime"]["online_mean_p_alive"]),
        (
            "churn alerts /1000 customers/month: default",
            lambda r: r["alerts"]["default"]["churn_alerts_per_1000_customers_per_month"],
        ),
        (
            "churn alerts /1000 customers/month: no value bar",
            lambda r: r["alerts"]["no_value_bar"]["churn_alerts_per_1000_customers_per_month"],
        ),
        (
            "churn alerts /1000 customers/month: before",
            lambda r: r["alerts"]["before"]["churn_alerts_per_1000_customers_per_month"],
        ),
        ("churn alerts: default", lambda r: r["alerts"]["default"]["churn_alerts"]),
        ("churn alerts: before", lambda r: r["alerts"]["before"]["churn_alerts"]),
        ("churn alert precision: default", lambda r: r["alerts"]["default"]["precision"]),
        ("churn alert precision: before", lambda r: r["alerts"]["before"]["precision"]),
        (
            "churn alert precision: no value bar",
            lambda r: r["alerts"]["no_value_bar"]["precision"],
        ),
        (
            "lost revenue covered: default",
            lambda r: r["alerts"]["default"]["lost_revenue_covered"],
        ),
        (
            "lost revenue covered: no value bar",
            lambda r: r["alerts"]["no_value_bar"]["lost_revenue_covered"],
        ),
        (
            "lost revenue covered: before",
            lambda r: r["alerts"]["before"]["lost_revenue_covered"],
        ),
        (
            "segment_change alerts: default",
            lambda r: r["alerts"]["default"]["segment_change_alerts"],
        ),
        (
            "segment_change alerts: before",
            lambda r: r["alerts"]["before"]["segment_change_alerts"],
        ),
        ("live churn AUC (closed cohorts) at T", lambda r: r["live_quality"]["cohort_churn_auc"]),
        ("backtest seconds (events before T)", lambda r: r["backtest_seconds"]),
    ]
    for label, get in lines:
        cells = []
        for report in reports:
            value = get(report)
            cells.append(f"{value:.3f}" if isinstance(value, float) else f"{value:,}")
        table.add_row(label, *cells)
    console.print(table)
    sweep = Table(title="Churn alerts by value-at-risk bar (the run without one, filtered)")
    sweep.add_column("bar")
    for report in reports:
        for column in ("/1000/month", "precision", "lost revenue"):
            sweep.add_column(f"{report['cutoff']} {column}", justify="right")
    for bar in VALUE_AT_RISK_SWEEP:
        cells = []
        for report in reports:
            row = report["alerts"]["value_at_risk_sweep"][str(bar)]
            cells += [
                f"{row['churn_alerts_per_1000_customers_per_month']:.0f}",
                f"{row['precision']:.3f}",
                f"{row['lost_revenue_covered']:.3f}",
            ]
        sweep.add_row(f"{bar:,}", *cells)
    console.print(sweep)
    for report in reports:
        targets = report["targets"]
        console.print(
            f"as of {report['cutoff']}: churn target "
            f"{'met' if targets['churn_target_met'] else 'MISSED'}, recommendation target "
            f"{'met' if targets['recommendation_target_met'] else 'MISSED'}, segment target "
            f"{'met' if targets['segment_target_met'] else 'MISSED'}, scale-out target "
            f"{'met' if targets['scale_out_target_met'] else 'MISSED'}, lifetime target "
            f"{'met' if targets['lifetime_target_met'] else 'MISSED'}, live AUC within 0.05 "
            f"{'yes' if targets['live_auc_within_0_05'] else 'NO'}"
        )
