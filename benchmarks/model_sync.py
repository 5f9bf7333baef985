"""Benchmark of the group model's sync: bytes and time per delta and per version.

    python benchmarks/model_sync.py [--items 100000] [--pairs-per-item 50] [--events 10000]

A group model of ``--items`` items (with ``--pairs-per-item`` co-purchase pairs each, 5 million
by default) is built, then for 2 and 8 workers: every worker loads it (what a starting worker
does: decode every part and apply it, the event loop held meanwhile), scores ``--events``
events of a synthetic shop (one sync interval of a busy worker), takes its delta; the merger
decodes and merges every delta and publishes a version; every worker applies it. Reported:
bytes and milliseconds per delta and per version, how long a worker's event loop is held by
taking a delta and by applying a version, and the merger's CPU share of a sync interval. Then
the whole model goes through a real broker (Tansu on a free port): published part by part and
loaded by a fresh worker's feed, as at start-up.

Writes benchmarks/results/model_sync.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from online_models.customer.activity import Activity  # noqa: E402
from online_models.group.model import GroupModel  # noqa: E402
from online_models.group.parts import GroupPart, item_part  # noqa: E402
from online_models.group.worker import WorkerSync  # noqa: E402
from online_models.recommend.items import ItemShare, item_hash  # noqa: E402
from online_models.scoring.scorer import CustomerScorer, ScorerConfig  # noqa: E402
from streams.model_codec import decode_delta, decode_part, encode_delta, encode_part  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "model_sync.json"
SYNC_SECONDS = 15.0
T0 = 1_735_689_600.0


def big_group(config: ScorerConfig, items: int, pairs: int, seed: int = 1) -> dict[str, GroupPart]:
    """The items parts of a group model of ``items`` items, ``pairs`` neighbours each."""
    rng = np.random.default_rng(seed)
    ids = [f"sku-{n:07d}" for n in range(items)]
    hashes = np.array([item_hash(i) for i in ids], dtype=np.int64)
    buckets: dict[int, list[int]] = {}
    for n, h in enumerate(hashes.tolist()):
        buckets.setdefault(h % config.item_buckets, []).append(n)
    parts = {}
    for bucket, members in buckets.items():
        n = len(members)
        refs = hashes[rng.integers(0, items, size=n * pairs)]
        share = ItemShare(
            tuple(ids[m] for m in members),
            rng.normal(0, 0.1, (n, config.recommender_factors)),
            rng.normal(400.0, 3.0, n),
            np.arange(0, n * pairs + 1, pairs, dtype=np.int64),
            refs,
            rng.integers(1, 40, size=n * pairs).astype(float),
        )
        key = item_part(bucket)
        parts[key] = GroupPart(key, share, 1, {})
    return parts


def shop_events(count: int, items: int, seed: int) -> list[tuple[str, Activity]]:
    """A busy worker's events: Zipf-like item popularity, baskets of a few lines."""
    rng = random.Random(seed)
    events = []
    t = T0 + 3_600.0
    for _ in range(count):
        t += 0.05
        customer = f"c{seed}-{rng.randrange(20_000)}"
        item = f"sku-{min(int(rng.paretovariate(0.9)), items - 1):07d}"
        kind = "purchase" if rng.random() < 0.6 else "view"
        amount = rng.uniform(2, 60) if kind == "purchase" else 0.0
        events.append((customer, Activity(kind, t, item_id=item, amount=amount,
                                          quantity=1 if kind == "purchase" else 0)))  # fmt: skip
    return events


def run(
    workers: int, parts: dict[str, GroupPart], config: ScorerConfig, events: int, items: int
) -> dict:
    """One sync interval of ``workers`` workers over the big model; the costs."""
    syncs, held_load = [], []
    encoded = {key: encode_part(part, key=None) for key, part in parts.items()}
    for n in range(workers):
        sync = WorkerSync(CustomerScorer(config), f"w{n}")
        started = time.perf_counter()
        decoded = {key: decode_part(raw, config, key=None) for key, raw in encoded.items()}
        held_slice = max(sync.apply_slices(1, decoded))
        held_load.append((time.perf_counter() - started, held_slice))
        syncs.append(sync)
    delta_bytes, delta_held, delta_records = [], [], 0
    raw_deltas = []
    for n, sync in enumerate(syncs):
        for customer, activity in shop_events(events, items, seed=n):
            sync.scorer.score(customer, None, activity)
        started = time.perf_counter()
        records = [encode_delta(d, key=None, sent_at=0.0) for d in sync.deltas()]
        delta_held.append(time.perf_counter() - started)
        delta_bytes.append(sum(map(len, records)))
        delta_records += len(records)
        raw_deltas += records
    group = GroupModel(config, parts, version=1)
    started = time.perf_counter()
    for raw in raw_deltas:
        group.merge(decode_delta(raw, config, key=None))
    merged = time.perf_counter() - started
    started = time.perf_counter()
    version, changed = group.publish()
    published = [encode_part(part, key=None) for part in changed]
    publish_seconds = time.perf_counter() - started
    applied = []
    for sync in syncs:
        started = time.perf_counter()
        decoded = {key: decode_part(raw, config, key=None) for key, raw in
                   zip((p.key for p in changed), published, strict=True)}  # fmt: skip
        held_slice = max(sync.apply_slices(version, decoded))
        applied.append((time.perf_counter() - started, held_slice))
    return {
        "workers": workers,
        "events_per_worker": events,
        "load_ms_max": 1000 * max(total for total, _ in held_load),
        "load_slice_ms_max": 1000 * max(held for _, held in held_load),
        "delta_bytes_mean": float(np.mean(delta_bytes)),
        "delta_records": delta_records,
        "delta_ms_max": 1000 * max(delta_held),
        "merge_ms": 1000 * merged,
        "publish_ms": 1000 * publish_seconds,
        "version_bytes": sum(map(len, published)),
        "version_parts": len(published),
        "apply_ms_max": 1000 * max(total for total, _ in applied),
        "apply_slice_ms_max": 1000 * max(held for _, held in applied),
        "merger_cpu_share": (merged + publish_seconds) / SYNC_SECONDS,
    }


