"""Microbenchmark of decoding events: one at a time with pydantic against a fetch with msgspec.

    python benchmarks/decode.py [--events 100000] [--customers 5000] [--fetch 1000]

The simulator's stream (``streams/commands/simulator``) as message values, twice: every event
valid, and with ``--bad-ratio`` (1%) of malformed messages mixed in as a careless producer sends
them. Each is decoded, ``--fetch`` messages at a time, both ways into what the scoring engine
takes, an ``Activity`` per event (and every reject's reason): ``decode_event`` +
``activity_of`` per message (the worker before ``schemas/event_batch.py``), and
``decode_events`` + ``activities_of`` per fetch (the worker's chunk now); and both ways
without the activities (the pydantic events; the columns, what a batch engine takes). CPU time
of this process, in ``--rounds`` rounds of every mode in turn, so the machine's load hits each;
the median and the best round are reported. The two ways are checked to agree on every
outcome first.

Writes benchmarks/results/decode.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas.errors import EventRejected, UnknownEventType  # noqa: E402
from schemas.event_batch import decode_events  # noqa: E402
from schemas.events import ErasureRequestEvent, decode_event  # noqa: E402
from streams.commands.simulator import SimulationConfig, generate_messages  # noqa: E402
from streams.convert import activities_of, activity_of  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "decode.json"

Values = list[bytes | None]


def one_at_a_time(values: Values, not_after: datetime) -> list[Any]:
    """The worker's decoding before: pydantic per message, then its activity."""
    outcomes: list[Any] = []
    for value in values:
        try:
            event = decode_event(value, not_after=not_after)
        except EventRejected as exc:
            outcomes.append((exc.reason, exc.message, exc.field))
            continue
        except UnknownEventType as exc:
            outcomes.append(exc.event_type)
            continue
        outcomes.append(None if isinstance(event, ErasureRequestEvent) else activity_of(event))
    return outcomes


def _decoded(value: bytes | None, not_after: datetime) -> object:
    try:
        return decode_event(value, not_after=not_after)
    except (EventRejected, UnknownEventType) as exc:
        return exc


def by_fetch(values: Values, not_after: datetime, fetch: int) -> list[Any]:
    """The worker's decoding now: ``fetch`` messages at a time into columns and activities."""
    outcomes: list[Any] = []
    for start in range(0, len(values), fetch):
        batch = decode_events(values[start : start + fetch], not_after=not_after)
        activities = activities_of(batch.columns)
        for position, row in enumerate(batch.rows):
            if row >= 0:
                outcomes.append(activities[row])
            elif position in batch.rejected:
                exc = batch.rejected[position]
                outcomes.append((exc.reason, exc.message, exc.field))
            else:
                outcomes.append(batch.skipped[position].event_type)
    return outcomes


def _cpu(fetches: list[Values], decode: Callable[[Values], object]) -> float:
    """CPU microseconds per message of decoding every fetch."""
    started = time.process_time()
    for fetch in fetches:
        decode(fetch)
    return (time.process_time() - started) / sum(map(len, fetches)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--fetch", type=int, default=1_000)
    parser.add_argument("--bad-ratio", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    not_after = datetime.now(UTC) + timedelta(hours=1)  # the worker's default tolerance
    streams: dict[str, Values] = {}
    for name, ratio in (("valid", 0.0), (f"{args.bad_ratio:.0%} malformed", args.bad_ratio)):
        config = SimulationConfig(customers=args.customers, bad_event_ratio=ratio)
        streams[name] = [value for _, value in generate_messages(config, limit=args.events)]
        before = one_at_a_time(streams[name], not_after)
        after = by_fetch(streams[name], not_after, args.fetch)
        assert before == after, f"the two ways disagree on the {name} stream"
        sizes = [len(value or b"") for value in streams[name]]
        rejected = sum(isinstance(outcome, tuple) for outcome in before)
        slowly = sum(
            decode_events(streams[name][i : i + args.fetch], not_after=not_after).validated_slowly
            for i in range(0, len(streams[name]), args.fetch)
        )
        print(
            f"{name}: {len(sizes):,} messages of {statistics.mean(sizes):.0f} bytes on average, "
            f"{rejected:,} rejected, {slowly:,} decided by pydantic in the fetch decoder",
            flush=True,
        )

    with_activities = "decode_event + activity_of, one at a time"
    alone = "decode_event alone, one at a time"
    fetched = f"decode_events + activities_of, {args.fetch} a call"
    # Each takes a fetch and its outcomes are dropped after it, as in the worker.
    modes: dict[str, Callable[[Values], object]] = {
        with_activities: lambda fetch: one_at_a_time(fetch, not_after),
        alone: lambda fetch: [_decoded(value, not_after) for value in fetch],
        fetched: lambda fetch: by_fetch(fetch, not_after, len(fetch)),
        f"decode_events alone, {args.fetch} a call": lambda fetch: decode_events(
            fetch, not_after=not_after
        ),
    }
    # Each mode against the same work one at a time: with the activities, or decoding alone.
    baselines = {mode: with_activities if "activit" in mode else alone for mode in modes}
    fetches = {
        name: [values[i : i + args.fetch] for i in range(0, len(values), args.fetch)]
        for name, values in streams.items()
    }
    runs: dict[tuple[str, str], list[float]] = {(s, m): [] for s in streams for m in modes}
    for round_ in range(1, args.rounds + 1):  # interleaved: the machine's load hits every mode
        for (stream, mode), each in runs.items():
            each.append(_cpu(fetches[stream], modes[mode]))
            print(f"round {round_}  {stream:14s} {mode:44s} {each[-1]:6.2f} us", flush=True)

    results: dict[str, dict[str, Any]] = {}
    print(f"median of {args.rounds} rounds, CPU time per message (x: against the same work")
    print("one at a time):")
    for stream in streams:
        results[stream] = {}
        for mode in modes:
            each = runs[(stream, mode)]
            median = statistics.median(each)
            base = statistics.median(runs[(stream, baselines[mode])])
            results[stream][mode] = {
                "us_per_event_cpu_median": round(median, 3),
                "us_per_event_cpu_min": round(min(each), 3),
                "speedup_cpu_median": round(base / median, 2),
                "rounds_us_per_event": [round(value, 3) for value in each],
            }
            print(
                f"  {stream:14s} {mode:44s} {median:6.2f} us (min {min(each):.2f})  "
                f"x{base / median:.1f}"
            )
    document = {
        "benchmark": "decode",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "versions": {name: version(name) for name in ("msgspec", "pydantic", "orjson")},
        "arguments": {
            "events": args.events,
            "customers": args.customers,
            "fetch": args.fetch,
            "bad_ratio": args.bad_ratio,
            "rounds": args.rounds,
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
