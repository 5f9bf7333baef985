"""Where Online Retail is and the command line of a benchmark on it: ``--data``, ``--cutoff``,
``--out`` (and ``--only`` one of its parts); ``quality.py`` and ``recommendations.py`` use it."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from rich.console import Console

__all__ = ["DATA", "online_retail_arguments"]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "online_retail" / "online_retail.csv.gz"


def online_retail_arguments(
    description: str, results: Path, parts: tuple[str, ...] = ()
) -> tuple[Any, Console]:
    """``--data``, ``--cutoff`` and ``--out`` of a benchmark on Online Retail (and ``--only``
    one of its ``parts``), and its console; exits naming the path when the data is missing."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--cutoff", action="append", help="ISO date; repeatable")
    parser.add_argument("--out", type=Path, default=results)
    if parts:
        parser.add_argument("--only", choices=parts, help="run this part alone")
    if "segments" in parts:
        parser.add_argument(
            "--model", action="append", choices=("kmeans", "density"),
            help="with --only segments: this segmentation only (repeatable; default both)",
        )  # fmt: skip
        parser.add_argument(
            "--workers", type=int, default=0,
            help="with --only segments: run each segmentation again by this many workers; "
            "with --only core: the value forecasts",
        )  # fmt: skip
        parser.add_argument(
            "--no-loners", action="store_true",
            help="with --only segments: skip the k-means run of unusual customers alone",
        )  # fmt: skip
    args = parser.parse_args()
    console = Console()
    if not args.data.is_file():
        console.print(f"[red]no data at {args.data}: see the README's Quality section")
        raise SystemExit(2)
    return args, console
