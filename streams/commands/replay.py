"""``crm-scorer replay``: a transactions file sent to the events topic in event-time order."""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from kafka.errors import KafkaError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from schemas.errors import CrmScorerError
from streams.commands.producer import EventProducer, check_acknowledged
from streams.commands.transactions import LoadedEvent, Transactions
from streams.settings import Settings
from streams.topics import BrokerUnavailable

__all__ = ["InvalidRate", "ReplayResult", "parse_rate", "print_report", "replay", "send_paced"]

logger = logging.getLogger(__name__)

_RATE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:/\s*s)?", re.IGNORECASE)
_PROGRESS_EVERY_SECONDS = 0.1


class InvalidRate(CrmScorerError):
    """A ``--rate`` that is not N/s, N or max."""


@dataclass(frozen=True)
class ReplayResult:
    """What a replay sent, and how long it took (wall clock, acknowledgements included)."""

    events: Sequence[LoadedEvent]
    seconds: float

    @property
    def sent(self) -> int:
        """Events sent and acknowledged."""
        return len(self.events)


def parse_rate(text: str | None) -> float | None:
    """Events per second of ``--rate``: ``500/s`` or ``500``; ``max`` or nothing: no pacing.

    >>> parse_rate("500/s"), parse_rate("2.5"), parse_rate("max"), parse_rate(None)
    (500.0, 2.5, None, None)
    >>> parse_rate("fast")
    Traceback (most recent call last):
    ...
    streams.commands.replay.InvalidRate: 'fast' is not a rate: write N/s (e.g. 500/s), N, or max
    """
    if text is None or text.strip().lower() == "max":
        return None
    match = _RATE.fullmatch(text.strip())
    if match is None:
        msg = f"{text!r} is not a rate: write N/s (e.g. 500/s), N, or max"
        raise InvalidRate(msg)
    rate = float(match.group(1))
    if rate <= 0:
        msg = f"{text!r}: a rate must be more than 0 events per second (or max)"
        raise InvalidRate(msg)
    return rate


def send_paced(
    send: Callable[[LoadedEvent], object],
    events: Sequence[LoadedEvent],
    *,
    rate: float | None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
    progress: Callable[[int, LoadedEvent], object] | None = None,
) -> None:
    """``send`` each event in order, at most ``rate`` per second; ``progress`` now and then.

    Event ``i`` leaves no earlier than ``i / rate`` seconds after the first, on ``clock``: a
    slow send is caught up on, never made up for by a burst beyond the schedule.

    >>> now = [0.0]
    >>> events = [None] * 5
    >>> send_paced(lambda e: None, events, rate=10, clock=lambda: now[0],
    ...            sleep=lambda s: now.__setitem__(0, now[0] + s))
    >>> round(now[0], 3)
    0.4
    """
    started = clock()
    reported = started
    for index, event in enumerate(events):
        if rate is not None:
            delay = started + index / rate - clock()
            if delay > 0:
                sleep(delay)
        send(event)
        if progress is not None and (clock() - reported >= _PROGRESS_EVERY_SECONDS):
            reported = clock()
            progress(index + 1, event)
    if progress is not None and events:
        progress(len(events), events[-1])


def replay(
    settings: Settings,
    events: Sequence[LoadedEvent],
    *,
    rate: float | None,
    console: Console,
    wait: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
) -> ReplayResult:
    """Send ``events`` to ``CRM_EVENTS_TOPIC`` keyed by customer_id, with a progress bar.

    Raises :class:`BrokerUnavailable` when the broker does not answer within ``wait`` seconds
    or does not acknowledge every event.
    """
    if not events:
        return ReplayResult(events, 0.0)
    failures: list[BaseException] = []
    started = clock()
    try:
        with EventProducer(settings, timeout=wait) as producer:

            def send(event: LoadedEvent) -> None:
                producer.send_event(event.document).add_errback(failures.append)

            with _progress_bar(console, len(events)) as progress:
                send_paced(send, events, rate=rate, clock=clock, progress=progress)
                producer.flush()
    except KafkaError as exc:
        msg = f"sending to CRM_BROKER={settings.broker} failed: {exc}"
        raise BrokerUnavailable(msg) from exc
    check_acknowledged(settings, failures, len(events), "events")
    return ReplayResult(events, clock() - started)


@contextmanager
def _progress_bar(console: Console, total: int) -> Iterator[Callable[[int, LoadedEvent], None]]:
    """A rich progress bar; ``update(done, event)`` also shows the event time reached."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[event_time]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("sending", total=total, event_time="")

        def update(done: int, event: LoadedEvent) -> None:
            event_time = f"event time {event.event.timestamp:%Y-%m-%d %H:%M}"
            progress.update(task, completed=done, event_time=event_time)

        yield update


def print_report(
    console: Console, transactions: Transactions, result: ReplayResult, topic: str
) -> None:
    """What was read, sent and rejected, and the event time the sent events span."""
    report = transactions.report
    types = Counter(loaded.event.type for loaded in transactions.events)
    table = Table(title="crm-scorer replay", show_header=False)
    table.add_row("rows read", f"{report.rows:,}")
    made = ", ".join(f"{count:,} {kind}" for kind, count in types.most_common())
    table.add_row("events in the file", made or "none")
    table.add_row("events sent", f"{result.sent:,} to {topic}")
    if result.sent:
        per_second = result.sent / max(result.seconds, 1e-9)
        table.add_row("sent in", f"{result.seconds:.1f} s ({per_second:,.0f} events/s)")
        first, last = result.events[0], result.events[-1]
        table.add_row("first event time", first.event.timestamp.isoformat())
        table.add_row("last event time", last.event.timestamp.isoformat())
        table.add_row("event-time span", f"{(last.time - first.time) / 86_400:,.1f} days")
    table.add_row("rows rejected", f"{report.rejected:,}")
    console.print(table)
    if not report.reasons:
        return
    rejects = Table(title="rows rejected, by reason")
    rejects.add_column("reason")
    rejects.add_column("rows", justify="right")
    rejects.add_column("first row", justify="right")
    rejects.add_column("why (first row)")
    for reason, count in report.reasons.most_common():
        example = report.examples[reason]
        rejects.add_row(reason, f"{count:,}", str(example.row), example.message)
    console.print(rejects)
