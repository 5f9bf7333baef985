"""Progress of a long command over events: a bar on a terminal, a line now and then elsewhere.

On a terminal, rich draws the events done, events per second and the time left; written to a
file or a pipe (a CI log, ``nohup``), a bar is noise, so a plain line says the same every
``every_seconds``, and once more at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = ["event_progress", "progress_line"]

logger = logging.getLogger(__name__)

#: Seconds between two progress lines when the output is not a terminal.
LINE_EVERY_SECONDS = 10.0
# Redrawing a bar costs; counts in between are only remembered.
_DRAW_EVERY_SECONDS = 0.1


class _RateColumn(ProgressColumn):
    """Events per second, averaged over rich's recent samples."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} events/s")


def progress_line(description: str, done: int, total: int, seconds: float) -> str:
    """One plain progress line.

    >>> progress_line("scoring", 250_000, 1_000_000, 100.0)
    'scoring: 250,000 of 1,000,000 events (25%), 2,500 events/s, 5 min 0 s left'
    >>> progress_line("scoring", 10, 10, 2.0)
    'scoring: 10 of 10 events (100%), 5 events/s, done in 2 s'
    """
    rate = done / seconds if seconds > 0 else 0.0
    share = f" ({done / total:.0%})" if total else ""
    if done >= total:
        rest = f"done in {_duration(seconds)}"
    elif rate > 0:
        rest = f"{_duration((total - done) / rate)} left"
    else:
        rest = "time left unknown"
    return f"{description}: {done:,} of {total:,} events{share}, {rate:,.0f} events/s, {rest}"


@contextmanager
def event_progress(
    console: Console,
    total: int,
    description: str,
    *,
    every_seconds: float = LINE_EVERY_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Callable[[int], None]]:
    """``update(done)`` to call as events are done (as often as is convenient): a bar on a
    terminal, else a :func:`progress_line` every ``every_seconds`` and at the end."""
    if console.is_terminal:
        with _bar(console, total, description, clock) as draw:
            yield draw
        return
    started = clock()
    done = [0]
    next_line = [started + every_seconds]

    def update(count: int) -> None:
        done[0] = count
        now = clock()
        if now >= next_line[0]:
            next_line[0] = now + every_seconds
            console.print(progress_line(description, count, total, now - started), highlight=False)

    yield update
    console.print(progress_line(description, done[0], total, clock() - started), highlight=False)


@contextmanager
def _bar(
    console: Console, total: int, description: str, clock: Callable[[], float]
) -> Iterator[Callable[[int], None]]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        drawn = [clock()]

        def update(count: int) -> None:
            now = clock()
            if now - drawn[0] >= _DRAW_EVERY_SECONDS or count >= total:
                drawn[0] = now
                progress.update(task, completed=count)

        yield update


def _duration(seconds: float) -> str:
    """``seconds`` as minutes and seconds.

    >>> _duration(59.4), _duration(3725)
    ('59 s', '62 min 5 s')
    """
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"
