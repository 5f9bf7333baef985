"""What the merger acknowledges on the updates topic: a delta only once a version holding it
is on the models topic (an EASE delta: once a refit publishes the ease part, or after
``EASE_HOLD_SECONDS``), a refused record at once, and nothing at all when the partition is
taken away first; the next merger reads those again. Kafka is faked: ``send`` and ``ack``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from faust.types import TP, Message
from prometheus_client import CollectorRegistry

from online_models.customer.activity import DAY, Activity
from online_models.group.parts import EASE
from online_models.group.worker import WorkerSync
from online_models.scoring.engine import ScoringEngine
from online_models.scoring.scorer import CustomerScorer
from streams import model_sync
from streams.metrics import ScorerMetrics
from streams.model_codec import MANIFEST_KEY, decode_manifest, encode_delta
from streams.model_sync import EASE_HOLD_SECONDS, ModelSync
from streams.settings import Settings

T0 = 1_735_689_600.0
SETTINGS = Settings()
CONFIG = SETTINGS.scorer_config()


class Broker:
    """The worker's Kafka: the records sent to the models topic, the updates acknowledged."""

    def __init__(self) -> None:
        self.published: list[tuple[bytes, bytes]] = []
        self.acked: list[int] = []  # offsets on the updates topic
        self.down = False
        self.while_sending: Callable[[bytes], None] = lambda key: None

    async def send(self, topic: str, key: bytes, value: bytes) -> int:
        self.while_sending(key)
        if self.down:
            msg = "the broker did not answer"
            raise ConnectionError(msg)
        assert topic == SETTINGS.models_topic
        self.published.append((key, value))
        return len(self.published) - 1

    def ack(self, message: Message) -> None:
        self.acked.append(message.offset)

    def versions(self) -> list[int]:
        """The versions whose manifest is on the models topic."""
        return [
            decode_manifest(raw, CONFIG, key=None).version
            for key, raw in self.published
            if key == MANIFEST_KEY
        ]

    def parts(self) -> list[bytes]:
        return [key for key, _ in self.published if key != MANIFEST_KEY]


class Shop:
    """A worker scoring events; its deltas reach the merger as records of the updates topic."""

    def __init__(self) -> None:
        scorer = CustomerScorer(CONFIG)
        self.sync = WorkerSync(scorer, "w1")
        self.engine = ScoringEngine(scorer, {})
        self.offset = 0

    def bought(self, customer: str, items: list[str], *, day: float) -> dict[str, Message]:
        """The deltas of a customer buying ``items`` (EASE counts among them)."""
        for n, item in enumerate(items):
            at = T0 + day * DAY + n * 60.0
            self.engine.process(customer, Activity("purchase", at, item_id=item, amount=5.0))
        return self.deltas()

    def viewed(self, customer: str, *, day: float) -> dict[str, Message]:
        """The deltas of a customer viewing an item (no EASE counts)."""
        self.engine.process(customer, Activity("view", T0 + day * DAY, item_id="tea"))
        return self.deltas()

    def deltas(self) -> dict[str, Message]:
        """What was learned since the last call, one message per part, by part key."""
        messages = {}
        for delta in self.sync.deltas():
            raw = encode_delta(delta, key=None, sent_at=T0)
            messages[delta.key] = self.message(raw, key=f"{delta.worker}/{delta.key}".encode())
        assert messages, "the shop learned nothing since its last delta"
        return messages

    def message(self, raw: bytes, *, key: bytes = b"w1/junk") -> Message:
        tp = TP(SETTINGS.model_updates_topic, 0)
        self.offset += 1
        return Message(tp.topic, 0, self.offset, T0, 0, [], key, raw, None, tp=tp)


def offsets(messages: dict[str, Message], *, but: str | None = None) -> list[int]:
    return [m.offset for key, m in messages.items() if key != but]


@pytest.fixture
def broker() -> Broker:
    return Broker()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The merger's monotonic clock, set by the test (``clock.now``); asyncio keeps its own."""
    clock = SimpleNamespace(now=0.0)
    fake_time = SimpleNamespace(monotonic=lambda: clock.now, perf_counter=time.perf_counter)
    monkeypatch.setattr(model_sync, "time", fake_time)
    return clock


