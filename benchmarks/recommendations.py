"""Recommendations with the product catalogue: the hybrid against today's recommender.

    python benchmarks/recommendations.py [--data PATH] [--cutoff 2011-09-09 --cutoff 2011-06-01]

For each cutoff T, on Online Retail (catalogue: ``crm-scorer items --preset online-retail``,
each item's most common description and median price), two backtests of every event before
T (``crm-scorer backtest``'s code path, 8 partitions): today's recommender with no
catalogue, and the same with the catalogue read first. The catalogue holds the items first
sold before T + 90 days: what the shop lists during the 90 days judged (items launched in
that window are listed from T on: a shop lists a product before its first sale).

Judged on what customers bought in (T, T+90d] that they had not bought before T:

* hit rate@10 and recall@10 of the hybrid for a sweep of content weights (the factor,
  popularity and co-purchase weights stay 2.0, 0.3 and 4.0), of today's recommender, of global
  popularity, of batch item-item collaborative filtering, and of batch RP3beta and EASE with
  their beta and lambda chosen on the 90 days before T (``quality.py``'s baselines,
  ``quality_sections.py`` and ``batch_recommenders.py``);
* new items: recall@10 on the purchases of items first sold after T (today's recommender
  cannot reach them at all), over the customers who bought one;
* unavailable items: the top-10 item of most customers' lists marked unavailable, and the
  share of customers whose next lists still hold it (must be 0).

Prints a table and writes benchmarks/results/recommendations.json.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.online_retail_cli import online_retail_arguments  # noqa: E402
from benchmarks.quality_sections import HORIZON, K, recommendation_section  # noqa: E402
from online_models.evaluation.history import PurchaseHistory as History  # noqa: E402
from online_models.scoring.scorer import CustomerScorer, ScorerConfig  # noqa: E402
from streams.commands.backtest import Backtest, run_backtest  # noqa: E402
from streams.commands.items import load_catalogue  # noqa: E402
from streams.commands.report.outcomes import history_of  # noqa: E402
from streams.commands.transactions import load_transactions  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "recommendations.json"
CUTOFFS = ("2011-09-09", "2011-06-01")
PARTITIONS = 8


def ranked_lists(run: Backtest, scorer: CustomerScorer) -> SimpleNamespace:
    """Every customer's top-K now, ranked together, as a backtest's rows."""
    customers = sorted(run.states)
    lists = scorer.recommend_many([(c, run.states[c]) for c in customers])
    pairs = zip(customers, lists, strict=True)
    rows = [SimpleNamespace(customer_id=c, recommendations=r) for c, r in pairs]
    return SimpleNamespace(rows=rows)


def fresh_lists(run: Backtest, scorer: CustomerScorer) -> SimpleNamespace:
    """Every customer's top-K ranked now by the served arm (no list kept from before)."""
    customers = sorted(run.states)
    lists = scorer._rank([run.states[c] for c in customers])
    pairs = zip(customers, lists, strict=True)
    rows = [SimpleNamespace(customer_id=c, recommendations=r) for c, r in pairs]
    return SimpleNamespace(rows=rows)


def new_items_recall(history: History, t: float, first_sold: dict[str, float], lists: Any) -> dict:
    """Recall@10 on purchases in (T, T+90d] of items first sold after T."""
    end = t + HORIZON.total_seconds()
    online = {row.customer_id: set(row.recommendations[:K]) for row in lists.rows}
    recalls = []
    for customer in history.buyers_before(t):
        bought = history.items_between(customer, t, end)
        new = {item for item in bought if first_sold.get(item, 0.0) > t}
        if new:
            recalls.append(len(online.get(customer, set()) & new) / len(new))
    return {"customers": len(recalls), "recall": float(np.mean(recalls)) if recalls else 0.0}


def unavailable_check(run: Backtest, scorer: CustomerScorer) -> dict[str, Any]:
    """Mark the most recommended item unavailable; who still gets it next?"""
    before = ranked_lists(run, scorer)
    counts = Counter(item for row in before.rows for item in row.recommendations)
    item, holders = counts.most_common(1)[0]
    catalogue = scorer.catalogue
    kept = catalogue.version
    catalogue.upsert(item, {"name": item, "available": False})
    after = ranked_lists(run, scorer)
    still = sum(item in row.recommendations for row in after.rows)
    assert catalogue.version > kept
    return {"item": item, "lists_holding_it_before": holders, "lists_holding_it_after": still}


