"""What EASE in the stream costs: a refit's time and memory, a customer's ranking, the record.

    python benchmarks/ease_cost.py [--catalogues 5000,20000,100000] [--uncapped 5000,10000]
                                   [--customers 50000] [--days 5] [--seed 7]

A synthetic shop per catalogue size, seeded: items with Zipf-like popularity (item ``r``
drawn with weight ``1 / (r + 10)``), grouped in clusters of about 100 items; each customer
owns a few to a few hundred items (log-normal, median 8, clipped to 2-300), 70% of them drawn
from one to three favourite clusters (so EASE finds structure), the rest from the whole
catalogue. ``--customers`` customers, their purchases counted in ``--days`` equal days.

Each row runs in a fresh process (so one size's memory does not pollute the next), with one
BLAS thread, as the worker and the group's merger run:

* the worker's side of a day: ``EaseCounts.of_purchases`` of the day's purchases new to their
  buyer (``Recommender.ease_delta``); the merger's: ``EaseGram.add`` of those counts;
* the refit: ``EaseGram.snapshot`` and ``fit_ease`` (CRM's defaults: ``ease_strength``,
  ``ease_neighbors``), its CPU time and its peak of traced allocations (tracemalloc sees
  numpy's and LAPACK's work arrays), with the Gram the merger holds and the process's peak
  RSS; capped to CRM's ``ease_items`` (4,000) at every catalogue size, and uncapped (the Gram
  over every item) at ``--uncapped`` sizes. Larger uncapped sizes are extrapolated from the
  largest measured one (time as ``n^3``, memory as ``n^2``) and marked so;
* the ranking, capped rows only: a ``Recommender`` that learned the synthetic purchases
  (factors, popularity, co-purchase; no catalogue) and applied the fit ranks customers
  (their owned items to EASE, their last five as recent, all excluded) in batches of 1 and
  100: the EASE signal alone (``Ranker._ease_scores``) and ``rank_arms`` with one arm, CPU
  microseconds per customer;
* the ``ease`` part record (``encode_part``, signed) against the models topic's largest
  message (``MODEL_RECORD_BYTES``, 8 MiB).

Prints tables and writes benchmarks/results/ease-cost.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from online_models.group.parts import EASE, GroupPart  # noqa: E402
from online_models.recommend.ease import EaseCounts, EaseGram, fit_ease  # noqa: E402
from online_models.recommend.items import item_hash  # noqa: E402
from online_models.recommend.recommender import Recommender  # noqa: E402
from online_models.scoring.scorer import ScorerConfig  # noqa: E402
from streams.model_codec import encode_part  # noqa: E402
from streams.topics import MODEL_RECORD_BYTES  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "ease-cost.json"
MiB = 1024 * 1024
CLUSTER_ITEMS = 100
FROM_CLUSTERS = 0.7
#: Customers whose purchases a Recommender learns before ranking (factors, popularity).
LEARNED_CUSTOMERS = 5_000
#: Customers ranked per batch size, and the rounds (the median round is reported).
RANKED = {1: 100, 100: 300}
ROUNDS = 3
K = 10


# --- the synthetic shop ------------------------------------------------------------------------


def synthetic_owners(n_items: int, customers: int, seed: int) -> list[np.ndarray]:
    """Each customer's owned items (catalogue rows, in the order bought, distinct)."""
    rng = np.random.default_rng(seed)
    weight = 1.0 / (np.arange(n_items) + 10.0)  # row r is the r-th most popular item
    clusters = max(1, n_items // CLUSTER_ITEMS)
    cluster_of = rng.integers(clusters, size=n_items)
    members = np.argsort(cluster_of, kind="stable")  # by cluster, popular first within
    member_cluster = cluster_of[members]
    totals = np.bincount(cluster_of, weights=weight, minlength=clusters)
    before = np.cumsum(totals) - totals
    # Cluster c's members cover [c, c + 1): one searchsorted draws from any cluster.
    cdf_members = (
        member_cluster
        + (np.cumsum(weight[members]) - before[member_cluster]) / totals[member_cluster]
    )
    cdf_items = np.cumsum(weight) / weight.sum()
    cdf_clusters = np.cumsum(totals) / totals.sum()

    sizes = np.clip(np.round(rng.lognormal(np.log(8.0), 1.0, customers)), 2, 300).astype(int)
    favourites = np.searchsorted(cdf_clusters, rng.random((customers, 3)))
    n_favourites = rng.integers(1, 4, size=customers)
    draws = (sizes * 1.3).astype(int) + 2  # some draws repeat an item
    who = np.repeat(np.arange(customers), draws)
    favourite = favourites[who, (rng.random(len(who)) * n_favourites[who]).astype(int)]
    u = rng.random(len(who))
    picked = np.where(
        rng.random(len(who)) < FROM_CLUSTERS,
        members[np.minimum(np.searchsorted(cdf_members, favourite + u), n_items - 1)],
        np.minimum(np.searchsorted(cdf_items, u), n_items - 1),
    )
    owners = []
    bounds = np.append(0, np.cumsum(draws))
    for c in range(customers):
        mine = picked[bounds[c] : bounds[c + 1]]
        _, first = np.unique(mine, return_index=True)
        owners.append(mine[np.sort(first)][: sizes[c]])
    return owners


def item_ids(n_items: int) -> list[str]:
    return [f"sku-{row}" for row in range(n_items)]


# --- one row, in a process of its own -----------------------------------------------------------


def cpu_seconds(work: Callable[[], Any]) -> tuple[Any, float, float]:
    """``work()``'s result, its CPU and wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = work()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def measure_refit(spec: dict[str, Any]) -> dict[str, Any]:
    """Counting a day, adding it to the Gram, the snapshot and the fit of one catalogue size."""
    config = ScorerConfig()
    n_items, customers, days = spec["items"], spec["customers"], spec["days"]
    owners = synthetic_owners(n_items, customers, spec["seed"])
    hashes = np.array([item_hash(item) for item in item_ids(n_items)], dtype=np.int64)
    capacity = config.ease_items if spec["capped"] else n_items
    gram = EaseGram(capacity)
    counting, adding = [], []
    purchases = pairs = 0
    for day in np.array_split(np.arange(customers), days):
        bought = [
            (int(hashes[items[k]]), hashes[items[:k]])
            for items in (owners[c] for c in day.tolist())
            for k in range(len(items))
        ]
        counts, cpu, _ = cpu_seconds(lambda b=bought: EaseCounts.of_purchases(b, time=0.0))
        counting.append(cpu)
        purchases += len(bought)
        pairs += int(counts.counts.sum())
        adding.append(cpu_seconds(lambda c=counts: gram.add(c))[1])
    rss_counted = maxrss_bytes()
    snapshot, snapshot_cpu, _ = cpu_seconds(gram.snapshot)
    tracemalloc.start()
    share, fit_cpu, fit_wall = cpu_seconds(
        lambda: fit_ease(
            snapshot, strength=config.ease_strength, neighbors=config.ease_neighbors, fitted_at=0.0
        )
    )
    _, fit_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    record = encode_part(GroupPart(EASE, share, 1, {"worker-0": 1}), key=b"k" * 32)
    row = {
        "items": n_items, "capped": spec["capped"], "gram_items": len(snapshot.items),
        "fitted_items": len(share.items), "measured": True,
        "customers": customers, "purchases_per_day": purchases / days,
        "pairs_per_day": pairs / days,
        "count_day_s": float(np.median(counting)), "add_day_s": float(np.median(adding)),
        "snapshot_s": snapshot_cpu, "fit_s": fit_cpu, "fit_wall_s": fit_wall,
        "gram_held_bytes": int(gram._gram.nbytes), "snapshot_bytes": int(snapshot.gram.nbytes),
        "fit_peak_bytes": int(fit_peak), "rss_after_counting_bytes": rss_counted,
        "rss_peak_bytes": maxrss_bytes(), "weights": len(share.weights),
        "record_bytes": len(record),
    }  # fmt: skip
    if spec["capped"]:
        row["ranking"] = measure_ranking(owners, share, n_items)
    return row


def measure_ranking(owners: list[np.ndarray], share: Any, n_items: int) -> dict[str, Any]:
    """CPU microseconds per customer of the EASE signal and of ``rank_arms`` with each arm."""
    ids = item_ids(n_items)
    rec = Recommender(seed=1)
    rec.register(ids)
    day = 86_400.0
    for c, items in enumerate(owners[:LEARNED_CUSTOMERS]):
        for k, row in enumerate(items.tolist()):
            basket = [ids[r] for r in items[max(0, k - 3) : k].tolist()]
            rec.learn_one(f"c{c}", ids[row], time=k * day, basket=basket)
    rec.apply_ease(share)
    ranked = owners[: max(RANKED.values())]
    requests = [
        (f"c{c}", {ids[r] for r in items.tolist()}, [ids[r] for r in items[-5:].tolist()],
         [ids[r] for r in items.tolist()])
        for c, items in enumerate(ranked)
    ]  # fmt: skip
    n = rec.n_items
    arms = {arm.name: arm for arm in rec.arms}
    timings: dict[str, dict[str, float]] = {}
    for batch, customers in RANKED.items():
        chunks = [requests[i : i + batch] for i in range(0, customers, batch)]
        jobs: dict[str, Callable[[list[Any]], Any]] = {
            "ease signal": lambda part: rec._ease_scores([r[3] for r in part], len(part), n),
            **{f"arm {name}": (lambda part, a=arm: rec.rank_arms(part, K, [a]))
               for name, arm in arms.items()},
        }  # fmt: skip
        for name, job in jobs.items():
            rounds = []
            for _ in range(ROUNDS):
                _, cpu, _ = cpu_seconds(lambda j=job, c=chunks: [j(part) for part in c])
                rounds.append(cpu / customers * 1e6)
            timings.setdefault(name, {})[str(batch)] = float(np.median(rounds))
    return {"catalogue_rows": n, "learned_customers": LEARNED_CUSTOMERS,
            "us_per_customer": timings}  # fmt: skip


def measure_in_child(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`measure_refit` of ``spec`` in a fresh process of this script."""
    with tempfile.TemporaryDirectory(prefix="crm-ease-") as tmp:
        result = Path(tmp) / "row.json"
        command = [sys.executable, __file__, "--child", json.dumps(spec), "--result", str(result)]
        subprocess.run(command, check=True)
        row: dict[str, Any] = json.loads(result.read_text())
    return row


# --- the report ---------------------------------------------------------------------------------


def extrapolated(measured: dict[str, Any], n_items: int) -> dict[str, Any]:
    """An uncapped row of ``n_items`` from the largest measured one: the inverse's time as
    ``n^3``, its memory (and the Gram's, the snapshot's) as ``n^2``, the record as ``n``."""
    m = measured["items"]
    cube, square, line = (n_items / m) ** 3, (n_items / m) ** 2, n_items / m
    return {
        "items": n_items, "capped": False, "gram_items": n_items, "fitted_items": n_items,
        "measured": False, "extrapolated_from": m,
        "fit_s": measured["fit_s"] * cube, "snapshot_s": measured["snapshot_s"] * square,
        "gram_held_bytes": 8 * n_items**2, "snapshot_bytes": 8 * n_items**2,
        "fit_peak_bytes": int(measured["fit_peak_bytes"] * square),
        "rss_peak_bytes": None,  # the process's own baseline does not scale
        "record_bytes": int(measured["record_bytes"] * line),
    }  # fmt: skip


def largest_fit_in_a_record(rows: list[dict[str, Any]], neighbors: int) -> int:
    """The most fitted items whose ``ease`` record, every item keeping ``neighbors``
    weights, fits ``MODEL_RECORD_BYTES``: 16 bytes an item, 12 a weight, plus the header."""
    row = max((r for r in rows if r["measured"]), key=lambda r: r["fitted_items"])
    header = row["record_bytes"] - 16 * row["fitted_items"] - 12 * row["weights"]
    return int((MODEL_RECORD_BYTES - header) // (16 + 12 * neighbors))


def show(document: dict[str, Any], console: Console) -> None:
    def mib(value: float | None) -> str:
        return "-" if value is None else f"{value / MiB:,.0f}"

    def secs(value: float | None) -> str:
        return "-" if value is None else f"{value:,.2f}"

    table = Table(title="EASE refit, one BLAS thread (CPU seconds; MiB)")
    for column in (
        "catalogue",
        "Gram",
        "fitted",
        "how",
        "fit s",
        "fit peak",
        "Gram held",
        "process peak",
        "snapshot s",
        "count a day s",
        "add a day s",
        "record",
    ):
        table.add_column(column, justify="right")
    for row in document["refits"]:
        table.add_row(
            f"{row['items']:,}", f"{row['gram_items']:,}" + ("" if row["capped"] else " (all)"),
            f"{row['fitted_items']:,}", "measured" if row["measured"] else "extrapolated",
            secs(row["fit_s"]), mib(row["fit_peak_bytes"]), mib(row["gram_held_bytes"]),
            mib(row["rss_peak_bytes"]), secs(row["snapshot_s"]),
            secs(row.get("count_day_s")), secs(row.get("add_day_s")),
            f"{row['record_bytes'] / MiB:,.2f}",
        )  # fmt: skip
    console.print(table)
    ranking = Table(title=f"Ranking: CPU microseconds per customer, top {K}, one BLAS thread")
    ranking.add_column("catalogue", justify="right")
    ranking.add_column("batch", justify="right")
    names = list(
        next(r for r in document["refits"] if "ranking" in r)["ranking"]["us_per_customer"]
    )
    for name in names:
        ranking.add_column(name, justify="right")
    for row in (r for r in document["refits"] if "ranking" in r):
        timings = row["ranking"]["us_per_customer"]
        for batch in RANKED:
            ranking.add_row(f"{row['items']:,}", str(batch),
                            *(f"{timings[name][str(batch)]:,.0f}" for name in names))  # fmt: skip
    console.print(ranking)
    record = document["record"]
    console.print(
        f"ease record at {record['fitted_items']:,} fitted items x {record['neighbors']} "
        f"neighbours: {record['bytes']:,} bytes ({record['bytes'] / MiB:.2f} MiB) of "
        f"{MODEL_RECORD_BYTES:,} (8 MiB); the most fitted items that fit at "
        f"{record['neighbors']} neighbours: {record['largest_fit']:,}"
    )


def _sizes(text: str) -> list[int]:
    sizes = [int(size) for size in text.split(",") if size.strip()]
    if min(sizes, default=0) < 2:
        msg = f"sizes must be integers >= 2, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogues", type=_sizes, default=[5_000, 20_000, 100_000])
    parser.add_argument(
        "--uncapped",
        type=_sizes,
        default=[5_000, 10_000],
        help="catalogue sizes fitted over every item (the rest extrapolated)",
    )
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one row's spec (JSON)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    threadpool_limits(limits=1, user_api="blas")  # as the worker and the group's merger
    if args.child is not None:
        args.result.write_text(json.dumps(measure_refit(json.loads(args.child))))
        return

    console = Console(width=None if sys.stdout.isatty() else 160)
    config = ScorerConfig()
    rows = []
    jobs = [(n, True) for n in args.catalogues] + [(n, False) for n in args.uncapped]
    for n_items, capped in jobs:
        spec = {"items": n_items, "capped": capped, "customers": args.customers,
                "days": args.days, "seed": args.seed}  # fmt: skip
        rows.append(measure_in_child(spec))
        row = rows[-1]
        console.log(
            f"{n_items:,} items, {'capped' if capped else 'uncapped'}: fit {row['fit_s']:.2f} s, "
            f"peak {row['fit_peak_bytes'] / MiB:,.0f} MiB"
        )
    uncapped = [r for r in rows if not r["capped"]]
    if uncapped:
        largest = max(uncapped, key=lambda r: r["items"])
        rows += [extrapolated(largest, n) for n in args.catalogues if n > largest["items"]]
    # The record of the default fit: the capped row with the most items fitted (ease_items).
    default = max((r for r in rows if r["capped"]), key=lambda r: r["fitted_items"])
    document = {
        "benchmark": "ease-cost",
        "command": "python benchmarks/ease_cost.py " + " ".join(sys.argv[1:]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "settings": {"ease_items": config.ease_items, "ease_neighbors": config.ease_neighbors,
                     "ease_strength": config.ease_strength},
        "arguments": {k: v for k, v in vars(args).items() if k not in ("child", "result", "out")},
        "refits": rows,
        "record": {"fitted_items": default["fitted_items"], "neighbors": config.ease_neighbors,
                   "weights": default["weights"], "bytes": default["record_bytes"],
                   "limit": MODEL_RECORD_BYTES,
                   "largest_fit": largest_fit_in_a_record(rows, config.ease_neighbors)},
    }  # fmt: skip
    show(document, console)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
