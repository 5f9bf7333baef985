"""Unit tests of ``crm-scorer replay``'s pacing: how fast events leave, on a driven clock."""

from __future__ import annotations

import pytest

from streams.commands.replay import InvalidRate, parse_rate, send_paced


class DrivenClock:
    """A monotonic clock that moves only when slept on or told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


@pytest.mark.parametrize(
    ("text", "rate"),
    [("500/s", 500.0), ("500", 500.0), (" 12.5 / S ", 12.5), ("max", None), (None, None)],
)
def test_rates_a_user_writes(text: str | None, rate: float | None) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "500/m", "-5", "0", "0/s", ""])
def test_a_bad_rate_says_how_to_write_one(text: str) -> None:
    with pytest.raises(InvalidRate) as caught:
        parse_rate(text)
    assert repr(text) in str(caught.value)


def test_events_leave_on_the_schedule_of_the_rate() -> None:
    clock = DrivenClock()
    sent_at: list[float] = []
    send_paced(
        lambda event: sent_at.append(clock()),
        list(range(5)),
        rate=4,
        clock=clock,
        sleep=clock.sleep,
    )
    assert sent_at == [100.0, 100.25, 100.5, 100.75, 101.0]


def test_a_slow_send_is_caught_up_on_without_a_burst_beyond_the_schedule() -> None:
    clock = DrivenClock()
    sent_at: list[float] = []

    def slow_first_send(event: object) -> None:
        sent_at.append(clock())
        if len(sent_at) == 1:
            clock.now += 1.0  # the broker took a second to answer

    send_paced(slow_first_send, list(range(4)), rate=2, clock=clock, sleep=clock.sleep)
    assert sent_at == [100.0, 101.0, 101.0, 101.5]


def test_without_a_rate_nothing_sleeps_and_progress_ends_complete() -> None:
    clock = DrivenClock()
    progress: list[int] = []
    send_paced(
        lambda event: None,
        list(range(3)),
        rate=None,
        clock=clock,
        sleep=lambda seconds: pytest.fail("slept without a rate"),
        progress=lambda done, event: progress.append(done),
    )
    assert progress[-1] == 3
    assert clock.now == 100.0
