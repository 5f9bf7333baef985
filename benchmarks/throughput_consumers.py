"""The reference consumers of ``benchmarks/throughput.py``, run as Faust workers.

    BENCH_KIND=ceiling|batched|naive BENCH_BROKER=kafka://... BENCH_TOPIC=t BENCH_EVENTS=N \\
    BENCH_REDIS=redis://... BENCH_RESULT=out.json python benchmarks/throughput_consumers.py worker

``ceiling``: a bare Faust agent that only decodes each event's JSON: Faust's own per-event
ceiling. ``batched``: the same decoding, on the batched delivery path the worker uses
(``streams/batching.py``): what is left of Faust's cost once messages arrive a fetch at a time.
``naive``: the scorer written the obvious way: validate the event with the schema,
keep the customer's features in a Faust table, ``learn_one`` on River's logistic regression,
k-means and FunkMF for every event, and await one Redis write per event.

Each writes ``{"first": t0, "last": t1, "events": n}`` (wall clock) to BENCH_RESULT once it
handled BENCH_EVENTS events; the harness then stops it.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis
from river import cluster, linear_model, preprocessing, reco

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas.errors import EventRejected, UnknownEventType  # noqa: E402
from schemas.events import decode_event  # noqa: E402
from streams.batching import BatchingApp  # noqa: E402

KIND = os.environ.get("BENCH_KIND", "ceiling")
TOPIC = os.environ.get("BENCH_TOPIC", "bench.events")
EVENTS = int(os.environ.get("BENCH_EVENTS", "0"))
RESULT = Path(os.environ.get("BENCH_RESULT", "bench-result.json"))

app = BatchingApp(
    f"bench-{KIND}-{os.getpid()}",
    broker=os.environ.get("BENCH_BROKER", "kafka://localhost:9092"),
    store="memory://",
    web_enabled=False,
    key_serializer="raw",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=10.0,
    broker_rebalance_timeout=10.0,
    broker_heartbeat_interval=3.0,
    topic_partitions=int(os.environ.get("BENCH_PARTITIONS", "8")),
    datadir=os.environ.get("BENCH_DATADIR", "/tmp/bench-faust"),
)
topic = app.topic(TOPIC)
progress = {"first": 0.0, "count": 0}


@app.on_partitions_assigned.connect
async def _assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
    # The clock starts when the consumer may fetch: for every consumer alike, whether it
    # takes events one at a time or whole fetches.
    if assigned and not progress["first"]:
        progress["first"] = time.time()


def _done() -> None:
    progress["count"] += 1
    if progress["count"] == EVENTS:
        result = {"first": progress["first"], "last": time.time(), "events": EVENTS}
        RESULT.write_bytes(orjson.dumps(result))


if KIND == "batched":

    async def decode_batch(messages: list[Any]) -> None:
        ack = app.consumer.ack
        for message in messages:
            orjson.loads(message.value)
            _done()
        for message in messages:
            ack(message)

    app.batch_agent(topic, decode_batch, name="decode-batches")

elif KIND == "ceiling":

    @app.agent(topic)
    async def decode_only(stream: Any) -> None:
        async for value in stream:
            orjson.loads(value)
            _done()

else:
    customers = app.Table("bench-naive-customers", default=None, value_type=bytes, key_type=str)
    redis = Redis.from_url(os.environ.get("BENCH_REDIS", "redis://localhost:6379/0"))
    churn = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    segments = cluster.KMeans(n_clusters=6, halflife=0.02, seed=1)
    factors = reco.FunkMF(n_factors=16, seed=1)

    @app.agent(topic)
    async def naive_scorer(stream: Any) -> None:
        async for value in stream:
            try:
                event = decode_event(value)
            except (EventRejected, UnknownEventType):
                _done()
                continue
            key = event.customer_id
            raw = customers.get(key)
            state = orjson.loads(raw) if raw else {"events": 0, "spend": 0.0, "last": 0.0}
            now = event.timestamp.timestamp()
            gap = (now - state["last"]) / 86_400 if state["events"] else 0.0
            amount = float(getattr(event, "amount", 0.0) or 0.0)
            state["events"] += 1
            state["spend"] += amount
            state["last"] = now
            x = {
                "events": math.log1p(state["events"]),
                "spend": math.log1p(state["spend"]),
                "gap": math.log1p(max(gap, 0.0)),
            }
            risk = churn.predict_proba_one(x).get(True, 0.5)
            churn.learn_one(x, gap > 30)
            segment = segments.predict_one(x)
            segments.learn_one(x)
            item = getattr(event, "item_id", None)
            if item is not None:
                factors.learn_one(key, item, 1.0)
            customers[key] = orjson.dumps(state)
            await redis.hset(
                f"bench-naive:{key}",
                mapping={"churn_risk": f"{risk:.6f}", "segment": str(segment)},
            )
            _done()


if __name__ == "__main__":
    app.main()
