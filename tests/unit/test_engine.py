"""The ScoringEngine: silent customers' scores follow event time, without scanning everyone.

Every shard (a Kafka partition) has its own event-time watermark, moved by its events. A
customer who goes silent is re-scored as the watermark passes their next re-score time, so
the churn risk in Redis keeps up with the silence; re-scores stop when nothing can change.
"""

from __future__ import annotations

import copy
import heapq
import random
import sys
from itertools import pairwise

import orjson
import pytest

from online_models.churn.labels import PendingExample
from online_models.customer.activity import DAY, Activity
from online_models.scoring.deadlines import Deadlines
from online_models.scoring.engine import Scored, ScoringEngine
from online_models.scoring.scorer import CustomerScorer, ScoreOutcome
from online_models.scoring.state import CustomerState

T0 = 1_735_689_600.0  # 2025-01-01T00:00:00Z
HOUR = 3_600.0
HORIZON_DAYS = 90.0


def purchase(time: float, item: str = "sku-1") -> Activity:
    return Activity("purchase", time, item_id=item, amount=25.0, quantity=1)


def rescores_of(customer_id: str, scored: list[Scored]) -> list[ScoreOutcome]:
    return [each.outcome for each in scored if each.customer_id == customer_id]


@pytest.mark.slow
def test_a_silent_customers_score_follows_the_watermark_other_customers_move(churn_world):
    # A scorer that learned from a year of customers that silence means churn.
    engine = ScoringEngine(copy.deepcopy(churn_world.scorer), {})
    start = T0 + 400 * DAY  # after the world's year
    for week in range(3):
        engine.process("quiet", purchase(start + week * 7 * DAY, item=f"sku-{week}"))
    last = start + 14 * DAY
    engine.process("elsewhere", purchase(last), shard=1)

    # Another customer of the shard browses every five hours for 300 days.
    rescores: list[ScoreOutcome] = []
    watermarks: list[float] = []
    time = last
    while time < last + 300 * DAY:
        time += 5 * HOUR
        scored = engine.process("busy", Activity("view", time, item_id="sku-9"))
        rescores += rescores_of("quiet", scored)
        watermarks += [engine.watermark(0)] * len(rescores_of("quiet", scored))
        assert rescores_of("elsewhere", scored) == []  # another shard's customer

    as_of = [outcome.score.as_of for outcome in rescores]
    days = [(t - last) / DAY for t in as_of]
    # The score is as of the shard's event time, never older than a day and five hours.
    assert as_of == watermarks
    assert days[0] <= 1.0 + 5 / 24
    assert all(b - a <= 1.0 + 5 / 24 for a, b in pairwise(days))
    # At least once in every event-time day of the silence, until the re-scores stop.
    assert {int(day) for day in days} >= set(range(1, int(days[-1])))
    assert all(o.score.event_time == last for o in rescores)  # still their latest event

    # The churn risk rises with the silence.
    risk = {int(day): outcome.score.churn_risk for day, outcome in zip(days, rescores, strict=True)}
    assert risk[1] < risk[15] < risk[30] < risk[60]
    assert risk[60] > 0.9

    # Silent for three horizons with every example labelled: no more re-scores.
    assert days[-1] == pytest.approx(270.0, abs=5 / 24)
    assert [o.labels for o in rescores if o.labels][-1] == [True]
    assert rescores[-1].state.pending == []
    assert engine.scheduled(0) == 1  # only busy
    assert engine.scheduled(1) == 1  # elsewhere waits for its own shard's events


class CountingStates(dict[str, CustomerState]):
    """A customer table that counts the states read from it."""

    reads = 0

    def get(self, customer_id, default=None):  # type: ignore[override]
        self.reads += 1
        return super().get(customer_id, default)


