"""The quality benchmark's sections: one cutoff's backtest judged on what customers did in the
90 days after it, each family next to its batch baselines.

Churn (ROC AUC against batch logistic and boosted RFM models), recommendations (hit rate and
recall at :data:`K` against popularity, item-item, EASE and RP3beta), segments (silhouette and
inertia against batch k-means), lifetime (predicted spend and orders against historic spend and
a batch BG/NBD + Gamma-Gamma) and churn alerts (their rate, precision and the lost revenue they
covered, swept over :data:`VALUE_AT_RISK_SWEEP`); see ``benchmarks/quality.py``.
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import silhouette_score

from benchmarks.batch_recommenders import batch_lists
from benchmarks.segments_quality import inertia
from online_models.evaluation.baselines import (
    bgnbd_gamma_gamma,
    item_item_lists,
    popularity_lists,
)
from online_models.evaluation.churn import churned, logistic_rfm_churn_risk
from online_models.evaluation.history import PurchaseHistory as History
from online_models.evaluation.measures import (
    hit_rate_and_recall,
    roc_auc,
    spearman,
    top_share,
)
from streams.commands.backtest import Backtest

__all__ = [
    "DAY",
    "HORIZON",
    "VALUE_AT_RISK_SWEEP",
    "K",
    "alert_section",
    "churn_section",
    "lifetime_section",
    "recommendation_section",
    "segment_section",
]

logger = logging.getLogger(__name__)

HORIZON = timedelta(days=90)
# Value-at-risk bars the alert section compares (the events' currency, pounds here).
VALUE_AT_RISK_SWEEP = (0, 50, 100, 200, 300, 500, 1000, 2000)
K = 10
DAY = 86_400.0


def churn_section(history: History, t: float, runs: dict[str, Backtest]) -> dict[str, Any]:
    """AUC of the online scores and of batch RFM models trained at t - 90 days."""
    days = HORIZON.total_seconds() / DAY
    customers = history.buyers_before(t)
    labels = churned(history, customers, t, days)
    result: dict[str, Any] = {"customers": len(customers), "churn_rate": float(labels.mean())}
    for name, run in runs.items():
        risk = {row.customer_id: row.score.churn_risk for row in run.rows}
        scores = np.array([risk[c] for c in customers])
        result[f"online_{name}_auc"] = roc_auc(labels, scores)
    logistic, trained_on = logistic_rfm_churn_risk(history, customers, t, days)
    result["batch_logistic_auc"] = roc_auc(labels, logistic)
    train_at = t - HORIZON.total_seconds()
    train = history.buyers_before(train_at)
    boosted = HistGradientBoostingClassifier(random_state=0).fit(
        history.rfm_matrix(train, train_at), churned(history, train, train_at, days)
    )
    result["batch_boosted_auc"] = roc_auc(
        labels, boosted.predict_proba(history.rfm_matrix(customers, t))[:, 1]
    )
    result["batch_train_customers"] = trained_on
    return result


def recommendation_section(history: History, t: float, run: Backtest) -> dict[str, Any]:
    """Hit rate and recall at 10 of the online lists, popularity, batch item-item, and EASE
    and RP3beta tuned on the period before T (``batch_recommenders.py``)."""
    end = t + HORIZON.total_seconds()
    customers = history.buyers_before(t)
    owned = {c: history.items_before(c, t) for c in customers}
    truth = {c: history.items_between(c, t, end) - owned[c] for c in customers}
    batch = batch_lists(history, t)
    lists = {
        "online": {row.customer_id: row.recommendations for row in run.rows},
        "popularity": popularity_lists(owned, K),
        "item_item": item_item_lists(owned, K),
        "ease": batch.lists["ease"],
        "rp3beta": batch.lists["rp3beta"],
    }
    result: dict[str, Any] = {"customers": sum(1 for c in customers if truth[c]), **batch.summary()}
    for name, ranked in lists.items():
        result[f"{name}_hit_rate"], result[f"{name}_recall"] = hit_rate_and_recall(ranked, truth, K)
    return result


def segment_section(history: History, t: float, run: Backtest) -> dict[str, Any]:
    """Silhouette and inertia of the online segments and of batch k-means (same k)."""
    customers = history.buyers_before(t)
    segment = {row.customer_id: row.score.segment for row in run.rows}
    names = {row.score.segment: row.score.segment_name for row in run.rows}
    x = []
    for c in customers:
        recency, frequency, monetary, _ = history.rfm(c, t)
        # The scales the online segmenter uses (online_models.customer.profile.segment_features).
        x.append(
            [
                min(recency / 180.0, 1.5),
                min(math.log1p(frequency) / math.log1p(50.0), 1.5),
                min(math.log1p(monetary) / math.log1p(10_000.0), 1.5),
            ]
        )
    features = np.array(x)
    labels = np.array([segment[c] for c in customers])
    k = len(set(labels.tolist()))
    if k < 2:
        return {"customers": len(customers), "k": k, "error": "one segment: nothing to compare"}
    batch = KMeans(n_clusters=k, n_init=10, random_state=0).fit(features)
    sizes = {names[s]: int((labels == s).sum()) for s in sorted(set(labels.tolist()))}
    return {
        "customers": len(customers),
        "k": k,
        "online_inertia": inertia(features, labels),
        "online_silhouette": float(silhouette_score(features, labels, random_state=0)),
        "batch_inertia": float(batch.inertia_),
        "batch_silhouette": float(silhouette_score(features, batch.labels_, random_state=0)),
        "online_segments": sizes,
    }


def lifetime_section(history: History, t: float, run: Backtest) -> dict[str, Any]:
    """Predicted spend and orders over the next 90 days against what customers did, next to
    ranking by historic spend and a batch BG/NBD + Gamma-Gamma fitted on everything before t.

    ``online`` is the value forecast the scorer serves (``predicted_clv`` at the horizon's
    rate): the value regression's once warmed up, BG/NBD + Gamma-Gamma's before;
    ``online_bgnbd_gg`` is the stream's BG/NBD + Gamma-Gamma alone."""
    end = t + HORIZON.total_seconds()
    customers = history.buyers_before(t)
    spend_after = np.array([history.spend_between(c, t, end) for c in customers])
    orders_after = np.array([history.baskets_between(c, t, end) for c in customers], float)
    summaries = np.array([history.summary(c, t) for c in customers])  # x, t_x, T, mean, spend
    x, t_x, age, mean, spend = summaries.T
    horizon = HORIZON.total_seconds() / DAY
    batch_orders, batch_spend = bgnbd_gamma_gamma(x, t_x, age, mean, horizon)
    assert run.scorer is not None
    lifetime, states = run.scorer.lifetime_model, run.states

    def outlook(customer: str) -> Any:
        p = states[customer].profile
        return lifetime.predict(first=p.first_order_at, last=p.last_order_at, orders=p.orders,
                                spend=p.net_monetary, now=t, horizon_days=horizon,
                                clv_days=horizon)  # fmt: skip

    online = {c: outlook(c) for c in customers}
    predictions = {
        "online": run.scorer.value_forecasts([states[c] for c in customers], t),
        "online_bgnbd_gg": np.array([online[c].predicted_clv for c in customers]),
        "historic_spend": spend * horizon / np.maximum(age, horizon),
        "batch_bgnbd_gg": batch_spend,
    }
    result: dict[str, Any] = {"customers": len(customers), "revenue_after": spend_after.sum()}
    for name, predicted in predictions.items():
        # Historic spend ranks by the spend itself; as a prediction of 90 days' spend it is
        # the customer's daily rate times 90.
        ranking = spend if name == "historic_spend" else predicted
        result[f"{name}_spearman"] = spearman(ranking, spend_after)
        result[f"{name}_mae"] = float(np.abs(predicted - spend_after).mean())
        result[f"{name}_top_decile_capture"] = top_share(ranking, spend_after, 0.1)
    online_orders = np.array([online[c].expected_orders for c in customers])
    result["online_orders_mae"] = float(np.abs(online_orders - orders_after).mean())
    result["batch_bgnbd_orders_mae"] = float(np.abs(batch_orders - orders_after).mean())
    result["online_mean_p_alive"] = float(np.mean([online[c].p_alive for c in customers]))
    result["value_labels"] = run.scorer.spend_model.labels_learned
    result["value_regression_served"] = run.scorer.spend_model.ready
    result["live_value_rank_correlation"] = run.scorer.value_quality.cohort_rank_correlation
    return result


