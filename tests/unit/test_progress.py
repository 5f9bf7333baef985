"""Progress of long commands: plain lines now and then when the output is not a terminal."""

from __future__ import annotations

import io

from rich.console import Console

from streams.commands.progress import event_progress


def test_off_a_terminal_progress_is_a_line_every_few_seconds_and_one_at_the_end() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    now = [0.0]

    with event_progress(
        console, 1_000, "scoring", every_seconds=10.0, clock=lambda: now[0]
    ) as done:
        for count in range(1, 1_001):
            now[0] = count * 0.05  # 20 events a second: 50 s in all
            done(count)

    lines = out.getvalue().splitlines()
    assert len(lines) == 5 + 1  # at 10, 20, 30, 40 and 50 s, then the end
    assert lines[0] == "scoring: 200 of 1,000 events (20%), 20 events/s, 40 s left"
    assert lines[-1] == "scoring: 1,000 of 1,000 events (100%), 20 events/s, done in 50 s"


def test_on_a_terminal_progress_is_a_bar_that_goes_away() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)

    with event_progress(console, 10, "scoring") as done:
        for count in range(1, 11):
            done(count)

    assert "scoring:" not in out.getvalue()  # no plain lines
