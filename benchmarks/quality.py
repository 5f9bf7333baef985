"""Quality benchmark: the streaming scorer's backtest on Online Retail against batch baselines.

    python benchmarks/quality.py [--data PATH] [--cutoff 2011-09-09 --cutoff 2011-06-01]

For each cutoff T the scorer is backtested on every event before T (``crm-scorer backtest``'s
code path) and judged on what customers did in the 90 days after T:

* churn: ROC AUC of ``churn_risk`` for "no purchase in (T, T+90d]" over customers with a
  purchase before T, against a logistic regression and a gradient-boosted model trained in
  batch on RFM features at T-90d with labels from (T-90d, T] (the classic approach), and
  against the River challenger (Hoeffding adaptive tree) in place of the logistic model;
* recommendations: hit rate@10 and recall@10 on the items each customer bought in
  (T, T+90d] that they had not bought before T (the scorer does not recommend what a customer
  already owns, so neither do the baselines), against global popularity and batch item-item
  collaborative filtering (cosine over customer-item co-occurrence);
* segmentation: silhouette and within-cluster inertia of the online segments on the
  customers' RFM features at T, against batch k-means with the same k;
* scale-out: the same backtest split over 4 and 8 workers of one consumer group (customers
  over 8 partitions as Kafka's default partitioner would), syncing through the group model
  every 15 s of event time (the default ``CRM_MODEL_SYNC_SECONDS``) and 10 times slower:
  churn AUC and hit rate@10 next to one worker's;
* lifetime: predicted spend and orders over (T, T+90d] against what customers did, next to
  ranking by historic spend and a batch BG/NBD + Gamma-Gamma fitted at T;
* churn's ingredients: the logistic model alone and BG/NBD alone next to the served blend;
* alerts: churn alerts per 1,000 customers per month, their precision and the lost revenue
  they covered, with the default policy, without the value-at-risk bar, and as before the
  lifetime model (the logistic model's risk alone, no value bar, segment alerts for drifting
  by silence);
* the live gauge: the ROC AUC of closed one-day cohorts at T next to the cross-sectional AUC;
* segmentations: k-means and density segments side by side, against batch DBSCAN, their
  stability over a silent week and the synthetic unusual customers each flags
  (``benchmarks/segments_quality.py``); ``--only segments`` runs this part alone (about half
  an hour) and writes benchmarks/results/quality-segments.json.

The measures (AUC, Spearman, top-decile capture, hit rate and recall) and the logistic, BG/NBD,
popularity and item-item baselines are ``online_models/evaluation/``'s, the code
``crm-scorer backtest --report`` judges with.

Prints a table and writes benchmarks/results/quality.json. Needs the ``bench`` extra
(scikit-learn: the boosted baseline, k-means, silhouettes): ``pip install -e '.[bench]'``.

The sections are ``benchmarks/quality_sections.py``'s, the scale-out's groups
``benchmarks/quality_scale_out.py``'s, the targets ``benchmarks/quality_targets.py``'s, the
tables ``benchmarks/quality_report.py``'s and the command line
``benchmarks/online_retail_cli.py``'s.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.online_retail_cli import online_retail_arguments  # noqa: E402
from benchmarks.quality_report import show, show_core  # noqa: E402
from benchmarks.quality_scale_out import (  # noqa: E402
    GROUPS,
    PARTITIONS,
    SYNC_SECONDS,
    scale_out_section,
)
from benchmarks.quality_sections import (  # noqa: E402
    alert_section,
    churn_section,
    lifetime_section,
    recommendation_section,
    segment_section,
)
from benchmarks.quality_targets import judge, value_targets  # noqa: E402
from benchmarks.segments_quality import evaluate_segments  # noqa: E402
from benchmarks.segments_report import show_segments  # noqa: E402
from online_models.evaluation.history import PurchaseHistory as History  # noqa: E402
from online_models.scoring.scorer import ScorerConfig  # noqa: E402
from streams.commands.backtest import Backtest, run_backtest  # noqa: E402
from streams.commands.report.outcomes import history_of  # noqa: E402
from streams.commands.transactions import load_transactions  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "quality.json"
# The segments part alone (--only segments) writes its own file.
SEGMENT_RESULTS = ROOT / "benchmarks" / "results" / "quality-segments.json"
CORE_RESULTS = ROOT / "benchmarks" / "results" / "quality-core.json"
CUTOFFS = ("2011-09-09", "2011-06-01")


def _no_value_bar(config: ScorerConfig) -> ScorerConfig:
    return replace(config, alerts=replace(config.alerts, value_at_risk=0.0))


# Single-worker variants of the default scorer, each judged next to it.
VARIANTS = {
    # Churn alerts for every risky customer, whatever their predicted value.
    "no_value_bar": _no_value_bar,
    # As before the lifetime model: the logistic model's risk alone, every risky customer
    # alerted, segment alerts for drifting by silence too.
    "before": lambda config: replace(
        _no_value_bar(config),
        churn_logistic_weight=1.0,
        alerts=replace(_no_value_bar(config).alerts, segment_alert_on_silence=True),
    ),
    # BG/NBD's chance of no order within the horizon alone, as the churn risk.
    "bgnbd_alone": lambda config: replace(config, churn_logistic_weight=0.0),
}


def evaluate_core(
    events: list[Any], history: History, cutoff: str, console: Console, workers: int = 0
) -> dict[str, Any]:
    """The default scorer alone, one worker: churn, recommendations and value, against their
    batch baselines (``--only core``: the numbers a change to a model moves, in minutes);
    with ``workers``, the value forecasts again from that many workers of one group."""
    as_of = datetime.fromisoformat(cutoff).replace(tzinfo=UTC)
    t = as_of.timestamp()
    started = time.perf_counter()
    run = run_backtest(
        (e.event for e in events), as_of, ScorerConfig(), partitions=PARTITIONS,
        sync_seconds=SYNC_SECONDS,
    )  # fmt: skip
    console.log(f"{cutoff}: {run.events:,} events in {time.perf_counter() - started:.1f}s")
    churn = churn_section(history, t, {"logistic": run})
    report = {
        "cutoff": cutoff,
        "events_before_cutoff": run.events,
        "backtest_seconds": round(run.seconds, 1),
        "rescores": run.rescores,
        "churn": churn,
        "recommendations": recommendation_section(history, t, run),
        "lifetime": lifetime_section(history, t, run),
    }
    if workers > 1:
        started = time.perf_counter()
        group = run_backtest(
            (e.event for e in events), as_of, ScorerConfig(), workers=workers,
            partitions=PARTITIONS, sync_seconds=SYNC_SECONDS,
        )  # fmt: skip
        console.log(f"{cutoff}, {workers} workers: {time.perf_counter() - started:.1f}s")
        ranked = recommendation_section(history, t, group)
        report[f"recommendations_workers_{workers}"] = {
            key: ranked[key] for key in ("online_hit_rate", "online_recall")
        }
        value = lifetime_section(history, t, group)
        report[f"lifetime_workers_{workers}"] = {
            key: value[key] for key in (
                "online_spearman", "online_top_decile_capture", "online_mae", "value_labels",
            )
        }  # fmt: skip
    report["value_targets"] = value_targets(
        report["lifetime"], report.get(f"lifetime_workers_{workers}")
    )
    return report


def evaluate(events: list[Any], history: History, cutoff: str, console: Console) -> dict[str, Any]:
    as_of = datetime.fromisoformat(cutoff).replace(tzinfo=UTC)
    t = as_of.timestamp()
    runs: dict[str, Backtest] = {}
    plans = {"logistic": ("logistic", 1, SYNC_SECONDS)}
    plans["hoeffding_tree"] = ("hoeffding_tree", 1, SYNC_SECONDS)
    for name in VARIANTS:
        plans[name] = ("logistic", 1, SYNC_SECONDS)
    plans.update({name: ("logistic", *group) for name, group in GROUPS.items()})
    for name, (kind, workers, sync) in plans.items():
        started = time.perf_counter()
        config = replace(ScorerConfig(), churn_model=kind)
        if name in VARIANTS:
            config = VARIANTS[name](config)
        runs[name] = run_backtest(
            (e.event for e in events),
            as_of,
            config,
            workers=workers,
            partitions=PARTITIONS,
            sync_seconds=sync,
        )
        console.log(
            f"{cutoff} {name}: {runs[name].events:,} events, {runs[name].rescores:,} re-scores, "
            f"group model version {runs[name].model_version} in "
            f"{time.perf_counter() - started:.1f}s"
        )
    churn = churn_section(history, t, {k: v for k, v in runs.items() if k != "no_value_bar"})
    churn["online_logistic_alone_auc"] = churn.pop("online_before_auc")
    default = max(("logistic", "hoeffding_tree"), key=lambda kind: churn[f"online_{kind}_auc"])
    main = runs["logistic"]
    recommendations = recommendation_section(history, t, main)
    scale_out = scale_out_section(history, t, runs, churn, recommendations)
    assert main.scorer is not None
    report = {
        "cutoff": cutoff,
        "events_before_cutoff": main.events,
        "backtest_seconds": round(main.seconds, 1),
        "rescores": main.rescores,
        "default_churn_model": "logistic",
        "best_churn_model": default,
        "churn": churn,
        "recommendations": recommendations,
        "scale_out": scale_out,
        "lifetime": lifetime_section(history, t, main),
        "alerts": alert_section(
            history,
            t,
            {"default": main, "no_value_bar": runs["no_value_bar"], "before": runs["before"]},
        ),
        "segments": segment_section(history, t, main),
        "segmentations": evaluate_segments(
            events, cutoff, console, partitions=PARTITIONS, sync_seconds=SYNC_SECONDS
        ),
        "live_quality": {
            "rolling_churn_auc": main.scorer.quality.roc_auc,
            "cohort_churn_auc": main.scorer.quality.cohort_roc_auc,
            "rolling_hit_rate": main.scorer.recommendation_quality.hit_rate,
            "churn_drifts": main.scorer.quality.drifts,
            "labels": dict(main.labels),
            "alerts": dict(main.alerts),
        },
    }
    report["targets"] = judge(report)
    return report


def main() -> None:
    args, console = online_retail_arguments(__doc__.splitlines()[0], RESULTS, ("segments", "core"))
    started = time.perf_counter()
    loaded = load_transactions(args.data, preset="online-retail")
    console.log(f"loaded {len(loaded.events):,} events in {time.perf_counter() - started:.1f}s")
    command = "python benchmarks/quality.py"
    if args.only == "segments":
        command += " --only segments"
        command += "".join(f" --model {m}" for m in args.model or ())
        command += "".join(f" --cutoff {c}" for c in args.cutoff or ())
        command += " --no-loners" if args.no_loners else ""
        command += f" --workers {args.workers}" if args.workers else ""
        if args.out == RESULTS:
            args.out = SEGMENT_RESULTS
        reports = [
            evaluate_segments(
                loaded.events,
                cutoff,
                console,
                partitions=PARTITIONS,
                sync_seconds=SYNC_SECONDS,
                models=args.model or ("kmeans", "density"),
                loners=not args.no_loners,
                workers=args.workers,
            )
            for cutoff in args.cutoff or CUTOFFS
        ]
    elif args.only == "core":
        command += " --only core"
        command += "".join(f" --cutoff {c}" for c in args.cutoff or ())
        command += f" --workers {args.workers}" if args.workers else ""
        if args.out == RESULTS:
            args.out = CORE_RESULTS
        history = history_of(loaded.events)
        reports = [
            evaluate_core(loaded.events, history, cutoff, console, workers=args.workers)
            for cutoff in args.cutoff or CUTOFFS
        ]
        show_core(reports, console)
    else:
        history = history_of(loaded.events)
        reports = [
            evaluate(loaded.events, history, cutoff, console) for cutoff in args.cutoff or CUTOFFS
        ]
        show(reports, console)
    if args.only != "core":
        show_segments(reports if args.only else [r["segmentations"] for r in reports], console)
    import river
    import sklearn

    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "command": command,
        "data": str(args.data.name),
        "rejected_rows": dict(loaded.report.reasons),
        "reports": reports,
        "versions": {
            "python": platform.python_version(),
            "river": river.__version__,
            "scikit-learn": sklearn.__version__,
        },
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.write_text(json.dumps(document, indent=2, default=float) + "\n")
    console.print(
        f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}"
    )


if __name__ == "__main__":
    main()
