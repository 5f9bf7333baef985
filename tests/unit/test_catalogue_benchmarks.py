"""What the catalogue benchmarks compare: the engine's workload with and without a
catalogue, and the turns of ``benchmarks/catalogue_cost.py``."""

from __future__ import annotations

from benchmarks.catalogue_cost import order
from benchmarks.engine_workload import Workload


def test_the_engine_workload_without_a_catalogue_has_the_same_events_and_no_items() -> None:
    with_items = Workload.simulated(customers=50, events=200, days=2.0, seed=3)
    without = Workload.simulated(customers=50, events=200, days=2.0, seed=3, items=0)

    assert without.events == with_items.events
    assert without.catalogue == []
    assert len(with_items.catalogue) == 5_000
    assert len(Workload.simulated(50, 200, 2.0, 3, items=40).catalogue) == 40


def test_each_row_of_a_turn_goes_first_in_turn() -> None:
    turns = [order(turn, baseline=False) for turn in range(4)]
    assert [first for first, _ in turns] == ["no_catalogue", "catalogue"] * 2
    assert all(sorted(kinds) == ["catalogue", "no_catalogue"] for kinds in turns)
    firsts = {order(turn, baseline=True)[0] for turn in range(3)}
    assert firsts == {"no_catalogue", "catalogue", "baseline"}
