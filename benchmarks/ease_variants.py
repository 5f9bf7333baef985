"""What the stream's EASE may cut, measured in batch: the alternatives behind its design.

    python benchmarks/ease_variants.py [--data PATH] [--cutoff 2011-09-09 --cutoff 2011-06-01]

For each cutoff T, EASE is fitted on every purchase before T (the binary customer x item
matrix, as ``batch_recommenders.py``) and judged as ``quality.py`` judges recommendations:
buyers before T, items new to them bought in (T, T + 90 days], hit rate@10. Beside the full
fit, for ``lambda`` 500 and 1,000:

* ``top{k}``: each item keeps only its ``k`` strongest positive weights (what the ``ease``
  part carries: ``CRM_RECOMMEND_EASE_NEIGHBORS``);
* ``head{n}``: the Gram of the ``n`` most owned items only, the others unscored
  (``CRM_RECOMMEND_EASE_ITEMS``), each keeping 50 weights;
* ``gram{k}``: the Gram itself cut to each item's ``k`` largest counts before the fit (what
  bounded co-purchase lists, as the workers keep today, would give EASE);
* ``recency{days}``: the customer's items weighted ``0.3 + 0.7 exp(-age / days)`` instead
  of 1 (50 weights);
* ``content{w}``: the 50-weight EASE scores (each customer's scaled to a maximum of 1) plus
  ``w`` times the catalogue's content cosine of their 60 latest items (``ContentModel``);
* ``popularity{w}``: the same plus ``w`` times each item's share of the top item's owners;
* ``last200``: 50 weights, each customer scored from and excluding only their last 200
  distinct items (what their state remembers); ``last200_nine``: the same, nine places (the
  tenth is the new-item slot's in the stream).

Prints each line as it goes and writes benchmarks/results/ease-variants.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy import linalg, sparse
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import batch_recommenders as batch  # noqa: E402

from online_models.recommend.content import ContentModel  # noqa: E402
from streams.commands.items import load_catalogue  # noqa: E402
from streams.commands.report.outcomes import history_of  # noqa: E402
from streams.commands.transactions import load_transactions  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "ease-variants.json"
DATA = ROOT.parent / "shared" / "datasets" / "online_retail" / "online_retail.csv.gz"
DAY = 86_400.0
KEPT = 50


def ease(gram: np.ndarray, strength: float) -> np.ndarray:
    regularised = gram.astype(float)
    regularised[np.diag_indices_from(regularised)] += strength
    inverse = linalg.inv(regularised, check_finite=False)
    weights = inverse / -np.diag(inverse)
    weights[np.diag_indices_from(weights)] = 0.0
    return weights


def strongest(weights: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` largest entries (positive ones), the rest 0."""
    kept = np.zeros_like(weights)
    top = np.argpartition(-weights, k, axis=1)[:, :k]
    rows = np.arange(len(weights))[:, None]
    kept[rows, top] = np.maximum(weights[rows, top], 0.0)
    return kept


def cut_gram(gram: np.ndarray, k: int) -> np.ndarray:
    """Each item's ``k`` largest pair counts kept (either side keeping a pair keeps it)."""
    cut = gram.astype(float)
    owners = cut.diagonal().copy()
    np.fill_diagonal(cut, -1.0)
    kept = strongest(cut, k)
    kept = np.maximum(kept, kept.T)
    np.fill_diagonal(kept, owners)
    return kept


