"""The engine benchmark's rows printed: one line per measured row, and the table of a run
(``benchmarks/engine.py``)."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["RATES", "print_row", "report"]


def print_row(row: dict[str, Any], label: str) -> None:
    print(
        f"{label:6s} batch {row['batch_size']:>6,}: {row['events_per_second']:6,.0f} events/s "
        f"({row['us_per_event']:,.0f} us), {row['rescores_per_second']:6,.0f} re-scores/s "
        f"({row['us_per_rescore']:,.0f} us), idle days {row['idle_rescores_per_second']:6,.0f}"
        f" re-scores/s ({row['us_per_idle_rescore']:,.0f} us)",
        flush=True,
    )


def report(document: dict[str, Any]) -> None:
    table = Table(title="The scoring core alone, one core, CPU time per kind of score")
    for column in _COLUMNS:
        table.add_column(column, justify="left" if column == "code" else "right")
    runs = [document.get("baseline"), {"commit": document["commit"], **document}]
    for run in (run for run in runs if run is not None):
        for row in run["results"]:
            table.add_row(run["commit"], f"{row['batch_size']:,}",
                          *(f"{row[key]:,.0f}" for key in RATES))  # fmt: skip
    if "baseline" in document:
        for before, after in zip(document["baseline"]["results"], document["results"], strict=True):
            ratios = after.get("after_over_before") or {
                key: after[key] / before[key] for key in RATES if before[key]
            }
            table.add_row("after / before", f"{after['batch_size']:,}",
                          *(f"{ratios[key]:.2f}" if key in ratios else "-"
                            for key in RATES))  # fmt: skip
    Console(width=None if sys.stdout.isatty() else 150).print(table)


_COLUMNS = (
    "code",
    "batch",
    "events/s",
    "us/event",
    "re-scores/s",
    "us/re-score",
    "idle days: re-scores/s",
    "us/idle re-score",
    "events/s, re-scores too",
)
RATES = (
    "events_per_second",
    "us_per_event",
    "rescores_per_second",
    "us_per_rescore",
    "idle_rescores_per_second",
    "us_per_idle_rescore",
    "events_per_second_with_rescores",
)
