"""The worker's batch loop: a fetch's events scored together, bad ones dead-lettered alone,
and an event whose scoring raises dead-lettered alone while the others of its batch are
scored (the batch scored again one event at a time)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from faust.types import Message

from online_models.customer.activity import Activity
from online_models.scoring.scorer import CustomerScorer
from schemas.event_batch import decode_events
from streams.app import ScorerService, _Decoded
from streams.batch_loop import MIN_RUN, RUN_EVENTS, run_end, run_limit, score_run
from streams.convert import activities_of
from streams.settings import ENV_PREFIX, load_settings

START = datetime(2025, 3, 1, tzinfo=UTC).timestamp()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def message(offset: int, customer: str, value: bytes, key: str | None = None) -> Message:
    return Message("events", 0, offset, START, 0, [], (key or customer).encode(), value, None)


def purchase(n: int, customer: str) -> bytes:
    return orjson.dumps({
        "event_id": f"e-{n}", "customer_id": customer, "type": "purchase",
        "timestamp": datetime.fromtimestamp(START + 60 * n, UTC).isoformat(),
        "item_id": f"sku-{n % 5}", "amount": 10.0, "quantity": 1,
    })  # fmt: skip


def fetch() -> list[Message]:
    """Twenty customers' purchases; one message with the wrong key, one not JSON."""
    messages = [message(n, f"c-{n % 20}", purchase(n, f"c-{n % 20}")) for n in range(60)]
    messages[7] = message(7, "c-7", purchase(7, "c-7"), key="someone-else")
    messages[9] = message(9, "c-9", b"{not json")
    return messages


def scored(service: ScorerService, messages: list[Message]) -> tuple[list[str], Any, Any]:
    letters: list[tuple[int, str]] = []
    written: list[str] = []
    service.dead_letters.add = lambda m, reason, *a, **k: letters.append((m.offset, reason))  # type: ignore[method-assign]
    service.writer.put = lambda customer, *a, **k: written.append(customer)  # type: ignore[method-assign]
    batch = decode_events([m.value for m in messages])
    decoded = _Decoded(0, batch, activities_of(batch.columns), 0.0)
    stop = run_end(messages, decoded, 0, messages[0].generation_id)
    assert stop == len(messages)  # no erasure request: one run
    return score_run(service, messages, decoded, 0, stop), letters, written


def fail_learning_event_23(monkeypatch: pytest.MonkeyPatch) -> None:
    """Learning c-3's purchase at offset 23 raises (a bug), every other event learns."""
    learn_event = CustomerScorer.learn_event

    def failing(self: CustomerScorer, customer_id: str, state: Any, activity: Activity,
                *args: Any, **kwargs: Any) -> Any:  # fmt: skip
        if customer_id == "c-3" and activity.time == START + 60 * 23:
            raise RuntimeError("a bug")
        return learn_event(self, customer_id, state, activity, *args, **kwargs)

    monkeypatch.setattr(CustomerScorer, "learn_event", failing)


def test_a_run_is_scored_together_and_bad_messages_are_dead_lettered_alone() -> None:
    service = ScorerService(load_settings())
    outcomes, letters, written = scored(service, fetch())

    assert sorted(letters) == [(7, "key_mismatch"), (9, "not_json")]
    assert outcomes.count("scored") == 58 and outcomes[7] == outcomes[9] == "dead_lettered"
    assert set(written) == {f"c-{n}" for n in range(20)}


def test_an_event_whose_scoring_raises_is_dead_lettered_alone(monkeypatch) -> None:
    service = ScorerService(load_settings())
    fail_learning_event_23(monkeypatch)
    outcomes, letters, written = scored(service, fetch())

    assert sorted(letters) == [(7, "key_mismatch"), (9, "not_json"), (23, "processing_error")]
    assert outcomes.count("scored") == 57
    assert set(written) == {f"c-{n}" for n in range(20)}  # c-3's other purchases are scored