def evaluate(
    events: list[Any], history: History, items: list[Any], cutoff: str, console: Console
) -> dict[str, Any]:
    as_of = datetime.fromisoformat(cutoff).replace(tzinfo=UTC)
    t = as_of.timestamp()
    end = t + HORIZON.total_seconds()
    first_sold: dict[str, float] = {}
    for buys in history.buys.values():
        for when, item, _ in buys:
            first_sold[item] = min(first_sold.get(item, when), when)
    listed = [item for item in items if first_sold.get(item.item_id, np.inf) <= end]
    runs = {}
    for name, catalogue in (("today", None), ("hybrid", listed)):
        started = time.perf_counter()
        runs[name] = run_backtest(
            (e.event for e in events), as_of, ScorerConfig(), partitions=PARTITIONS,
            items=catalogue,
        )  # fmt: skip
        console.log(f"{cutoff} {name}: backtest in {time.perf_counter() - started:.1f}s")
    today = runs["today"]
    assert today.scorer is not None
    baseline = recommendation_section(history, t, ranked_lists(today, today.scorer))
    report: dict[str, Any] = {
        "cutoff": cutoff,
        "catalogue_items": len(listed),
        "items_first_sold_after_cutoff": sum(t < first_sold[i.item_id] <= end for i in listed),
        "customers": baseline["customers"],
        "popularity": {"hit_rate": baseline["popularity_hit_rate"],
                       "recall": baseline["popularity_recall"]},
        "item_item": {"hit_rate": baseline["item_item_hit_rate"],
                      "recall": baseline["item_item_recall"]},
        "rp3beta": {"hit_rate": baseline["rp3beta_hit_rate"], "recall": baseline["rp3beta_recall"],
                    "beta": baseline["rp3beta_beta"]},
        "ease": {"hit_rate": baseline["ease_hit_rate"], "recall": baseline["ease_recall"],
                 "lambda": baseline["ease_lambda"],
                 "validation_hit_rate_by_lambda": baseline["ease_validation_hit_rate_by_lambda"],
                 "judged_hit_rate_by_lambda_hindsight":
                     baseline["ease_judged_hit_rate_by_lambda_hindsight"]},
        "today": {"hit_rate": baseline["online_hit_rate"], "recall": baseline["online_recall"],
                  "new_items": new_items_recall(history, t, first_sold,
                                                ranked_lists(today, today.scorer))},
        "backtest_seconds": {name: round(run.seconds, 1) for name, run in runs.items()},
    }  # fmt: skip
    hybrid = runs["hybrid"]
    scorer = hybrid.scorer
    assert scorer is not None
    recommender = scorer.recommender
    # Every arm of the learned blend, each ranking every customer afresh, and the arm served.
    served = recommender.arm
    report["served_arm"] = recommender.arms[served].name
    arms = {}
    for n, arm in enumerate(recommender.arms):
        recommender.arm = n
        lists = fresh_lists(hybrid, scorer)
        judged = recommendation_section(history, t, lists)
        arms[arm.name] = {
            "hit_rate": judged["online_hit_rate"],
            "recall": judged["online_recall"],
            "new_items": new_items_recall(history, t, first_sold, lists),
        }
    recommender.arm = served
    report["hybrid_by_arm"] = arms
    lists = ranked_lists(hybrid, scorer)
    judged = recommendation_section(history, t, lists)
    report["hybrid"] = {
        "hit_rate": judged["online_hit_rate"],
        "recall": judged["online_recall"],
        "new_items": new_items_recall(history, t, first_sold, lists),
    }
    fit = recommender._ease_fit
    report["ease_fit"] = (
        None if fit is None else {"items": len(fit.items), "weights": len(fit.refs),
                                  "pairs": fit.pairs, "fitted_at": fit.fitted_at}
    )  # fmt: skip
    report["unavailable"] = unavailable_check(hybrid, scorer)
    popularity = max(report["popularity"]["hit_rate"], 1e-9)
    report["hybrid_vs_popularity"] = report["hybrid"]["hit_rate"] / popularity
    report["today_vs_popularity"] = report["today"]["hit_rate"] / popularity
    ease = max(
        report["ease"]["hit_rate"], *report["ease"]["judged_hit_rate_by_lambda_hindsight"].values()
    )
    report["served_vs_best_ease"] = report["hybrid"]["hit_rate"] - ease
    report["target_met"] = report["served_vs_best_ease"] >= 0
    return report


