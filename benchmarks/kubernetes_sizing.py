"""Partitions, replicas and memory of the Kubernetes overlays, from the throughput benchmark.

    python benchmarks/kubernetes_sizing.py [--throughput benchmarks/results/throughput-100k.json]

Reads what ``benchmarks/throughput.py`` measured of one worker (events per second with every
model on and a catalogue; resident memory after its first 10,000 customers and per new
customer after that) and plans each shop of :data:`SHOPS` (customers, peak events per second):

- a worker is planned at half its measured rate (the benchmark measured event-to-Redis p99 at
  half load), so replicas at peak = ceil(peak / planned rate);
- partitions, fixed once the topic is live, leave room to double: the first of
  :data:`PARTITION_STEPS` holding twice the peak replicas; KEDA's maxReplicaCount = partitions
  (a worker beyond them would idle);
- minReplicaCount keeps half the peak's workers (two at least, for the PodDisruptionBudget);
- memory: request = a worker's resident set holding customers / minReplicaCount (its own
  customers, plus a standby copy of as many: Faust keeps one standby replica of each table
  partition), limit = the same with one worker fewer (a node drained), plus a quarter for what
  the benchmark saw grow on a second pass and for recovery; both rounded up to 64 MiB.

Prints the table and writes benchmarks/results/kubernetes-sizing.json; the overlays in
deploy/kubernetes/ carry these numbers (tests/unit/test_kubernetes.py checks they agree).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
THROUGHPUT = ROOT / "benchmarks" / "results" / "throughput-100k.json"
RESULT = ROOT / "benchmarks" / "results" / "kubernetes-sizing.json"

#: The shops the overlays are made for: customers and peak events per second.
SHOPS = {
    "small": {"customers": 200_000, "peak_events_per_second": 200},
    "large": {"customers": 5_000_000, "peak_events_per_second": 5_000},
}
#: A worker is planned at this share of its measured rate.
HEADROOM = 0.5
#: Seconds of a planned worker's events one replica stands for in the lag (KEDA's lagThreshold).
LAG_SECONDS = 30
PARTITION_STEPS = (8, 12, 16, 24, 32, 48, 64, 96, 128)
#: Customers the benchmark's "loaded" resident set already holds.
LOADED_CUSTOMERS = 10_000
#: A standby customer is its state record in Faust's memory store (a dict of key and value
#: bytes), not a live state: about 590 B of record (the benchmark's, README *Memory*) + 127 B
#: for its bytes objects, key and dict slot (tracemalloc over a dict of 100,000 such entries
#: with the state records of tests/fixtures/records/0.1.0). Not measured in a worker.
STANDBY_BYTES_PER_CUSTOMER = 590 + 127
LIMIT_HEADROOM = 1.25
MIB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    """One shop's workers: what the overlay sets."""

    shop: str
    customers: int
    peak_events_per_second: int
    worker_events_per_second: float
    planned_events_per_second: float
    peak_replicas: int
    partitions: int
    min_replicas: int
    max_replicas: int
    lag_threshold: int
    memory_request_mib: int
    memory_limit_mib: int


def worker_bytes(throughput: dict[str, Any], customers: float) -> float:
    """A worker's resident set holding ``customers`` of its own and a standby copy of as many."""
    worker = throughput["worker"]
    own = worker["rss_loaded_bytes"] + worker["bytes_per_customer"] * max(
        0.0, customers - LOADED_CUSTOMERS
    )
    return own + STANDBY_BYTES_PER_CUSTOMER * customers


def _mib(size: float) -> int:
    return 64 * math.ceil(size / MIB / 64)


def plan(shop: str, throughput: dict[str, Any]) -> Plan:
    """The plan of one of :data:`SHOPS` from a throughput result."""
    customers = SHOPS[shop]["customers"]
    peak = SHOPS[shop]["peak_events_per_second"]
    rate = throughput["worker"]["events_per_second"]
    planned = rate * HEADROOM
    peak_replicas = math.ceil(peak / planned)
    partitions = next(p for p in PARTITION_STEPS if p >= 2 * peak_replicas)
    min_replicas = max(2, math.ceil(peak_replicas / 2))
    request = worker_bytes(throughput, customers / min_replicas)
    limit = worker_bytes(throughput, customers / (min_replicas - 1)) * LIMIT_HEADROOM
    return Plan(
        shop=shop,
        customers=customers,
        peak_events_per_second=peak,
        worker_events_per_second=round(rate, 1),
        planned_events_per_second=round(planned, 1),
        peak_replicas=peak_replicas,
        partitions=partitions,
        min_replicas=min_replicas,
        max_replicas=partitions,
        lag_threshold=int(planned * LAG_SECONDS),
        memory_request_mib=_mib(request),
        memory_limit_mib=_mib(limit),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--throughput", type=Path, default=THROUGHPUT)
    parser.add_argument("--result", type=Path, default=RESULT)
    args = parser.parse_args()
    throughput = json.loads(args.throughput.read_text())
    plans = [plan(shop, throughput) for shop in SHOPS]
    worker = throughput["worker"]
    print(
        f"one worker: {worker['events_per_second']:,.0f} events/s, "
        f"{worker['rss_loaded_bytes'] / MIB:,.0f} MiB with {LOADED_CUSTOMERS:,} customers, "
        f"{worker['bytes_per_customer']:,.0f} B per customer more ({args.throughput.name})"
    )
    header = "shop     customers  peak/s  replicas@peak  partitions  min  max  lag  request  limit"
    print(header)
    for p in plans:
        print(
            f"{p.shop:<8} {p.customers:>9,} {p.peak_events_per_second:>7,} {p.peak_replicas:>14}"
            f" {p.partitions:>11} {p.min_replicas:>4} {p.max_replicas:>4} {p.lag_threshold:>6}"
            f" {p.memory_request_mib:>5}Mi {p.memory_limit_mib:>5}Mi"
        )
    result = {
        "command": "python " + " ".join(sys.argv),
        "throughput": str(args.throughput.relative_to(ROOT)),
        "headroom": HEADROOM,
        "lag_seconds": LAG_SECONDS,
        "standby_bytes_per_customer": STANDBY_BYTES_PER_CUSTOMER,
        "limit_headroom": LIMIT_HEADROOM,
        "plans": [asdict(p) for p in plans],
    }
    args.result.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