@pytest.fixture
def merger(broker: Broker) -> ModelSync:
    """A worker given the updates partition, whose feed read the models topic (empty)."""
    metrics = ScorerMetrics(CollectorRegistry())
    merger = ModelSync(SETTINGS, CustomerScorer(CONFIG), metrics, send=broker.send, ack=broker.ack)

    async def caught_up() -> None:
        pass

    merger.feed.caught_up = caught_up  # type: ignore[method-assign]
    merger.feed.ready.set()
    merger.on_assigned(True)
    return merger


def test_a_delta_is_acknowledged_once_a_version_holding_it_is_published(
    merger: ModelSync, broker: Broker
) -> None:
    shop = Shop()
    deltas = shop.viewed("c1", day=0.0)

    async def scenario() -> None:
        await merger.merge(list(deltas.values()))
        assert broker.acked == []  # merged, but only in this worker's memory
        assert await merger.publish() == 1

    asyncio.run(scenario())
    assert broker.versions() == [1]
    assert sorted(broker.acked) == offsets(deltas)


def test_a_version_the_broker_refused_acknowledges_nothing_and_is_published_again(
    merger: ModelSync, broker: Broker
) -> None:
    shop = Shop()
    first = shop.viewed("c1", day=0.0)
    second = shop.viewed("c2", day=0.1)

    async def scenario() -> None:
        await merger.merge(list(first.values()))
        broker.down = True
        assert await merger.publish() is None
        assert broker.acked == []
        await merger.merge(list(second.values()))  # merged while version 1 waits
        broker.down = False
        assert await merger.publish() == 1  # the same version, tried again
        assert sorted(broker.acked) == offsets(first)
        assert await merger.publish() == 2

    asyncio.run(scenario())
    assert broker.versions() == [1, 2]
    assert sorted(broker.acked) == offsets(first) + offsets(second)


def test_an_ease_delta_waits_for_the_refit_that_publishes_the_ease_part(
    merger: ModelSync, broker: Broker
) -> None:
    shop = Shop()
    first = shop.bought("c1", ["tea", "cup"], day=0.0)
    second = shop.bought("c2", ["tea", "cup"], day=2.0)  # two days later: EASE's refit is due
    assert EASE in first and EASE in second

    async def scenario() -> None:
        await merger.merge(list(first.values()))
        assert await merger.publish() == 1
        assert EASE.encode() not in broker.parts()
        assert sorted(broker.acked) == offsets(first, but=EASE)  # its counts: in no version
        await merger.merge(list(second.values()))
        assert await merger.publish() == 2

    asyncio.run(scenario())
    assert EASE.encode() in broker.parts()
    assert sorted(broker.acked) == sorted(offsets(first) + offsets(second))


def test_an_ease_delta_held_past_the_hold_is_acknowledged_without_a_refit(
    merger: ModelSync, broker: Broker, clock: SimpleNamespace
) -> None:
    shop = Shop()
    bought = shop.bought("c1", ["tea", "cup"], day=0.0)

    async def publish_a_view(customer: str, at: float) -> list[int]:
        viewed = shop.viewed(customer, day=0.1)  # no counts: no refit comes due
        assert EASE not in viewed
        clock.now = at
        await merger.merge(list(viewed.values()))
        assert await merger.publish() is not None
        return offsets(viewed)

    async def scenario() -> None:
        await merger.merge(list(bought.values()))
        assert await merger.publish() == 1
        await publish_a_view("c2", EASE_HOLD_SECONDS - 1.0)
        assert bought[EASE].offset not in broker.acked
        await publish_a_view("c3", EASE_HOLD_SECONDS)

    asyncio.run(scenario())
    assert EASE.encode() not in broker.parts()
    assert bought[EASE].offset in broker.acked
    assert broker.versions() == [1, 2, 3]


def test_a_refused_record_is_acknowledged_at_once_and_counted(
    merger: ModelSync, broker: Broker
) -> None:
    junk = Shop().message(b"not a delta")
    asyncio.run(merger.merge([junk]))
    assert broker.acked == [junk.offset]
    refused = {"reason": "not_a_model_record"}
    registry = merger._metrics.registry
    assert registry.get_sample_value("crm_scorer_model_records_refused_total", refused) == 1.0


