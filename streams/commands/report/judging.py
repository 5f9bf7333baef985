"""A backtest's scores judged on what its customers did after the cutoff, section by section:
the numbers and the curves the report page shows."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from online_models.customer.profile import SEGMENT_FEATURES
from online_models.evaluation.baselines import item_item_lists, popularity_lists
from online_models.evaluation.churn import bgnbd_churn_risk, churned, logistic_rfm_churn_risk
from online_models.evaluation.history import DAY, PurchaseHistory
from online_models.evaluation.measures import (
    Calibration,
    calibration,
    cumulative_gains,
    hit_rate_and_recall,
    roc_auc,
    roc_curve,
    spearman,
    top_share,
)
from online_models.evaluation.projection import principal_components
from streams.commands.backtest import Backtest

__all__ = ["Judgement", "K", "judge"]

logger = logging.getLogger(__name__)

K = 10
WEEK = 7 * DAY
#: The unscaled segment features the segment table shows the mean of, with their headings.
SEGMENT_COLUMNS = {
    "recency": "days since last order",
    "frequency": "orders",
    "monetary": "net spend",
    "engagement": "views + cart adds",
    "basket_spend": "spend per order",
}
#: The churn scores compared: the scorer's and the batch baselines'.
CHURN_MODELS = ("churn_risk", "logistic regression on RFM", "BG/NBD")


@dataclass
class ChurnJudgement:
    customers: int
    churn_rate: float
    roc: dict[str, tuple[np.ndarray, np.ndarray]]
    auc: dict[str, float]
    calibration: Calibration
    trained_on: int


@dataclass
class ValueJudgement:
    customers: int
    revenue_after: float
    gains: dict[str, tuple[np.ndarray, np.ndarray]]
    spearman: dict[str, float]
    top_decile: dict[str, float]


@dataclass
class SegmentJudgement:
    coordinates: np.ndarray
    segments: np.ndarray
    outliers: np.ndarray
    explained: tuple[float, ...]
    table: list[dict[str, Any]]


@dataclass
class RecommendationJudgement:
    customers_with_lists: int
    most_recommended: list[tuple[str, int]]
    judged: int = 0
    hit_rate: dict[str, float] = field(default_factory=dict)
    recall: dict[str, float] = field(default_factory=dict)


@dataclass
class AlertJudgement:
    weeks: list[float]  #: each week's Monday, epoch seconds
    counts: dict[str, list[int]]  #: alerts of each kind, a count per week


@dataclass
class Judgement:
    as_of: float
    horizon_days: float
    observed_days: float  #: days of the outcome window the file holds (0: it ends at T)
    customers: int
    segments: SegmentJudgement
    recommendations: RecommendationJudgement
    alerts: AlertJudgement
    churn: ChurnJudgement | None = None
    value: ValueJudgement | None = None
    missing: list[str] = field(default_factory=list)  #: why a section has no outcomes

    def numbers(self) -> dict[str, Any]:
        """Every number the page shows, for a machine to read."""
        recs = self.recommendations
        return {
            "as_of": self.as_of,
            "horizon_days": self.horizon_days,
            "observed_days": round(self.observed_days, 3),
            "customers": self.customers,
            "churn": None
            if self.churn is None
            else {
                "customers": self.churn.customers,
                "churn_rate": self.churn.churn_rate,
                "auc": self.churn.auc,
                "batch_train_customers": self.churn.trained_on,
            },
            "value": None
            if self.value is None
            else {
                "customers": self.value.customers,
                "revenue_after": self.value.revenue_after,
                "spearman": self.value.spearman,
                "top_decile_capture": self.value.top_decile,
            },
            "segments": self.segments.table,
            "recommendations": {
                "judged_customers": recs.judged,
                "hit_rate_at_10": recs.hit_rate,
                "recall_at_10": recs.recall,
                "most_recommended": dict(recs.most_recommended),
            },
            "alerts_per_kind": {kind: sum(counts) for kind, counts in self.alerts.counts.items()},
            "missing": self.missing,
        }


def judge(run: Backtest, history: PurchaseHistory, horizon_days: float = 90.0) -> Judgement:
    """Judge ``run``'s scores on ``history``'s purchases in the ``horizon_days`` after its
    cutoff; sections without outcomes are left out and :attr:`Judgement.missing` says why."""
    t = run.as_of
    observed = min(max(history.last_event - t, 0.0) / DAY, horizon_days)
    judgement = Judgement(
        as_of=t,
        horizon_days=horizon_days,
        observed_days=observed,
        customers=len(run.rows),
        segments=judge_segments(run),
        recommendations=RecommendationJudgement(
            sum(1 for row in run.rows if row.recommendations),
            Counter(item for row in run.rows for item in row.recommendations[:K]).most_common(15),
        ),
        alerts=judge_alerts(run),
    )
    buyers = [c for c in history.buyers_before(t) if c in run.states]
    if observed <= 0:
        judgement.missing.append(
            "The file ends at the cutoff: no purchase after it tells who churned, what they "
            "spent or what they bought, so churn, value and the recommendations' hits cannot "
            "be judged. Back-test with an earlier --as-of to see them."
        )
        return judgement
    if observed < horizon_days:
        judgement.missing.append(
            f"The file holds {observed:.0f} of the {horizon_days:.0f} days after the cutoff: "
            "outcomes are judged over those days only."
        )
    if len(buyers) < 2:
        judgement.missing.append("Fewer than two customers bought before the cutoff.")
        return judgement
    rows = {row.customer_id: row for row in run.rows}
    judgement.churn = judge_churn(rows, history, buyers, t, observed)
    if len(judgement.churn.auc) < len(CHURN_MODELS):
        judgement.missing.append(
            f"Too few customers bought before {observed:.0f} days ahead of the cutoff, or all "
            "of them alike, to train the logistic regression on RFM: it is left out."
        )
    judgement.value = judge_value(rows, history, buyers, t, observed)
    judge_recommendations(judgement.recommendations, rows, history, buyers, t, observed)
    return judgement


def judge_churn(
    rows: dict[str, Any], history: PurchaseHistory, buyers: list[str], t: float, days: float
) -> ChurnJudgement:
    labels = churned(history, buyers, t, days)
    logistic, trained_on = logistic_rfm_churn_risk(history, buyers, t, days)
    risks = {
        "churn_risk": np.array([rows[c].score.churn_risk for c in buyers]),
        "logistic regression on RFM": logistic,
        "BG/NBD": bgnbd_churn_risk(history, buyers, t, days),
    }
    usable = {name: risk for name, risk in risks.items() if not np.isnan(risk).any()}
    return ChurnJudgement(
        customers=len(buyers),
        churn_rate=float(labels.mean()),
        roc={name: roc_curve(labels, risk) for name, risk in usable.items()},
        auc={name: roc_auc(labels, risk) for name, risk in usable.items()},
        calibration=calibration(labels, risks["churn_risk"]),
        trained_on=trained_on,
    )


def judge_value(
    rows: dict[str, Any], history: PurchaseHistory, buyers: list[str], t: float, days: float
) -> ValueJudgement:
    spend_after = np.array([history.spend_between(c, t, t + days * DAY) for c in buyers])
    rankings = {
        "predicted_clv": np.array([rows[c].score.predicted_clv for c in buyers]),
        "historic spend": np.array([history.summary(c, t)[4] for c in buyers]),
    }
    gains = {name: cumulative_gains(r, spend_after) for name, r in rankings.items()}
    return ValueJudgement(
        customers=len(buyers),
        revenue_after=float(spend_after.sum()),
        gains=gains,
        spearman={name: spearman(r, spend_after) for name, r in rankings.items()},
        top_decile={name: top_share(r, spend_after, 0.1) for name, r in rankings.items()},
    )


def judge_recommendations(
    judgement: RecommendationJudgement,
    rows: dict[str, Any],
    history: PurchaseHistory,
    buyers: list[str],
    t: float,
    days: float,
) -> None:
    owned = {c: history.items_before(c, t) for c in buyers}
    truth = {c: history.items_between(c, t, t + days * DAY) - owned[c] for c in buyers}
    judgement.judged = sum(1 for c in buyers if truth[c])
    if not judgement.judged:
        return
    lists = {
        "scorer": {c: rows[c].recommendations for c in buyers},
        "popularity": popularity_lists(owned, K),
        "item-item": item_item_lists(owned, K),
    }
    for name, ranked in lists.items():
        judgement.hit_rate[name], judgement.recall[name] = hit_rate_and_recall(ranked, truth, K)


def judge_segments(run: Backtest) -> SegmentJudgement:
    t = run.as_of
    customers = [row.customer_id for row in run.rows]
    profiles = [run.states[c].profile for c in customers]
    features = np.array(
        [[p.segment_features(t)[name] for name in SEGMENT_FEATURES] for p in profiles]
    ).reshape(-1, len(SEGMENT_FEATURES))
    coordinates, explained = principal_components(features, 2)
    segments = np.array([row.score.segment for row in run.rows], dtype=int)
    outliers = np.array([row.score.segment_outlier for row in run.rows], dtype=bool)
    names = {row.score.segment: row.score.segment_name for row in run.rows}
    quantities = [p.segment_quantities(t) for p in profiles]
    table = []
    for segment in sorted(names):
        members = np.flatnonzero(segments == segment)
        row: dict[str, Any] = {
            "segment": segment,
            "name": names[segment],
            "customers": len(members),
            "outliers": int(outliers[members].sum()),
        }
        for key in SEGMENT_COLUMNS:
            row[key] = float(np.mean([quantities[i][key] for i in members]))
        table.append(row)
    return SegmentJudgement(coordinates, segments, outliers, explained, table)


def judge_alerts(run: Backtest) -> AlertJudgement:
    # Weeks start on Monday (1970-01-01 was a Thursday).
    monday = 4 * DAY
    counts: dict[str, Counter[float]] = {}
    for _, kind, when, _ in run.alert_log:
        if when < run.as_of:
            week = monday + ((when - monday) // WEEK) * WEEK
            counts.setdefault(kind, Counter())[week] += 1
    found = [week for per_week in counts.values() for week in per_week]
    if not found:
        return AlertJudgement([], {})
    weeks = list(np.arange(min(found), max(found) + 1, WEEK).tolist())
    return AlertJudgement(
        weeks, {kind: [per_week[w] for w in weeks] for kind, per_week in sorted(counts.items())}
    )