def through_a_broker(parts: dict[str, GroupPart], config: ScorerConfig) -> dict[str, Any]:
    """Publish the whole model on a real broker and load it as a starting worker does."""
    from kafka import KafkaProducer

    from online_models.group.worker import WorkerSync as Sync
    from schemas.model_records import ManifestHeader, PartRef
    from streams.commands.local_services import LocalBroker
    from streams.metrics import ScorerMetrics
    from streams.model_codec import MANIFEST_KEY, encode_manifest, model_shapes
    from streams.model_feed import ModelFeed
    from streams.settings import load_settings
    from streams.topics import MODEL_RECORD_BYTES, ensure_topics

    broker = LocalBroker()
    broker.start()
    try:
        settings = load_settings(broker=broker.url, model_item_buckets=config.item_buckets)
        ensure_topics(settings)
        producer = KafkaProducer(
            bootstrap_servers=broker.bootstrap, max_request_size=MODEL_RECORD_BYTES + 65_536
        )
        started = time.perf_counter()
        refs = {}
        total = 0
        for key, part in parts.items():
            raw = encode_part(part, key=None)
            total += len(raw)
            metadata = producer.send(settings.models_topic, key=key.encode(), value=raw).get(60)
            refs[key] = PartRef(version=1, offset=metadata.offset)
        manifest = ManifestHeader(version=1, parts=refs, shapes=model_shapes(config),
                                  merger="bench", published_at=time.time())  # fmt: skip
        producer.send(settings.models_topic, key=MANIFEST_KEY,
                      value=encode_manifest(manifest, key=None)).get(60)  # fmt: skip
        publish = time.perf_counter() - started
        producer.close()

        from prometheus_client import CollectorRegistry

        scorer = CustomerScorer(settings.scorer_config())
        feed = ModelFeed(settings, Sync(scorer), ScorerMetrics(CollectorRegistry()))

        async def load() -> float:
            began = time.perf_counter()
            await feed.start()
            took = time.perf_counter() - began
            await feed.stop()
            return took

        loaded = asyncio.run(load())
        return {
            "bytes": total,
            "publish_seconds": publish,
            "load_seconds": loaded,
            "items_loaded": scorer.recommender.n_items,
        }
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--pairs-per-item", type=int, default=50)
    parser.add_argument("--events", type=int, default=10_000, help="per worker per sync")
    parser.add_argument("--buckets", type=int, default=64)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    console = Console()
    config = ScorerConfig(item_buckets=args.buckets)
    started = time.perf_counter()
    parts = big_group(config, args.items, args.pairs_per_item)
    pairs = sum(len(p.share.refs) for p in parts.values())
    console.log(
        f"built {args.items:,} items, {pairs:,} pairs in {time.perf_counter() - started:.1f}s"
    )
    rows = []
    for workers in (2, 8):
        rows.append(run(workers, parts, config, args.events, args.items))
        console.log(rows[-1])
    broker = through_a_broker(parts, config)
    console.log(broker)
    table = Table(title=f"Group model sync: {args.items:,} items, {pairs:,} co-purchase pairs")
    table.add_column("measure")
    for row in rows:
        table.add_column(f"{row['workers']} workers", justify="right")
    for label, key, fmt in (
        ("events per worker per sync", "events_per_worker", "{:,.0f}"),
        ("delta: bytes per worker", "delta_bytes_mean", "{:,.0f}"),
        ("delta: event loop held, ms (worst worker)", "delta_ms_max", "{:,.1f}"),
        ("merge of every delta, ms", "merge_ms", "{:,.0f}"),
        ("publish (encode) a version, ms", "publish_ms", "{:,.0f}"),
        ("version: bytes", "version_bytes", "{:,.0f}"),
        ("version: parts", "version_parts", "{:,.0f}"),
        ("apply a version (decode + apply), ms", "apply_ms_max", "{:,.0f}"),
        ("  event loop held at most (one slice), ms", "apply_slice_ms_max", "{:,.0f}"),
        ("load the whole model at start-up, ms", "load_ms_max", "{:,.0f}"),
        ("  event loop held at most (one slice), ms", "load_slice_ms_max", "{:,.0f}"),
        ("merger CPU share of a 15 s sync", "merger_cpu_share", "{:.1%}"),
    ):
        table.add_row(label, *(fmt.format(row[key]) for row in rows))
    console.print(table)
    console.print(
        f"through Tansu: the whole model ({broker['bytes']:,} bytes) published in "
        f"{broker['publish_seconds']:.1f}s and loaded by a starting worker in "
        f"{broker['load_seconds']:.1f}s ({broker['items_loaded']:,} items)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "command": "python benchmarks/model_sync.py",
        "items": args.items,
        "pairs": pairs,
        "buckets": args.buckets,
        "sync_seconds": SYNC_SECONDS,
        "rows": rows,
        "broker": broker,
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
