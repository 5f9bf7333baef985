"""The segment benchmark's tables: every measure per cutoff and segmentation, the loners' run
and the outlier fence sweep, printed with rich."""

from __future__ import annotations

import logging
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.segment_outliers import FENCE_MADS

__all__ = ["OUTCOME_MEASURES", "show_fence_sweep", "show_loners", "show_segments"]

logger = logging.getLogger(__name__)


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
