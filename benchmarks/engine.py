"""The scoring core alone, by batch size: events/s and re-scores/s of the engine and its models.

    python benchmarks/engine.py [--customers 1500] [--events 15000] [--days 30]
                                [--batch-sizes 1,64,1000,10000] [--baseline DIR]
                                [--repeat N] [--catalogue-items 5000]

No Kafka, no Redis: ``online_models.scoring.engine.ScoringEngine`` driving ``CustomerScorer`` with
every model on (churn, k-means segments and outliers, lifetime, value, sentiment on the text
events, the recommender with a catalogue of 5,000 items through its content model, alerts),
in this process, on one core (numpy's BLAS pinned to one thread, as the worker pins it).
``--catalogue-items 0`` scores the same events with no catalogue: two runs, with and without,
show what the catalogue costs the core.

The workload is the throughput benchmark's (``benchmarks/throughput_workload.py``:
``make_events`` and ``make_catalogue``): ``--events`` events of every type from ``--customers``
customers (a tenth of them send a third of the events) spread evenly over ``--days`` of event
time, so most customers are silent on most days and are re-scored daily as the watermark passes
their deadlines, as in production. Events are decoded before the clock starts (the core's input
is an ``Activity``). For each batch size, from a fresh scorer and the same events:

1. **Events.** The events go through the engine a batch at a time, on one shard, shaped like
   one fetch of the worker (``streams/app.py``, ``handle_batch``, and ``streams/batch_loop.py``):
   ``engine.process_many`` of the batch (each customer scored once, as of their latest
   event, then the re-scores the batch's latest event time made due), or, for an engine
   without it (a ``--baseline`` from before it), each event's ``engine.process``; then the
   batch's flush ranks the recommendations of every customer it scored, once each
   (``recommend_many`` with the scores' times, as ``_render_many`` does before writing to
   Redis). See :func:`score_batch` for the shape expected.
2. **Re-scores only.** Then event time moves on ``--rescore-days`` days, a day at a time,
   with no events: ``engine.advance(day, limit=batch size)`` until nobody is due, each chunk
   of re-scored customers ranked as a flush would. Only silent customers are scored here.

Each row is measured in a fresh process (one that measured a batch size before measures the
next slower). Its CPU time is charged to the part of the work it was spent in: scoring
events, re-scoring due customers (``engine.advance``, wherever it is called from), ranking
each kind's recommendations at the flush, and the lifetime model's daily refit and the
k-means segmenter's group proposals (done inline by a scorer alone, every 16 points for the
proposals; a group of workers does both in the merger, once a day of event time and once per
version), kept apart and out of the rates. Events/s is events over the events' scoring and
ranking; re-scores/s is re-scores over theirs.

With ``--baseline DIR`` (a checkout of an earlier commit, c151a60 or later: ``git worktree
add DIR COMMIT``), each batch size is measured first with that checkout's packages over the
same events (``DIR`` first on the child's PYTHONPATH, this checkout's environment), then
with this checkout's, so before and after are rows of one run and a change in the machine's
load hits both alike. With ``--repeat N`` each batch size is measured N times, before and
after taking turns, and the table shows medians (the ratios: the median of each turn's):
one run of a batch size moved up to ~20% on a shared machine. Prints a table; writes
benchmarks/results/engine.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Appended, not prepended: a --baseline child finds the other checkout's packages first on
# its PYTHONPATH; everywhere else this checkout's are the only ones.
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import online_models  # noqa: E402
from benchmarks.engine_report import RATES, print_row, report  # noqa: E402
from benchmarks.engine_workload import Event, Stopwatch, Workload  # noqa: E402
from benchmarks.throughput_workload import ITEMS  # noqa: E402
from benchmarks.worker_harness import commit_of  # noqa: E402
from online_models.customer.activity import DAY  # noqa: E402
from online_models.scoring.engine import Scored, ScoringEngine  # noqa: E402
from online_models.scoring.scorer import CustomerScorer  # noqa: E402
from streams.numeric_threads import one_numeric_thread  # noqa: E402

__all__ = ["Workload", "compare", "measure", "measure_all", "score_batch"]

RESULTS = ROOT / "benchmarks" / "results" / "engine.json"


def score_batch(engine: ScoringEngine, batch: Sequence[Event]) -> tuple[list[Scored], list[Scored]]:
    """The events' own scores and the re-scores that came with them, for one fetch's events.

    The engine's batch entry point, when it has one, is ``process_many(events, shard=0)``
    (see ``ScoringEngine.process_many``): the events, each (customer id, activity, offset,
    event id) as ``process`` takes them, in delivery order, in; a ``BatchScores`` out, whose
    ``scored`` holds the duplicates' stored scores and one score per customer the batch
    touched (as of their latest event) and whose ``rescored`` holds the re-scores of whoever
    the batch's latest event time made due (at most ``MAX_RESCORES_PER_EVENT`` per event).
    The events' count is the batch's length, however many scores it gave.

    Without it, what the worker did before: ``process`` per event, each moving the watermark
    and re-scoring (at most ``MAX_RESCORES_PER_EVENT``) whoever its event time made due.
    """
    process_many = getattr(engine, "process_many", None)
    if process_many is not None:
        scores = process_many(batch)
        return scores.scored, scores.rescored
    own: list[Scored] = []
    rescored: list[Scored] = []
    process = engine.process
    for customer_id, activity, offset, event_id in batch:
        first, *rest = process(customer_id, activity, offset=offset, event_id=event_id)
        own.append(first)
        rescored += rest
    return own, rescored


def rank_flush(scorer: CustomerScorer, scored: Sequence[Scored]) -> int:
    """Rank what one flush writes to Redis: each customer once, with their latest score
    (``recommend_many`` keeps or re-ranks their list); returns the customers ranked."""
    latest = {each.customer_id: each.outcome for each in scored}
    scorer.recommend_many(
        [(customer_id, outcome.state) for customer_id, outcome in latest.items()],
        as_of=[outcome.score.as_of for outcome in latest.values()],
    )
    return len(latest)


def measure(
    workload: Workload, events: Sequence[Event], batch_size: int, rescore_days: int
) -> dict[str, Any]:
    """One batch size, from a fresh scorer: the events, then ``rescore_days`` of re-scores."""
    scorer = CustomerScorer()
    if workload.catalogue:
        scorer.use_catalogue(workload.content_model())
    engine = ScoringEngine(scorer, {})
    watch = Stopwatch()
    advance = engine.advance  # the idle days call it directly, charged to their own part
    engine.advance = watch.timed("rescores", advance)  # type: ignore[method-assign]
    lifetime = scorer.lifetime_model
    lifetime.fit = watch.timed("lifetime_refits", lifetime.fit)  # type: ignore[method-assign]
    # A segmenter alone founds and dissolves group segments itself, every 16 points; a
    # worker's is shared and leaves that to the merger, once per version of the group model.
    segmenter = scorer.segmenter
    if hasattr(segmenter, "_propose_group"):
        proposals = watch.timed("group_proposals", segmenter._propose_group)
        segmenter._propose_group = proposals  # type: ignore[method-assign]
    counts: defaultdict[str, int] = defaultdict(int)
    started = time.perf_counter()
    _score_events(engine, events, batch_size, watch, counts)
    event_wall = time.perf_counter() - started
    started = time.perf_counter()
    last = engine.watermark()
    for day in range(1, rescore_days + 1):
        _rescore_day(engine, advance, last + day * DAY, batch_size, watch, counts)
    idle_wall = time.perf_counter() - started
    return _row(batch_size, engine, watch, counts, event_wall, idle_wall)


def _score_events(
    engine: ScoringEngine,
    events: Sequence[Event],
    batch_size: int,
    watch: Stopwatch,
    counts: defaultdict[str, int],
) -> None:
    """The events a batch at a time, each batch's customers ranked at its flush.

    The worker ranks a flush in one call; here the events' customers and the re-scored ones
    are ranked in a call each, so that each kind's ranking is its own (a customer with an
    event and a re-score in one batch, rare below a day of events, is ranked in both).
    """
    for start in range(0, len(events), batch_size):
        watch.start("events")
        batch = events[start : start + batch_size]
        own, rescored = score_batch(engine, batch)
        watch.stop()
        counts["events"] += len(batch)
        counts["rescores"] += len(rescored)
        for kind, scored in (("events", own), ("rescores", rescored)):
            if scored:
                watch.start(f"rank_{kind}")
                counts[f"ranked_{kind}"] += rank_flush(engine.scorer, scored)
                watch.stop()


def _rescore_day(
    engine: ScoringEngine,
    advance: Callable[..., list[Scored]],
    watermark: float,
    batch_size: int,
    watch: Stopwatch,
    counts: defaultdict[str, int],
) -> None:
    """Event time moved to ``watermark`` with no events: its due customers, ``batch_size``
    at a time, each chunk ranked as a flush would."""
    while True:
        waiting = engine.scheduled()
        watch.start("idle_rescores")
        rescored = advance(watermark, limit=batch_size)
        watch.stop()
        if rescored:
            counts["idle_rescores"] += len(rescored)
            watch.start("rank_idle_rescores")
            rank_flush(engine.scorer, rescored)
            watch.stop()
        elif engine.scheduled() == waiting:
            return  # nobody left due by this day (a chunk of customers all skipped is not it)


def _row(
    batch_size: int,
    engine: ScoringEngine,
    watch: Stopwatch,
    counts: dict[str, int],
    event_wall: float,
    idle_wall: float,
) -> dict[str, Any]:
    seconds = watch.seconds
    event_cpu = seconds["events"] + seconds["rank_events"]
    rescore_cpu = seconds["rescores"] + seconds["rank_rescores"]
    idle_cpu = seconds["idle_rescores"] + seconds["rank_idle_rescores"]
    events, rescores, idle = counts["events"], counts["rescores"], counts["idle_rescores"]
    return {
        "batch_size": batch_size,
        "entry_point": "process_many" if hasattr(engine, "process_many") else "process per event",
        "events": events,
        "rescores": rescores,
        "idle_rescores": idle,
        "customers_ranked": {
            "events": counts["ranked_events"],
            "rescores": counts["ranked_rescores"],
        },
        "cpu_seconds": {part: round(value, 3) for part, value in sorted(seconds.items())},
        "wall_seconds": {"events_phase": round(event_wall, 3), "idle_phase": round(idle_wall, 3)},
        "lifetime_refits": watch.calls["lifetime_refits"],
        "group_proposals": watch.calls["group_proposals"],
        "events_per_second": _per_second(events, event_cpu),
        "us_per_event": _us_each(event_cpu, events),
        "rescores_per_second": _per_second(rescores, rescore_cpu),
        "us_per_rescore": _us_each(rescore_cpu, rescores),
        "idle_rescores_per_second": _per_second(idle, idle_cpu),
        "us_per_idle_rescore": _us_each(idle_cpu, idle),
        "events_per_second_with_rescores": _per_second(events, event_cpu + rescore_cpu),
    }


def _per_second(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def _us_each(seconds: float, count: int) -> float:
    return round(seconds / count * 1e6, 1) if count else 0.0


def measure_all(
    workload: Workload, batch_sizes: Sequence[int], rescore_days: int
) -> list[dict[str, Any]]:
    """A row per batch size, in this process, each from a fresh scorer over the same events."""
    one_numeric_thread()
    events = workload.decoded()
    return [measure(workload, events, size, rescore_days) for size in batch_sizes]


def compare(
    workload: Workload,
    batch_sizes: Sequence[int],
    rescore_days: int,
    baseline: Path | None = None,
    repeat: int = 1,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """This checkout's row of each batch size and, with ``baseline``, that checkout's
    measured just before it, so that a change in the machine's load hits both alike.

    Every row is measured in a process of its own: one that measured a batch size before
    measured the next 10-25% slower than a fresh one, with the same code (not explained).
    With ``repeat``, each batch size is measured that many times, before and after taking
    turns; a row's rates are the medians of its runs, and the after row's
    ``after_over_before`` the median of each turn's ratio (a load that comes and goes hits
    a turn's two runs alike).
    """
    rows: list[dict[str, Any]] = []
    before: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="crm-engine-") as tmp:
        path = Path(tmp) / "workload.json"
        workload.dump(path)
        for batch_size in batch_sizes:
            befores, afters = [], []
            for _ in range(repeat):
                if baseline is not None:
                    befores.append(measure_in_child(baseline, path, batch_size, rescore_days))
                    print_row(befores[-1], "before")
                afters.append(measure_in_child(ROOT, path, batch_size, rescore_days))
                print_row(afters[-1], "after" if baseline is not None else "")
            rows.append(_median_row(afters))
            if befores:
                before.append(_median_row(befores))
                _warn_unlike(before[-1], rows[-1])
                rows[-1]["after_over_before"] = {
                    key: statistics.median(
                        a[key] / b[key] for a, b in zip(afters, befores, strict=True)
                    )
                    for key in RATES
                    if all(b[key] for b in befores)
                }
    return rows, before


def _warn_unlike(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Say so when the baseline's own script charged a lone segmenter's group proposals to
    the rates and this one charges them apart: with groups on in the baseline, after / before
    flatters after (a review measured 1.07 / 1.20 events / re-scores at 64, same code)."""
    if "group_proposals" not in before and after.get("group_proposals"):
        after["warning"] = (
            "the baseline's engine.py charges group proposals to the rates; this one keeps "
            "them apart: with groups on in the baseline (c537674 to 99d6aab), the ratios "
            "flatter this checkout"
        )
        print(f"warning: {after['warning']}", flush=True)


