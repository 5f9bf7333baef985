"""Replay Online Retail through a real worker and check every buyer has a score in Redis.

    python benchmarks/replay_online_retail.py [--data PATH] [--limit N]

Starts a Tansu broker and a redis-server on free ports, a ``crm-scorer worker`` and then
``crm-scorer replay --preset online-retail`` (the commands a user runs), waits until the worker
handled every event and wrote every score, and checks that each customer with a purchase in
the file has a score hash whose ``orders`` equals the distinct purchase times seen. Prints the
timings and writes benchmarks/results/replay_online_retail.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas.events import PurchaseEvent  # noqa: E402
from streams.commands.demo import WorkerProcess, read_metrics  # noqa: E402
from streams.commands.local_services import LocalBroker, LocalRedis, free_port  # noqa: E402
from streams.commands.transactions import load_transactions  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "online_retail" / "online_retail.csv.gz"
RESULTS = ROOT / "benchmarks" / "results" / "replay_online_retail.json"
CLI = str(Path(sys.executable).with_name("crm-scorer"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, default=None, help="first N events only")
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args()
    loaded = load_transactions(args.data, preset="online-retail")
    events = loaded.events[: args.limit]
    baskets: dict[str, set[float]] = defaultdict(set)
    for event in events:
        if isinstance(event.event, PurchaseEvent):
            baskets[event.event.customer_id].add(event.time)

    with tempfile.TemporaryDirectory(prefix="crm-replay-") as work:
        broker, server = LocalBroker(), LocalRedis()
        broker.start()
        server.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
        env.update(
            CRM_BROKER=broker.url,
            CRM_REDIS_URL=server.url,
            CRM_WEB_PORT=str(free_port()),
            CRM_DATA_DIR=str(Path(work) / "data"),
            CRM_SESSION_TIMEOUT="10",
            CRM_REBALANCE_TIMEOUT="10",
        )
        worker = WorkerProcess(env, Path(work) / "worker.log")
        try:
            worker.start()
            command = [CLI, "replay", str(args.data), "--preset", "online-retail"]
            if args.limit:
                command += ["--limit", str(args.limit)]
            started = time.monotonic()
            subprocess.run(command, env=env, check=True)
            sent_after = time.monotonic() - started
            while int(worker.metrics().get("crm_scorer_events_total", 0.0)) < len(events):
                if not worker.alive() or time.monotonic() - started > args.timeout:
                    raise SystemExit(f"worker stopped or timed out:\n{worker.log_tail()}")
                time.sleep(2.0)
            while worker.metrics().get("crm_scorer_redis_pending_scores", 1.0) > 0:
                time.sleep(0.5)
            scored_after = time.monotonic() - started
            metrics = read_metrics(worker.port)
            client = redis.Redis.from_url(server.url, decode_responses=True)
            missing, wrong = [], []
            for customer, times in baskets.items():
                orders = client.hget(f"crm:score:{customer}", "orders")
                if orders is None:
                    missing.append(customer)
                elif int(orders) != len(times):
                    wrong.append(customer)
        finally:
            worker.stop()
            server.stop()
            broker.stop()
    report = {
        "command": "python benchmarks/replay_online_retail.py"
        + (f" --limit {args.limit}" if args.limit else ""),
        "events": len(events),
        "customers_with_a_purchase": len(baskets),
        "customers_scored": len(baskets) - len(missing),
        "customers_missing": len(missing),
        "customers_with_wrong_orders": len(wrong),
        "replay_seconds": round(sent_after, 1),
        "scored_seconds": round(scored_after, 1),
        "events_per_second": round(len(events) / scored_after, 1),
        "rescores": metrics.get("crm_scorer_rescores_total", 0.0),
        "churn_labels": {
            label: metrics.get(f"crm_scorer_churn_labels_total{{label={label}}}", 0.0)
            for label in ("stayed", "churned")
        },
        "churn_roc_auc": metrics.get("crm_scorer_churn_roc_auc"),
        "recommendation_hit_rate": metrics.get("crm_scorer_recommendation_hit_rate"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(report, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    if missing or wrong:
        raise SystemExit(f"{len(missing)} buyers without a score, {len(wrong)} with wrong orders")


if __name__ == "__main__":
    main()