def evaluate(history: Any, content: ContentModel, cutoff: str) -> dict[str, Any]:
    t = datetime.fromisoformat(cutoff).replace(tzinfo=UTC).timestamp()
    customers = history.buyers_before(t)
    bought, items, _ = batch._matrix(history, customers, t)
    truth = batch._new_items(history, customers, t, t + 90 * DAY)
    judged = [r for r, wanted in enumerate(truth) if wanted]
    sub = bought[judged]
    owners = np.asarray(bought.sum(axis=0)).ravel()
    column = {item: i for i, item in enumerate(items)}

    owned = sub.toarray() > 0

    def hit_among(scores: np.ndarray, excluded: np.ndarray, k: int) -> float:
        """Hit rate@k of ``scores``, ``excluded`` items left out (ties to the lower column)."""
        ranked = np.where(excluded, -np.inf, scores)
        top = np.argsort(-ranked, axis=1, kind="stable")[:, :k]
        rows = zip(judged, top.tolist(), strict=True)
        hits = [bool({items[i] for i in row} & truth[r]) for r, row in rows]
        return round(float(np.mean(hits)), 4)

    def hit(scores: np.ndarray) -> float:
        return hit_among(scores + 1e-9 * owners, owned, 10)

    latest, ages = [], []
    for r in judged:
        last: dict[str, float] = {}
        for when, item, _ in history.buys[customers[r]]:
            if when < t:
                last[item] = when
        latest.append(sorted(last, key=last.__getitem__, reverse=True)[:60])
        ages.append(last)
    cosines = content.scores(latest, items)
    popular = (owners / owners.max()).astype(np.float32)
    gram = np.asarray((bought.T @ bought).todense(), dtype=float)
    everyone = np.tile(owners, (len(judged), 1)).astype(float)
    report: dict[str, Any] = {"cutoff": cutoff, "items": len(items), "judged": len(judged),
                              "popularity": hit(everyone)}  # fmt: skip
    for strength in (500.0, 1000.0):
        started = time.perf_counter()
        full = ease(gram, strength)
        seconds = round(time.perf_counter() - started, 2)
        row: dict[str, float] = {"full": hit(np.asarray(sub @ full)), "fit_seconds": seconds}
        for k in (20, 50, 100, 200):
            row[f"top{k}"] = hit(np.asarray(sub @ strongest(full, k)))
        for n in (1000, 2000, 3000):
            head = np.argsort(-owners, kind="stable")[:n]
            weights = np.zeros_like(full)
            weights[np.ix_(head, head)] = strongest(ease(gram[np.ix_(head, head)], strength), KEPT)
            row[f"head{n}"] = hit(np.asarray(sub @ weights))
        for k in (50, 100, 200, 400):
            row[f"gram{k}"] = hit(
                np.asarray(sub @ strongest(ease(cut_gram(gram, k), strength), KEPT))
            )
        kept = strongest(full, KEPT)
        for days in (30.0, 90.0, 365.0):
            rows, cols, values = [], [], []
            for n, last in enumerate(ages):
                for item, when in last.items():
                    rows.append(n)
                    cols.append(column[item])
                    values.append(0.3 + 0.7 * np.exp(-(t - when) / (days * DAY)))
            recent = sparse.csr_matrix((values, (rows, cols)), shape=sub.shape)
            row[f"recency{days:g}"] = hit(np.asarray(recent @ kept))
        # What a customer's state remembers: their last 200 distinct items, scored from and
        # left out; and nine places for known items (the tenth is the new-item slot's).
        remembered = np.zeros(sub.shape)
        for n, last in enumerate(ages):
            for item in sorted(last, key=last.__getitem__, reverse=True)[:200]:
                remembered[n, column[item]] = 1.0
        latest200 = remembered @ kept + 1e-9 * owners
        row["last200"] = hit_among(latest200, remembered > 0, 10)
        row["last200_nine"] = hit_among(latest200, remembered > 0, 9)
        scores = np.asarray(sub @ kept)
        scaled = scores / np.maximum(scores.max(axis=1, keepdims=True), 1e-12)
        for weight in (0.1, 0.25, 0.5):
            row[f"content{weight:g}"] = hit(scaled + weight * cosines)
        for weight in (0.05, 0.1, 0.2):
            row[f"popularity{weight:g}"] = hit(scaled + weight * popular)
        report[f"lambda{strength:g}"] = row
        print(cutoff, strength, row, flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--cutoff", action="append")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    threadpool_limits(limits=1, user_api="blas")
    started = time.perf_counter()
    loaded = load_transactions(args.data, preset="online-retail")
    history = history_of(loaded.events)
    content = ContentModel()
    for item in load_catalogue(args.data, preset="online-retail").items:
        content.upsert(item.item_id, item.model_dump(exclude_none=True))
    reports = [evaluate(history, content, c) for c in args.cutoff or ("2011-09-09", "2011-06-01")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {"command": "python benchmarks/ease_variants.py", "data": args.data.name,
                "reports": reports, "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
