"""``crm-scorer backtest --report``: the backtest's scores judged on the file's later events,
as one self-contained HTML page (the plots need the ``report`` extra, matplotlib)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.errors import CrmScorerError

if TYPE_CHECKING:
    from online_models.evaluation.history import PurchaseHistory
    from streams.commands.backtest import Backtest

__all__ = ["PlottingMissing", "require_plotting", "write_backtest_report"]

logger = logging.getLogger(__name__)


class PlottingMissing(CrmScorerError):
    """The report's plotting library is not installed."""


def require_plotting() -> None:
    """Raise :class:`PlottingMissing`, saying how to install it, when matplotlib is missing
    (checked before a backtest, not after it)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        msg = (
            "--report draws its plots with matplotlib, which is not installed: "
            "pip install 'crm-scorer[report]' (or pip install matplotlib)"
        )
        raise PlottingMissing(msg) from None


def write_backtest_report(
    path: Path, run: Backtest, history: PurchaseHistory, source: str, horizon_days: float
) -> list[str]:
    """Judge ``run`` on ``history``'s purchases after its cutoff and write the page to
    ``path``; returns why any part of it has no outcomes."""
    # matplotlib and the judging load only when a report is asked for.
    from streams.commands.report.judging import judge
    from streams.commands.report.page import write_report

    judgement = judge(run, history, horizon_days)
    write_report(path, judgement, run, source)
    return judgement.missing