def _median_row(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One row of the runs of a batch size: the first's counts and CPU seconds, each rate the
    median of the runs' (every run's rates kept under ``runs`` when there are several)."""
    row = dict(runs[0])
    if len(runs) > 1:
        row.update({key: statistics.median(run[key] for run in runs) for key in RATES})
        row["runs"] = [{key: run[key] for key in RATES} for run in runs]
    return row


def measure_in_child(
    checkout: Path, workload: Path, batch_size: int, rescore_days: int
) -> dict[str, Any]:
    """The row of ``checkout``'s packages over the events of ``workload`` (a dumped
    :class:`Workload`): the checkout's own copy of this script (this one where it has none)
    in a child process, with the checkout first on its PYTHONPATH and this checkout's
    dependencies. Its own copy: a checkout from before a module moved imports it from where
    it was then, and drives its engine through the entry points it had."""
    source = checkout.resolve()
    result_path = workload.with_name("result.json")
    script = source / "benchmarks" / "engine.py"
    if not script.is_file():
        script = Path(__file__).resolve()
    command = [sys.executable, str(script), "--workload", str(workload),
               "--result", str(result_path), "--batch-sizes", str(batch_size),
               "--rescore-days", str(rescore_days)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(source)}
    subprocess.run(command, env=env, cwd=workload.parent, check=True)
    result = json.loads(result_path.read_text())
    if Path(result["code"]) != source:
        msg = f"the child ran {result['code']}'s packages, not {source}'s"
        raise SystemExit(msg)
    [row] = result["results"]
    return dict(row)


def _version(checkout: Path) -> str:
    """``checkout``'s short commit, ``+ changes`` when its tracked files differ from it."""
    changed = subprocess.run(
        ["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return commit_of(checkout) + (" + changes" if changed else "")


def _batch_sizes(text: str) -> list[int]:
    sizes = [int(size) for size in text.split(",") if size.strip()]
    if not sizes or min(sizes) < 1:
        msg = f"batch sizes must be positive integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_500)
    parser.add_argument("--events", type=int, default=15_000)
    parser.add_argument("--days", type=float, default=30.0, help="event time the events span")
    parser.add_argument("--batch-sizes", type=_batch_sizes, default=[1, 64, 1_000, 10_000])
    parser.add_argument(
        "--rescore-days", type=int, default=3, help="days of re-scores only, after the events"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--catalogue-items",
        type=int,
        default=ITEMS,
        help="items in the catalogue the content model reads (the throughput benchmark's); "
        "0: no catalogue, to measure what the catalogue costs",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of an earlier commit (git worktree add DIR COMMIT): its packages "
        "score the same events first, so before and after are rows of one run",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each batch size this many times (before and after taking turns) and "
        "report medians: on a shared machine, 3 or more",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    # A child measuring rows (see compare): the parent's workload in, the rows out.
    parser.add_argument("--workload", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    code = str(Path(online_models.__file__).resolve().parents[1])
    if args.result is not None:
        rows = measure_all(Workload.load(args.workload), args.batch_sizes, args.rescore_days)
        args.result.write_text(json.dumps({"code": code, "results": rows}))
        return

    if args.catalogue_items < 0:
        parser.error(f"--catalogue-items must be 0 or more, got {args.catalogue_items}")
    workload = Workload.simulated(
        args.customers, args.events, args.days, args.seed, args.catalogue_items
    )
    document: dict[str, Any] = {
        "benchmark": "engine",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "arguments": {key: value for key, value in vars(args).items() if value is not None},
        "workload": workload.facts(),
    }
    facts = document["workload"]
    print(
        f"{facts['events']:,} events ({facts['text_events']:,} with text) of "
        f"{facts['customers']:,} customers over {facts['event_time_days']} days, "
        f"{facts['catalogue_items']:,} catalogue items",
        flush=True,
    )
    document["arguments"] = json.loads(json.dumps(document["arguments"], default=str))
    document["commit"] = _version(ROOT)
    if args.baseline is not None:
        print(f"before: {args.baseline}, after: this checkout, {code}", flush=True)
    rows, before = compare(
        workload, args.batch_sizes, args.rescore_days, args.baseline, max(1, args.repeat)
    )
    document["results"] = rows
    if args.baseline is not None:
        source = args.baseline.resolve()
        document["baseline"] = {"commit": _version(source), "code": str(source), "results": before}
    report(document)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
