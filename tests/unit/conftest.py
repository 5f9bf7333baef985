"""Fixtures shared by the unit tests: a small world whose churn model learned what silence means."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import pytest

from online_models.customer.activity import DAY, Activity
from online_models.scoring.engine import ScoringEngine
from online_models.scoring.scorer import CustomerScorer, ScorerConfig
from online_models.scoring.state import CustomerState

logger = logging.getLogger(__name__)

T0 = 1_735_689_600.0  # 2025-01-01T00:00:00Z
# Loyal customers buy about weekly all year and browse in between; churners buy a few times
# at longer gaps, come back once to browse, and then stay silent for 200+ days.
WORLD_DAYS = 365.0


@dataclass
class ChurnWorld:
    """The world scored like the worker does: its scorer, the customer states, every label."""

    scorer: CustomerScorer
    states: dict[str, CustomerState]
    labels: list[bool]


def _purchase(time: float, item: str, amount: float) -> Activity:
    return Activity("purchase", time, item_id=item, amount=amount, quantity=1)


def synthetic_world(seed: int) -> list[tuple[str, Activity]]:
    """100 loyal customers and 100 churners over a year, in event-time order."""
    rng = random.Random(seed)
    events: list[tuple[str, Activity]] = []

    def item() -> str:
        return f"sku-{rng.randrange(30)}"

    for n in range(100):
        customer = f"loyal-{n:03d}"
        day = rng.uniform(0.0, 7.0)
        while day < WORLD_DAYS:
            events.append((customer, _purchase(T0 + day * DAY, item(), rng.uniform(20.0, 80.0))))
            if rng.random() < 0.3:
                browse = T0 + (day + rng.uniform(1.0, 4.0)) * DAY
                events.append((customer, Activity("view", browse, item_id=item())))
            day += rng.uniform(5.0, 9.0)
    for n in range(100):
        customer = f"churner-{n:03d}"
        day = rng.uniform(0.0, 60.0)
        for _ in range(rng.randint(2, 4)):
            events.append((customer, _purchase(T0 + day * DAY, item(), rng.uniform(20.0, 80.0))))
            day += rng.uniform(8.0, 20.0)
        events.append((customer, Activity("view", T0 + day * DAY, item_id=item())))
        assert WORLD_DAYS - day >= 200.0  # then silence
    events.sort(key=lambda event: event[1].time)
    return events


def run_world(events: list[tuple[str, Activity]]) -> ChurnWorld:
    """Score a stream like the worker: one shard, silent customers re-scored as time moves."""
    # The quality window covers every label of the run, not only the last thousand.
    scorer = CustomerScorer(ScorerConfig(quality_window=20_000, recommender_factors=4))
    engine = ScoringEngine(scorer, {})
    labels: list[bool] = []
    for customer, activity in events:
        for scored in engine.process(customer, activity):
            labels += scored.outcome.labels
    return ChurnWorld(scorer, dict(engine.states), labels)


@pytest.fixture(scope="session")
def churn_world() -> ChurnWorld:
    """The synthetic world, scored once (deep-copy what a test changes)."""
    return run_world(synthetic_world(seed=0))