def test_a_repeat_delta_is_acknowledged_with_the_next_version(
    merger: ModelSync, broker: Broker
) -> None:
    shop = Shop()
    first = shop.bought("c1", ["tea", "cup"], day=0.0)
    second = shop.bought("c2", ["tea", "cup"], day=2.0)  # refitted: every count in a fit
    # Read again (a redelivery): the same records at new offsets, all of them repeats.
    again = {key: shop.message(m.value, key=m.key) for key, m in first.items()}
    fresh = shop.viewed("c3", day=2.1)

    async def scenario() -> None:
        for deltas in (first, second):
            await merger.merge(list(deltas.values()))
            assert await merger.publish() is not None
        await merger.merge(list(again.values()) + list(fresh.values()))
        assert not set(offsets(again)) & set(broker.acked)
        assert await merger.publish() == 3

    asyncio.run(scenario())
    assert EASE.encode() in broker.parts()
    assert set(offsets(again)) <= set(broker.acked)  # the EASE repeat too: its counts are fitted


def test_a_merger_revoked_before_publishing_acknowledges_none_of_its_merged_deltas(
    merger: ModelSync, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_sync, "EASE_HOLD_SECONDS", 0.0)  # an EASE delta held goes at once
    shop = Shop()
    merged = shop.bought("c1", ["tea", "cup"], day=0.0)
    after = shop.viewed("c2", day=0.1)

    async def scenario() -> None:
        await merger.merge(list(merged.values()))
        merger.on_revoked()
        assert await merger.publish() is None
        await merger.merge(list(after.values()))  # no longer its partition: not merged
        assert await merger.publish() is None
        assert broker.published == []
        merger.on_assigned(True)  # the partition comes back: only what it merges now
        await merger.merge(list(after.values()))
        assert await merger.publish() == 1

    asyncio.run(scenario())
    assert sorted(broker.acked) == offsets(after)


@pytest.mark.parametrize(
    ("revoked_at", "versions"),
    [
        (None, []),  # at the first part: the merger stops writing at once
        (MANIFEST_KEY, [1]),  # at the manifest: the version lands, its deltas read again later
    ],
)
def test_a_merger_revoked_while_publishing_acknowledges_nothing(
    merger: ModelSync, broker: Broker, revoked_at: bytes | None, versions: list[int]
) -> None:
    shop = Shop()
    merged = shop.viewed("c1", day=0.0)

    def revoke(key: bytes) -> None:  # the rebalance lands while the broker writes
        if revoked_at in (None, key):
            merger.on_revoked()

    async def scenario() -> None:
        await merger.merge(list(merged.values()))
        broker.while_sending = revoke
        assert await merger.publish() is None

    asyncio.run(scenario())
    assert broker.acked == []
    assert broker.versions() == versions


def test_an_ease_delta_read_again_by_a_merger_given_its_partition_back_waits_for_the_refit(
    merger: ModelSync, broker: Broker
) -> None:
    """A rebalance that hands the partition back: the merger keeps its Gram, so the EASE
    delta read again is a repeat whose counts no published fit holds yet."""
    shop = Shop()
    bought = shop.bought("c1", ["tea", "cup"], day=0.0)
    viewed = shop.viewed("c2", day=0.1)

    async def scenario() -> None:
        await merger.merge(list(bought.values()))
        merger.on_revoked()
        merger.on_assigned(True)  # read again from the committed offset:
        await merger.merge(list(bought.values()) + list(viewed.values()))
        assert await merger.publish() == 1

    asyncio.run(scenario())
    assert EASE.encode() not in broker.parts()
    assert bought[EASE].offset not in broker.acked  # a merger dying now: the next reads it


def test_repeats_and_long_held_ease_deltas_are_acknowledged_when_there_is_nothing_to_publish(
    merger: ModelSync, broker: Broker, clock: SimpleNamespace
) -> None:
    """A merger that took over re-reads what the last one published; an idle group publishes
    nothing new, so the partition's commits must not wait for some worker's next delta."""
    shop = Shop()
    viewed = shop.viewed("c1", day=0.0)
    again = {key: shop.message(m.value, key=m.key) for key, m in viewed.items()}
    bought = shop.bought("c2", ["tea", "cup"], day=0.1)

    async def scenario() -> None:
        await merger.merge(list(viewed.values()))
        assert await merger.publish() == 1
        await merger.merge(list(again.values()))  # repeats only: nothing to publish
        assert await merger.publish() is None
        assert set(offsets(again)) <= set(broker.acked)
        await merger.merge([bought[EASE]])  # counts for a refit not due yet
        assert await merger.publish() is None
        assert bought[EASE].offset not in broker.acked
        clock.now = EASE_HOLD_SECONDS
        assert await merger.publish() is None

    asyncio.run(scenario())
    assert broker.versions() == [1]
    assert bought[EASE].offset in broker.acked
