"""The quality benchmark's scale-out: the consumer groups it backtests besides one worker, and
their churn AUC and hit rate@10 next to one worker's.

Every backtest spreads customers over :data:`PARTITIONS` partitions as Kafka's default
partitioner would; the workers of a group sync through the group model every
:data:`SYNC_SECONDS` of event time (the default ``CRM_MODEL_SYNC_SECONDS``), or 10 times
slower in ``workers_8_slow_sync``.
"""

from __future__ import annotations

import logging
from typing import Any

from benchmarks.quality_sections import recommendation_section
from online_models.evaluation.history import PurchaseHistory as History
from streams.commands.backtest import Backtest

__all__ = ["GROUPS", "PARTITIONS", "SYNC_SECONDS", "scale_out_section"]

logger = logging.getLogger(__name__)

PARTITIONS = 8
SYNC_SECONDS = 15.0
# Scale-out runs: name -> (workers, seconds of event time between syncs).
GROUPS = {
    "workers_4": (4, SYNC_SECONDS),
    "workers_8": (8, SYNC_SECONDS),
    "workers_8_slow_sync": (8, 10 * SYNC_SECONDS),
}


def scale_out_section(
    history: History,
    t: float,
    runs: dict[str, Backtest],
    churn: dict[str, Any],
    recommendations: dict[str, Any],
) -> dict[str, Any]:
    """Each of :data:`GROUPS`' churn AUC and hit rate@10 (``runs``: the cutoff's backtests by
    name) next to one worker's (``churn`` and ``recommendations``: its sections), and the
    group's backtest seconds and group model versions."""
    scale_out = {}
    for name in GROUPS:
        hit_rate = recommendation_section(history, t, runs[name])["online_hit_rate"]
        auc = churn[f"online_{name}_auc"]
        scale_out[name] = {
            "churn_auc": auc,
            "hit_rate": hit_rate,
            "churn_auc_vs_one_worker": auc - churn["online_logistic_auc"],
            "hit_rate_vs_one_worker": hit_rate - recommendations["online_hit_rate"],
            "seconds": round(runs[name].seconds, 1),
            "versions": runs[name].model_version,
        }
    return scale_out