def test_an_hour_of_event_time_rescores_only_the_customers_due_in_it():
    states = CountingStates()
    engine = ScoringEngine(CustomerScorer(), states)
    # 1,000 customers, each buying once, spread evenly over one day: re-scores due a day apart.
    spacing = DAY / 1_000
    for n in range(1_000):
        engine.process(f"c-{n:04d}", purchase(T0 + n * spacing))
    assert engine.scheduled() == 1_000

    states.reads = 0
    first_hour = engine.advance(T0 + DAY + HOUR)
    second_hour = engine.advance(T0 + DAY + 2 * HOUR)

    due_per_hour = int(HOUR // spacing) + 1  # customers 0..41, then 42..83
    assert [s.customer_id for s in first_hour] == [f"c-{n:04d}" for n in range(due_per_hour)]
    assert len(second_hour) == due_per_hour
    assert first_hour[-1].customer_id < second_hour[0].customer_id
    assert states.reads == 2 * due_per_hour  # no scan over the other customers
    assert engine.scheduled() == 1_000  # each re-scored one waits for the next day

    # One more event an hour later: its own score and the next hour's re-scores only.
    scored = engine.process("new", purchase(T0 + DAY + 3 * HOUR))
    assert scored[0].customer_id == "new"
    assert len(scored) == 1 + due_per_hour


def test_a_batch_of_rescores_schedules_each_customer_as_next_refresh_says():
    states: dict[str, CustomerState] = {}
    engine = ScoringEngine(CustomerScorer(), states)
    for n in range(300):
        engine.process(f"c-{n:03d}", purchase(T0 + n * 600.0, item=f"sku-{n % 7}"))
    for day in (5, 95, 200):  # silent, examples taken and labelled
        watermark = T0 + day * DAY
        rescored = engine.advance(watermark, limit=None)
        assert len(rescored) == 300

        deadlines = engine._deadlines[0]._deadlines
        for scored in rescored:
            expected = engine.scorer.next_refresh(scored.outcome.state, scored.outcome.score.as_of)
            assert deadlines.get(scored.customer_id) == expected, (day, scored.customer_id)
    assert engine.scheduled() == 300
    assert engine.advance(T0 + 300 * DAY, limit=None) == []  # three horizons: over
    assert engine.scheduled() == 0


def stored_customers() -> dict[str, CustomerState]:
    """Customers as a worker's table holds them after a restart, on shards 0, 1 and 2."""
    states = {}
    for n, (shard, examples) in enumerate([(0, 1), (0, 3), (1, 2), (2, 1), (2, 0), (1, 1)]):
        state = CustomerState.new(T0)
        state.profile.record(purchase(T0))
        state.shard = shard
        features = state.profile.churn_features(T0)
        state.pending = [PendingExample(T0 + k * 15 * DAY, features, 0.2) for k in range(examples)]
        stored = orjson.loads(orjson.dumps(state.to_dict()))
        states[f"c-{n}"] = CustomerState.from_dict(stored)
    return states


def test_adopt_after_a_reset_schedules_only_the_given_shards_and_counts_their_examples():
    states = stored_customers()
    engine = ScoringEngine(CustomerScorer(), states)
    engine.scorer.pending_labels = 99  # counted for the partitions this worker had before

    engine.reset()
    adopted = [engine.adopt(c, state, shards={0, 2}) for c, state in states.items()]

    assert adopted == [True, True, False, True, True, False]
    assert (engine.scheduled(0), engine.scheduled(1), engine.scheduled(2)) == (2, 0, 2)
    assert engine.scorer.pending_labels == 1 + 3 + 1 + 0

    # The first event of shard 2 re-scores its customers who fell due while nobody owned it.
    scored = engine.process("newcomer", purchase(T0 + 20 * DAY), shard=2)
    assert [each.customer_id for each in scored] == ["newcomer", "c-3", "c-4"]


def test_a_record_without_its_partition_is_not_scheduled_on_a_guess():
    engine = ScoringEngine(CustomerScorer(), {})
    engine.process("c-1", purchase(T0), shard=3)
    stored = orjson.loads(orjson.dumps(engine.states["c-1"].to_dict()))
    assert CustomerState.from_dict(stored).shard == 3
    del stored["shard"]  # written before records carried their partition

    engine.reset()
    assert not engine.adopt("c-1", CustomerState.from_dict(stored), shards={0, 1, 2, 3})
    assert engine.scheduled() == 0
    assert engine.scorer.pending_labels == 0


def test_after_a_rebalance_customers_whose_rescores_had_ended_are_not_rescored():
    scorer = CustomerScorer()
    engine = ScoringEngine(scorer, {})
    for n in range(50):
        engine.process(f"old-{n:02d}", purchase(T0 + n * HOUR))
    engine.process("recent", purchase(T0 + 400 * DAY))
    stored = dict(engine.states)

    fresh = ScoringEngine(scorer, stored)  # a worker that just took the partition over
    fresh.reset()
    for customer_id, state in stored.items():
        fresh.adopt(customer_id, state, {0})
    first = fresh.process("recent", view(T0 + 401 * DAY))

    # The old customers' re-scores ended 270 days after their purchase, long before.
    assert [s.customer_id for s in first] == ["recent"]
    assert fresh.scheduled() == 1


def test_one_event_rescores_a_bounded_number_of_customers_and_the_rest_later():
    engine = ScoringEngine(CustomerScorer(), {})
    for n in range(2_500):
        engine.process(f"c-{n:04d}", purchase(T0 + n))  # all due one day later
    first = engine.process("mover", view(T0 + 2 * DAY))
    second = engine.process("mover", view(T0 + 2 * DAY + 1))

    assert len(first) == 1 + 1_000
    assert len(second) == 1 + 1_000
    assert {s.customer_id for s in first[1:]}.isdisjoint(s.customer_id for s in second[1:])


class FlakyStates(dict):
    """A state store that can no longer read some customers (records of a newer version)."""

    broken: frozenset[str] = frozenset()

    def get(self, key, default=None):
        if key in self.broken:
            raise ValueError("customer state of format version 3; this scorer reads 1, 2")
        return super().get(key, default)


def test_a_customer_that_cannot_be_rescored_does_not_stop_the_others():
    states = FlakyStates()
    engine = ScoringEngine(CustomerScorer(), states)
    for n, customer_id in enumerate(["a", "unreadable", "b"]):
        engine.process(customer_id, purchase(T0 + n))
    states.broken = frozenset({"unreadable"})

    scored = engine.process("mover", view(T0 + 2 * DAY))

    assert [s.customer_id for s in scored] == ["mover", "a", "b"]
    assert engine.rescore_errors == 1


def view(time: float, item: str = "sku-1") -> Activity:
    return Activity("view", time, item_id=item)


def _models_fingerprint(scorer: CustomerScorer) -> bytes:
    """Everything the models learned, as bytes: equal bytes, equal models."""
    import pickle

    return pickle.dumps(
        (scorer.churn_model, scorer.segmenter, scorer.recommender, scorer.model_version_events)
    )


def _stream(engine: ScoringEngine, events: list[tuple[str, Activity, int, str]]) -> list[Scored]:
    return [
        scored
        for customer_id, activity, offset, event_id in events
        for scored in engine.process(
            customer_id, activity, shard=0, offset=offset, event_id=event_id
        )
    ]


def test_an_event_delivered_again_changes_no_feature_no_model_and_no_count():
    events = [
        (f"c-{n % 7}", purchase(T0 + n * HOUR, item=f"sku-{n % 11}"), n, f"e-{n}")
        for n in range(200)
    ]
    once = ScoringEngine(CustomerScorer(), {})
    _stream(once, events)
    twice = ScoringEngine(CustomerScorer(), {})
    _stream(twice, events[:150])

    # A crash after offset 149: the partition is read again from offset 120 ...
    redelivered = _stream(twice, events[120:150])
    # ... and a producer retry sends a few events again under new offsets.
    resent = [(c, a, 1_000 + n, event_id) for n, (c, a, _, event_id) in enumerate(events[140:150])]
    repeated = _stream(twice, resent)
    _stream(twice, events[150:])

    assert [s.duplicate for s in redelivered + repeated] == [True] * 40
    assert all(not s.outcome.alerts and not s.outcome.labels for s in redelivered + repeated)
    assert twice.duplicates == 40
    for customer_id in once.states:
        ours, theirs = twice.states[customer_id], once.states[customer_id]
        assert ours.profile == theirs.profile
        assert ours.pending == theirs.pending
    assert _models_fingerprint(twice.scorer) == _models_fingerprint(once.scorer)


def test_a_redelivered_event_republishes_the_stored_score():
    engine = ScoringEngine(CustomerScorer(), {})
    first = engine.process("ann", purchase(T0), offset=7, event_id="e-7")[0]

    again = engine.process("ann", purchase(T0), offset=7, event_id="e-7")

    assert len(again) == 1 and again[0].duplicate
    assert again[0].outcome.score == first.outcome.score
    assert again[0].outcome.state == engine.states["ann"]


def test_the_same_id_under_another_customer_is_a_different_event():
    engine = ScoringEngine(CustomerScorer(), {})
    engine.process("ann", purchase(T0), offset=1, event_id="order-1")

    scored = engine.process("bob", purchase(T0), offset=2, event_id="order-1")

    assert not scored[0].duplicate
    assert engine.states["bob"].profile.orders == 1


@pytest.mark.slow
def test_segment_sizes_follow_every_move_and_survive_a_rebuild():
    states: dict[str, CustomerState] = {}
    engine = ScoringEngine(CustomerScorer(), states)
    for n in range(600):
        engine.process(f"c-{n % 60}", purchase(T0 + n * 6 * HOUR, item=f"sku-{n % 9}"))
    engine.advance(T0 + 400 * DAY)  # silent customers drift towards other segments

    recount: dict[int, int] = {}
    for state in states.values():
        recount[state.segment] = recount.get(state.segment, 0) + 1
    assert {s: c for s, c in engine.segment_sizes.items() if c} == recount
    assert sum(engine.segment_counts().values()) == 60

    engine.reset()
    for customer_id, state in states.items():
        engine.adopt(customer_id, state, {0})
    assert {s: c for s, c in engine.segment_sizes.items() if c} == recount


def test_deadlines_moved_many_times_keep_memory_within_twice_the_customers():
    deadlines = Deadlines()
    customers = [f"c{n}" for n in range(5_000)]
    for move in range(6):
        for n, customer in enumerate(customers):
            deadlines.schedule(customer, float(move * 10_000 + n))

    assert len(deadlines) == len(customers)
    assert len(deadlines._heap) <= 2 * len(customers) + 1024
    # Only the latest deadline of each customer counts.
    assert deadlines.pop_due(50_000.0 + 9) == [f"c{n}" for n in range(10)]


def test_deadlines_pop_as_a_heap_of_deadline_and_customer_would():
    rng = random.Random(7)
    deadlines, heap, latest = Deadlines(), [], {}
    for step in range(3_000):
        customer = f"c{rng.randrange(300)}"
        if rng.random() < 0.7:  # a few moments shared by many customers, most not
            deadline = float(rng.randrange(20)) if rng.random() < 0.3 else rng.uniform(0, 20)
            deadline += step // 500 * 20
            deadlines.schedule(customer, deadline)
            heapq.heappush(heap, (deadline, customer))
            latest[customer] = deadline
        elif rng.random() < 0.5:
            assert deadlines.cancel(customer) == (latest.pop(customer, None) is not None)
        else:
            watermark, limit = rng.uniform(0, (step // 500 + 1) * 20), rng.choice([None, 1, 5])
            expected = []
            while heap and heap[0][0] <= watermark and (limit is None or len(expected) < limit):
                deadline, popped = heapq.heappop(heap)
                if latest.get(popped) == deadline:
                    del latest[popped]
                    expected.append(popped)
            assert deadlines.pop_due(watermark, limit) == expected
        assert len(deadlines) == len(latest)


def test_a_customer_named_by_many_events_is_kept_as_one_string():
    engine = ScoringEngine(CustomerScorer(), {})
    for n in range(3):
        name = "".join(["ann", "-", "1"])  # a new string object per event, as decoded
        engine.process(name, Activity("view", n * 3_600.0, item_id="a"))

    (key,) = engine.states
    assert key is sys.intern("ann-1")


def test_forgetting_a_customer_removes_state_schedule_labels_and_user_factors():
    engine = ScoringEngine(CustomerScorer(), {})
    for n in range(6):
        engine.process("ann", Activity("purchase", n * DAY, item_id=f"sku-{n % 3}", amount=9.0,
                                       quantity=1))  # fmt: skip
        engine.process("bob", Activity("purchase", n * DAY + 60, item_id="sku-1", amount=5.0,
                                       quantity=1))  # fmt: skip
    pending = len(engine.states["ann"].pending)
    values = len(engine.states["ann"].value_pending)
    assert values  # her value examples wait in her state for the horizon to pass
    labels_before = engine.scorer.pending_labels
    assert engine.states["ann"].latent is not None  # her own latent factors live in her state

    removed = engine.forget("ann")

    assert removed == {
        "state": True,
        "pending_labels": pending,
        "value_labels": values,
        "rescore_schedule": True,
        "recommender_user_factors": True,
    }
    assert "ann" not in engine.states and "bob" in engine.states
    assert engine.scheduled() == 1
    assert engine.scorer.recommender.n_users == 0  # the model itself holds nobody's factors
    assert engine.states["bob"].latent is not None
    assert engine.scorer.pending_labels == labels_before - pending
    assert sum(engine.segment_sizes.values()) <= 1
    assert engine.forget("ann") == {
        "state": False,
        "pending_labels": 0,
        "value_labels": 0,
        "rescore_schedule": False,
        "recommender_user_factors": False,
    }


def test_a_state_whose_segment_cannot_be_read_fails_alone(monkeypatch):
    engine = ScoringEngine(CustomerScorer(), {})
    for n in range(20):
        engine.process(f"c-{n}", purchase(T0 + n * HOUR))
    broken = engine.states["c-3"]
    scorer = engine.scorer
    read_one = scorer.served_segment

    def served_segments(states):
        raise ValueError("an unreadable stored state")

    def served_segment(state):
        if state is broken:
            raise ValueError("an unreadable stored state")
        return read_one(state)

    monkeypatch.setattr(scorer, "served_segments", served_segments)
    monkeypatch.setattr(scorer, "served_segment", served_segment)
    rescored = engine.advance(T0 + 2 * DAY)

    assert sorted(s.customer_id for s in rescored) == sorted(f"c-{n}" for n in range(20) if n != 3)
    assert engine.rescore_errors == 1


@pytest.mark.parametrize("customers", [2, 12], ids=["one_at_a_time", "together"])
def test_a_batchs_scores_in_order_leave_each_customers_newest_last(
    customers: int,
) -> None:
    # The worker publishes a batch's scores in order and Redis keeps each customer's last.
    # "due" falls due for its daily re-score as the batch's first event passes its deadline,
    # then buys in the same batch: their last score must count that purchase.
    engine = ScoringEngine(CustomerScorer(), {})
    engine.process_many([("due", purchase(T0), 0, "e-0")])
    others = [(f"c-{n}", purchase(T0 + DAY + n), n + 1, f"e-{n + 1}") for n in range(customers)]
    batch = engine.process_many([*others, ("due", purchase(T0 + DAY + HOUR), 99, "e-99")])

    last = {each.customer_id: each.outcome.score.orders for each in batch.in_order()}
    assert last["due"] == engine.states["due"].profile.orders == 2