def show(reports: list[dict[str, Any]], console: Console) -> None:
    table = Table(title=f"Recommendations on Online Retail, next 90 days (k={K})")
    table.add_column("measure")
    for report in reports:
        table.add_column(f"cutoff {report['cutoff']}", justify="right")

    def row(label: str, get: Any, fmt: str = "{:.3f}") -> None:
        table.add_row(label, *(fmt.format(get(r)) for r in reports))

    row("catalogue items (first sold after T)", lambda r: f"{r['catalogue_items']:,} "
        f"({r['items_first_sold_after_cutoff']:,})", "{}")  # fmt: skip
    row("hit rate@10: the stream's recommender, served", lambda r: r["hybrid"]["hit_rate"])
    row("hit rate@10: today's recommender", lambda r: r["today"]["hit_rate"])
    row("hit rate@10: popularity", lambda r: r["popularity"]["hit_rate"])
    row("hit rate@10: batch item-item", lambda r: r["item_item"]["hit_rate"])
    row("hit rate@10: batch RP3beta (beta chosen before T)", lambda r: r["rp3beta"]["hit_rate"])
    row("hit rate@10: batch EASE (lambda chosen before T)", lambda r: r["ease"]["hit_rate"])
    row("EASE lambda chosen before T", lambda r: r["ease"]["lambda"], "{:g}")
    row(
        "served - the best EASE (any lambda, target >= 0)",
        lambda r: r["served_vs_best_ease"],
        "{:+.3f}",
    )
    row("served / popularity", lambda r: r["hybrid_vs_popularity"], "{:.2f}x")
    row("today / popularity", lambda r: r["today_vs_popularity"], "{:.2f}x")
    row("recall@10: the stream's recommender, served", lambda r: r["hybrid"]["recall"])
    row("recall@10: today's recommender", lambda r: r["today"]["recall"])
    row("recall@10: popularity", lambda r: r["popularity"]["recall"])
    row("recall@10: batch item-item", lambda r: r["item_item"]["recall"])
    row("recall@10: batch RP3beta", lambda r: r["rp3beta"]["recall"])
    row("recall@10: batch EASE", lambda r: r["ease"]["recall"])
    row("new items recall@10: served", lambda r: r["hybrid"]["new_items"]["recall"])
    row("new items recall@10: today's", lambda r: r["today"]["new_items"]["recall"])
    row("arm served (learned from the stream's outcomes)", lambda r: r["served_arm"], "{}")
    for arm in reports[0]["hybrid_by_arm"]:
        row(f"hit rate / recall / new-item recall, arm {arm}",
            lambda r, a=arm: f"{r['hybrid_by_arm'][a]['hit_rate']:.3f} / "
            f"{r['hybrid_by_arm'][a]['recall']:.3f} / "
            f"{r['hybrid_by_arm'][a]['new_items']['recall']:.3f}", "{}")  # fmt: skip
    row("lists with the unavailable item, before / after",
        lambda r: f"{r['unavailable']['lists_holding_it_before']:,} / "
        f"{r['unavailable']['lists_holding_it_after']:,}", "{}")  # fmt: skip
    console.print(table)


def main() -> None:
    args, console = online_retail_arguments(__doc__.splitlines()[0], RESULTS)
    threadpool_limits(limits=1, user_api="blas")  # as the worker and the backtest command
    loaded = load_transactions(args.data, preset="online-retail")
    history = history_of(loaded.events)
    catalogue = load_catalogue(args.data, preset="online-retail")
    console.log(f"{len(loaded.events):,} events, {len(catalogue.items):,} catalogue items")
    reports = [
        evaluate(loaded.events, history, catalogue.items, cutoff, console)
        for cutoff in args.cutoff or CUTOFFS
    ]
    show(reports, console)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "command": "python benchmarks/recommendations.py",
        "data": args.data.name,
        "reports": reports,
        "python": platform.python_version(),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.write_text(json.dumps(document, indent=2, default=float) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