def alert_section(history: History, t: float, runs: dict[str, Backtest]) -> dict[str, Any]:
    """Churn alerts per 1,000 customers per month, their precision (no purchase within 90
    days after the alert) and the revenue of the customers lost after t that they covered (an
    alert within the 90 days before t), for the default policy and without the value bar."""
    horizon = HORIZON.total_seconds()
    lost = [c for c in history.buyers_before(t) if not history.bought_between(c, t, t + horizon)]
    lost_revenue = {c: history.spend_between(c, t - 365 * DAY, t) for c in lost}
    result: dict[str, Any] = {"lost_customers": len(lost)}

    def judged(churn: list[tuple[str, float]], customers: int, months: float) -> dict[str, Any]:
        right = sum(not history.bought_between(c, when, when + horizon) for c, when in churn)
        recent = {c for c, when in churn if t - horizon <= when < t}
        covered = sum(lost_revenue[c] for c in lost if c in recent)
        return {
            "churn_alerts": len(churn),
            "churn_alerts_per_1000_customers_per_month": 1000 * len(churn) / customers / months,
            "precision": right / len(churn) if churn else math.nan,
            "lost_revenue_covered": covered / max(sum(lost_revenue.values()), 1e-9),
        }

    for name, run in runs.items():
        churn = [(c, when) for c, kind, when, _ in run.alert_log if kind == "churn_risk"]
        first = min((when for _, when in churn), default=t)
        months = max((t - first) / (30.44 * DAY), 1.0)
        segment = sum(1 for _, kind, _, _ in run.alert_log if kind == "segment_change")
        result[name] = {
            **judged(churn, len(run.rows), months),
            "segment_change_alerts": segment,
        }
        if name == "no_value_bar":
            # Where to set the bar: the alerts of the run without one whose value at risk
            # reaches each threshold (as if the bar had been there, cooldowns aside; a
            # cancellation's alert carries no value at risk and always counts).
            valued = [(c, when, value) for c, kind, when, value in run.alert_log
                      if kind == "churn_risk"]  # fmt: skip
            result["value_at_risk_sweep"] = {
                str(bar): judged(
                    [(c, when) for c, when, value in valued if value is None or value >= bar],
                    len(run.rows),
                    months,
                )
                for bar in VALUE_AT_RISK_SWEEP
            }
    return result
