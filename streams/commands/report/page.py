"""The report as one self-contained HTML page: every plot inlined, nothing fetched, nothing run.

Its numbers are in it as JSON too (``<script type="application/json" id="report-numbers">``,
data, never run), for a machine to read.
"""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streams.commands.backtest import Backtest
from streams.commands.report import plots
from streams.commands.report.judging import SEGMENT_COLUMNS, Judgement

__all__ = ["render_report", "write_report"]

logger = logging.getLogger(__name__)

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1180px; padding: 1em 2em;
       color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; }
section { margin-bottom: 2em; } .plots { display: flex; flex-wrap: wrap; gap: 1em; }
.plots img { border: 1px solid #eee; max-width: 100%; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { padding: 2px 10px; }
th { text-align: left; border-bottom: 1px solid #bbb; } td.n { text-align: right; }
tr:nth-child(even) td { background: #f6f6f6; }
.missing { background: #fff4d6; border-left: 4px solid #e0a800; padding: 0.5em 1em; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border-radius: 50%; }
.meta { color: #555; }
"""


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _number(value: float) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if value != value:
        return "n/a"
    # Shares and correlations to three places; days, orders and money as a reader counts them.
    return (
        f"{value:,.3f}"
        if abs(value) < 10
        else f"{value:,.1f}"
        if abs(value) < 1000
        else f"{value:,.0f}"
    )


def _table(headings: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headings)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_number(cell)}</td>'
            if isinstance(cell, int | float)
            else f"<td>{cell}</td>"
            for cell in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _missing(text: str) -> str:
    return f'<p class="missing">{html.escape(text)}</p>'


def _churn(judgement: Judgement) -> str:
    churn = judgement.churn
    if churn is None:
        return _missing("No outcomes after the cutoff: churn cannot be judged (see above).")
    rows = [[html.escape(name), auc] for name, auc in churn.auc.items()]
    return (
        f"<p>{churn.customers:,} customers who had bought before the cutoff; "
        f"{100 * churn.churn_rate:.1f}% bought nothing in the {judgement.observed_days:.0f} "
        f"days after it (churned). The logistic regression is trained on RFM at "
        f"{judgement.observed_days:.0f} days before the cutoff ({churn.trained_on:,} "
        "customers) with the labels of the days up to it; BG/NBD is fitted at the cutoff.</p>"
        + _table(["churn score", "ROC AUC"], rows)
        + '<div class="plots">'
        + _img(plots.roc_plot(churn), "ROC curves")
        + _img(plots.calibration_plot(churn), "calibration of churn_risk")
        + "</div>"
    )


def _value(judgement: Judgement) -> str:
    value = judgement.value
    if value is None:
        return _missing("No outcomes after the cutoff: value cannot be judged (see above).")
    rows = [
        [html.escape(name), value.spearman[name], value.top_decile[name]] for name in value.spearman
    ]
    return (
        f"<p>Revenue of the {value.customers:,} customers in the "
        f"{judgement.observed_days:.0f} days after the cutoff: {value.revenue_after:,.0f}. "
        "Spearman: rank correlation of the ranking with that revenue; top decile: the share "
        "of it the top 10% of customers hold.</p>"
        + _table(["ranked by", "Spearman", "top-decile capture"], rows)
        + '<div class="plots">'
        + _img(plots.gains_plot(value), "cumulative gains")
        + "</div>"
    )


def _segments(judgement: Judgement) -> str:
    segments = judgement.segments
    colors = plots.segment_colors(segments)
    rows = [
        [
            f'<span class="swatch" style="background:{colors[row["segment"]]}"></span> '
            f"{row['segment']}",
            html.escape(row["name"]),
            row["customers"],
            row["outliers"],
            *(row[key] for key in SEGMENT_COLUMNS),
        ]
        for row in segments.table
    ]
    headings = ["segment", "name", "customers", "outliers", *SEGMENT_COLUMNS.values()]
    return (
        f"<p>{judgement.customers:,} customers by their segment as of the cutoff, on the first "
        "two principal components of the segment features (crosses: outliers, who fit no "
        "segment). The table's features are means over each segment, unscaled.</p>"
        + '<div class="plots">'
        + _img(plots.segments_plot(segments), "segment map")
        + "</div>"
        + _table(headings, rows)
    )


def _recommendations(judgement: Judgement) -> str:
    recs = judgement.recommendations
    top = _table(
        ["item", "in the top 10 of", "share of customers"],
        [
            [html.escape(item), count, count / max(judgement.customers, 1)]
            for item, count in recs.most_recommended
        ],
    )
    if not recs.hit_rate:
        return (
            _missing(
                "No customer bought an item new to them after the cutoff: hit rate and "
                "recall cannot be judged."
            )
            + "<h3>Most recommended items</h3>"
            + top
        )
    rows = [[html.escape(name), recs.hit_rate[name], recs.recall[name]] for name in recs.hit_rate]
    return (
        f"<p>{recs.judged:,} customers bought items new to them after the cutoff; a hit is one "
        "of those among their 10 recommendations as of the cutoff.</p>"
        + _table(["recommender", "hit rate@10", "recall@10"], rows)
        + '<div class="plots">'
        + _img(plots.recommendations_plot(recs), "hit rate and recall")
        + f"<div><h3>Most recommended items</h3>{top}</div></div>"
    )


def _alerts(judgement: Judgement) -> str:
    alerts = judgement.alerts
    if not alerts.weeks:
        return "<p>No alert was raised before the cutoff.</p>"
    rows = [[html.escape(kind), sum(counts)] for kind, counts in alerts.counts.items()]
    return (
        f"<p>Alerts raised from {_iso(alerts.weeks[0])} to the cutoff, by kind, per week "
        "(weeks start on Monday).</p>"
        + _table(["kind", "alerts"], rows)
        + '<div class="plots">'
        + _img(plots.alerts_plot(alerts), "alerts per week")
        + "</div>"
    )


def render_report(judgement: Judgement, run: Backtest, source: str) -> str:
    """The page for ``run``'s scores of ``source`` judged as ``judgement`` says."""
    sections = {
        "churn": ("Churn", _churn),
        "value": ("Value", _value),
        "segments": ("Segments", _segments),
        "recommendations": ("Recommendations", _recommendations),
        "alerts": ("Alerts", _alerts),
    }
    body = "".join(
        f'<section id="{key}"><h2>{title}</h2>{render(judgement)}</section>'
        for key, (title, render) in sections.items()
    )
    notes = "".join(_missing(text) for text in judgement.missing)
    numbers = orjson.dumps(judgement.numbers(), option=orjson.OPT_SERIALIZE_NUMPY).decode()
    numbers = numbers.replace("</", "<\\/")  # a string holding "</script>" stays data
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>crm-scorer backtest report: {html.escape(source)}</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>Backtest report: {html.escape(source)}</h1>"
        f'<p class="meta">Scores as of {_iso(judgement.as_of)} from {run.events:,} events '
        f"({run.workers} worker(s), {run.rescores:,} re-scores of silent customers); "
        f"{judgement.customers:,} customers; judged on the {judgement.horizon_days:.0f} days "
        f"after the cutoff.</p>{notes}{body}"
        '<script type="application/json" id="report-numbers">'
        f"{numbers}</script></body></html>"
    )


def write_report(path: Path, judgement: Judgement, run: Backtest, source: str) -> None:
    """Write the page to ``path``."""
    path.write_text(render_report(judgement, run, source), encoding="utf-8")