def test_a_run_spans_at_most_an_hour_of_event_time() -> None:
    # A backlog's fetch spans days: scored as one run, its silent customers would be
    # re-scored days late.
    messages = [message(n, f"c-{n}", purchase(n * 30, f"c-{n}")) for n in range(10)]
    batch = decode_events([m.value for m in messages])
    decoded = _Decoded(0, batch, activities_of(batch.columns), 0.0)

    assert run_end(messages, decoded, 0, messages[0].generation_id) == 3  # 0, 30 and 60 min
    assert run_end(messages, decoded, 3, messages[0].generation_id) == 6


def test_an_event_that_fails_leaves_every_other_event_learned_once(monkeypatch) -> None:
    service = ScorerService(load_settings())
    fail_learning_event_23(monkeypatch)
    scored(service, fetch())

    # 58 valid events, one failing: the other customers' 55 learned once, c-3's purchase
    # before the failing one twice (batch, then its retry), the one after once.
    assert service.scorer.model_version_events == 58
    assert service.engine.states["c-0"].profile.orders == 3  # the others are intact
    # c-3 goes back to its stored state when its event fails, as one event at a time did:
    # its purchase before the failing one in this fetch is lost with it (known, README).
    assert service.engine.states["c-3"].profile.orders == 1


def test_a_score_that_cannot_be_published_fails_its_event_not_the_run() -> None:
    service = ScorerService(load_settings())
    letters: list[tuple[int, str]] = []
    written: list[str] = []
    service.dead_letters.add = lambda m, reason, *a, **k: letters.append((m.offset, reason))  # type: ignore[method-assign]

    def put(customer: str, *args: Any, **kwargs: Any) -> None:
        if customer == "c-5":
            raise RuntimeError("a bug in the writer")
        written.append(customer)

    service.writer.put = put  # type: ignore[method-assign]
    messages = fetch()
    batch = decode_events([m.value for m in messages])
    decoded = _Decoded(0, batch, activities_of(batch.columns), 0.0)

    outcomes = score_run(service, messages, decoded, 0, len(messages))

    assert outcomes.count("scored") == 58 and letters == [(7, "key_mismatch"), (9, "not_json")]
    assert set(written) == {f"c-{n}" for n in range(20)} - {"c-5"}
    assert service.engine.states["c-5"].profile.orders == 3  # its state is stored all the same


def test_a_run_is_sized_to_what_the_last_ones_cost() -> None:
    assert run_limit(1e-3, 0.02) == 20  # one at a time: 20 ms
    assert run_limit(40e-6, 0.02) == RUN_EVENTS
    assert run_limit(1.0, 0.02) == MIN_RUN


def test_a_customer_due_for_a_rescore_keeps_the_purchase_that_follows_it_in_a_small_run():
    # A run of fewer than MIN_BATCH customers: c-y's event makes c-x due for its daily
    # re-score, then c-x buys. Redis keeps the last score written for c-x: it must count
    # that purchase (it once was the re-score from before it: one order short, for good).
    service = ScorerService(load_settings())
    last_orders: dict[str, int] = {}

    def put(customer: str, unrendered: Any, *args: Any, **kwargs: Any) -> None:
        last_orders[customer] = unrendered[2].orders

    service.writer.put = put  # type: ignore[method-assign]
    day = 24 * 60  # minutes
    runs = [
        [message(0, "c-x", purchase(0, "c-x")), message(1, "c-y", purchase(1, "c-y"))],
        [message(2, "c-y", purchase(day + 1, "c-y")), message(3, "c-x", purchase(day + 2, "c-x"))],
    ]
    for messages in runs:
        batch = decode_events([m.value for m in messages])
        decoded = _Decoded(0, batch, activities_of(batch.columns), 0.0)
        assert score_run(service, messages, decoded, 0, len(messages)) == ["scored"] * 2

    assert service.engine.states["c-x"].profile.orders == 2
    assert last_orders == {"c-x": 2, "c-y": 2}
