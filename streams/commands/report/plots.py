"""The report's plots, drawn with matplotlib (the ``report`` extra) and inlined as PNG."""

from __future__ import annotations

import base64
import io
import logging
from typing import TYPE_CHECKING, Literal

import numpy as np
from matplotlib.figure import Figure

from streams.commands.report.judging import (
    AlertJudgement,
    ChurnJudgement,
    RecommendationJudgement,
    SegmentJudgement,
    ValueJudgement,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "alerts_plot",
    "calibration_plot",
    "gains_plot",
    "recommendations_plot",
    "roc_plot",
    "segment_colors",
    "segments_plot",
]

logger = logging.getLogger(__name__)

SIZE = (6.0, 4.2)
DPI = 90
#: Each segment's colour in the map and its table, in the table's order.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
)  # fmt: skip


def _axes(title: str, size: tuple[float, float] = SIZE) -> tuple[Figure, Axes]:
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=11)
    axes.grid(True, alpha=0.3)
    return figure, axes


def _png(figure: Figure) -> str:
    """The figure as a ``data:`` URI of a PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _finish(
    axes: Axes,
    diagonal: str,
    top: float,
    x: str,
    y: str,
    where: Literal["lower right", "upper left"],
) -> None:
    """The chance line from (0, 0) to (``top``, ``top``), the axes' labels and the legend."""
    axes.plot([0, top], [0, top], ls="--", color="grey", lw=1, label=diagonal)
    axes.set_xlabel(x)
    axes.set_ylabel(y)
    axes.legend(loc=where, fontsize=8)


def roc_plot(churn: ChurnJudgement) -> str:
    figure, axes = _axes("Churn: ROC curve")
    for name, (fpr, tpr) in churn.roc.items():
        axes.plot(
            fpr,
            tpr,
            label=f"{name} (AUC {churn.auc[name]:.3f})",
            lw=2 if name == "churn_risk" else 1.2,
        )
    _finish(axes, "random (AUC 0.5)", 1, "false positive rate (stayed, flagged)",
            "true positive rate (churned, flagged)", "lower right")  # fmt: skip
    return _png(figure)


def calibration_plot(churn: ChurnJudgement) -> str:
    figure, axes = _axes("Churn: calibration of churn_risk")
    bins = churn.calibration
    sizes = 20 + 300 * bins.customers / max(int(bins.customers.max()), 1)
    axes.plot(bins.predicted, bins.observed, color="#1f77b4", lw=1.2)
    axes.scatter(bins.predicted, bins.observed, s=sizes, color="#1f77b4", alpha=0.7,
                 label="bins of churn_risk (area: customers)")  # fmt: skip
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    _finish(axes, "perfectly calibrated", 1, "predicted churn_risk (bin mean)",
            "share who bought nothing after the cutoff", "upper left")  # fmt: skip
    return _png(figure)


def gains_plot(value: ValueJudgement) -> str:
    figure, axes = _axes("Value: cumulative gains of the next period's revenue")
    for name, (x, y) in value.gains.items():
        axes.plot(100 * x, 100 * y, label=f"by {name} (Spearman {value.spearman[name]:.3f})",
                  lw=2 if name == "predicted_clv" else 1.2)  # fmt: skip
    _finish(axes, "at random", 100, "top x% of customers", "% of the revenue after the cutoff",
            "lower right")  # fmt: skip
    return _png(figure)


def segment_colors(segments: SegmentJudgement) -> dict[int, str]:
    return {row["segment"]: PALETTE[i % len(PALETTE)] for i, row in enumerate(segments.table)}


def segments_plot(segments: SegmentJudgement) -> str:
    figure, axes = _axes("Segments: customers on the first two principal components", (7.0, 5.0))
    colors = segment_colors(segments)
    xy = segments.coordinates
    for row in segments.table:
        members = (segments.segments == row["segment"]) & ~segments.outliers
        axes.scatter(xy[members, 0], xy[members, 1], s=8, alpha=0.6, color=colors[row["segment"]],
                     label=f"{row['segment']}: {row['name']} ({row['customers']:,})")  # fmt: skip
    if segments.outliers.any():
        axes.scatter(xy[segments.outliers, 0], xy[segments.outliers, 1], s=22, marker="x",
                     color="black", lw=1,
                     label=f"outliers ({int(segments.outliers.sum()):,})")  # fmt: skip
    first, second = segments.explained[:2]
    axes.set_xlabel(f"first component ({100 * first:.0f}% of the variance)")
    axes.set_ylabel(f"second component ({100 * second:.0f}%)")
    axes.legend(fontsize=7, loc="best", markerscale=1.5)
    return _png(figure)


def recommendations_plot(recs: RecommendationJudgement) -> str:
    figure, axes = _axes("Recommendations at 10, customers who bought new items")
    names = list(recs.hit_rate)
    x = np.arange(len(names))
    for offset, (measure, values) in zip(
        (-0.2, 0.2), (("hit rate@10", recs.hit_rate), ("recall@10", recs.recall)), strict=True
    ):
        bars = axes.bar(x + offset, [values[n] for n in names], width=0.4, label=measure)
        axes.bar_label(bars, fmt="%.3f", fontsize=8)
    axes.set_xticks(x, names)
    axes.set_ylabel("share")
    axes.legend(fontsize=8)
    return _png(figure)


def alerts_plot(alerts: AlertJudgement) -> str:
    figure, axes = _axes("Alerts per week before the cutoff", (7.0, 4.2))
    # matplotlib's dates are days since 1970-01-01.
    days = np.asarray(alerts.weeks) / 86_400.0
    bottom = np.zeros(len(days))
    for kind, counts in alerts.counts.items():
        axes.bar(days, counts, width=6, bottom=bottom, label=kind, align="edge")
        bottom += np.array(counts)
    axes.xaxis_date()
    axes.set_ylabel("alerts")
    axes.legend(fontsize=8)
    figure.autofmt_xdate()
    return _png(figure)
