"""The segment benchmark's parts: the synthetic resellers and loners, segment stability,
DBSCAN's knee."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from rich.console import Console

from benchmarks.segment_outliers import fence_sweep, loners_report
from benchmarks.segments_quality import knee_eps, segment_stability
from benchmarks.segments_report import show_fence_sweep
from benchmarks.unusual_customers import Basket, Loners, Resellers, typical_basket
from online_models.customer.activity import DAY
from online_models.scoring.scorer import CustomerScore
from schemas.events import AnyEvent, PurchaseEvent, ViewEvent, validate_event
from streams.commands.backtest import Backtest, BacktestRow
from streams.commands.transactions import LoadedEvent

CUTOFF = datetime(2011, 9, 9, tzinfo=UTC)


def line(customer: str, moment: datetime, item: str, quantity: int, amount: float) -> LoadedEvent:
    document = {
        "event_id": f"{customer}-{moment.isoformat()}-{item}",
        "customer_id": customer,
        "type": "purchase",
        "timestamp": moment.isoformat(),
        "item_id": item,
        "amount": amount,
        "quantity": quantity,
    }
    return LoadedEvent(moment.timestamp(), document, validate_event(document), 1)


def test_the_typical_basket_is_the_median_of_the_baskets_before_the_cutoff() -> None:
    day = CUTOFF - timedelta(days=30)
    events = [
        line("a", day, "tea", 2, 4.0),  # a's basket: 2 lines, 3 units, 10.0
        line("a", day, "cup", 1, 6.0),
        line("b", day, "tea", 10, 20.0),  # b's: 1 line, 10 units, 20.0
        line("a", day + timedelta(hours=1), "pot", 5, 50.0),  # a's second: 1 line, 5, 50.0
        line("b", CUTOFF, "pot", 99, 999.0),  # at the cutoff: not before it
    ]

    basket, items = typical_basket(events, CUTOFF.timestamp())

    assert basket == Basket(1, 5.0, 20.0)
    assert sorted(items) == ["cup", "pot", "tea", "tea"]


def test_resellers_buy_every_week_many_times_the_typical_basket_before_the_cutoff() -> None:
    basket = Basket(lines=4, quantity=100.0, amount=300.0)
    items = [f"sku-{n}" for n in range(20)]
    cutoff = CUTOFF.timestamp()

    events = Resellers(count=50, weeks=26, seed=3).events(basket, items, cutoff)

    assert all(isinstance(event, PurchaseEvent) for event in events)
    assert len({event.event_id for event in events}) == len(events)
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
    baskets: dict[str, dict[float, list[PurchaseEvent]]] = defaultdict(lambda: defaultdict(list))
    for event in events:
        baskets[event.customer_id][event.timestamp.timestamp()].append(event)
    assert len(baskets) == 50
    assert all(customer.startswith("synthetic-reseller-") for customer in baskets)
    for by_time in baskets.values():
        times = sorted(by_time)
        assert cutoff - 26 * 7 * DAY <= times[0] and times[-1] < cutoff
        assert 13 <= len(times) <= 26
        assert np.allclose(np.diff(times), 7 * DAY)
        for lines in by_time.values():
            assert len(lines) == basket.lines
            assert {event.item_id for event in lines} <= set(items)
            amount = sum(event.amount for event in lines)
            quantity = sum(event.quantity for event in lines)
            assert 10 * basket.amount - 0.1 <= amount <= 20 * basket.amount + 0.1
            assert 10 * basket.quantity - 4 <= quantity <= 20 * basket.quantity + 4


def test_resellers_are_the_same_for_the_same_seed() -> None:
    make = Resellers(count=3, weeks=4, seed=7).events
    basket = Basket(2, 10.0, 50.0)

    assert make(basket, ["a", "b", "c"], 1e9) == make(basket, ["a", "b", "c"], 1e9)


BASKET = Basket(lines=4, quantity=100.0, amount=300.0)
ITEMS = [f"sku-{n}" for n in range(20)]
EIGHT_WEEKS = 8 * 7 * DAY


def by_customer(events: list[AnyEvent]) -> dict[str, list[AnyEvent]]:
    customers: dict[str, list[AnyEvent]] = defaultdict(list)
    for event in events:
        customers[event.customer_id].append(event)
    return customers


def loner_events(**settings: int) -> dict[str, list[AnyEvent]]:
    return Loners(**settings).events(BASKET, ITEMS, CUTOFF.timestamp())


def test_loners_are_a_handful_of_each_kind_with_their_own_ids_before_the_cutoff() -> None:
    kinds = loner_events()

    assert {kind: sorted(by_customer(events)) for kind, events in kinds.items()} == {
        "lone reseller": [f"synthetic-lone-reseller-{n:02d}" for n in range(5)],
        "enormous order": [f"synthetic-enormous-order-{n:02d}" for n in range(5)],
        "bot": [f"synthetic-bot-{n:02d}" for n in range(5)],
    }
    for events in kinds.values():
        times = [event.timestamp.timestamp() for event in events]
        assert times == sorted(times)
        assert times[-1] < CUTOFF.timestamp()
        assert len({event.event_id for event in events}) == len(events)


def test_lone_resellers_buy_like_the_group_but_are_not_its_first_members() -> None:
    lone = by_customer(loner_events()["lone reseller"])
    group = by_customer(Resellers(count=5).events(BASKET, ITEMS, CUTOFF.timestamp()))

    first = [{event.timestamp for event in events} for events in lone.values()]
    assert all(13 <= len(times) <= 26 for times in first)
    assert first != [{event.timestamp for event in events} for events in group.values()]


def test_an_enormous_order_is_one_basket_of_fifty_typical_ones_in_the_last_eight_weeks() -> None:
    orders = by_customer(loner_events()["enormous order"])

    for lines in orders.values():
        assert all(isinstance(line, PurchaseEvent) for line in lines)
        assert len(lines) == BASKET.lines
        assert len({line.timestamp for line in lines}) == 1
        assert lines[0].timestamp.timestamp() >= CUTOFF.timestamp() - EIGHT_WEEKS
        amount = sum(line.amount for line in lines if isinstance(line, PurchaseEvent))
        quantity = sum(line.quantity for line in lines if isinstance(line, PurchaseEvent))
        assert amount == pytest.approx(50 * BASKET.amount, abs=0.1)
        assert quantity == pytest.approx(50 * BASKET.quantity, abs=BASKET.lines)


def test_bots_view_thousands_of_items_within_one_week_and_never_buy() -> None:
    bots = by_customer(loner_events()["bot"])

    for views in bots.values():
        assert len(views) == 3_000
        assert all(isinstance(view, ViewEvent) for view in views)
        assert {view.item_id for view in views if isinstance(view, ViewEvent)} <= set(ITEMS)
        times = [view.timestamp.timestamp() for view in views]
        assert times[-1] - times[0] < 7 * DAY
        assert times[0] >= CUTOFF.timestamp() - EIGHT_WEEKS


def test_loners_are_the_same_for_the_same_seed_and_differ_for_another() -> None:
    settings = {"lone_resellers": 2, "enormous_orders": 2, "bots": 2, "views": 50}

    assert loner_events(seed=4, **settings) == loner_events(seed=4, **settings)
    other = loner_events(seed=5, **settings)
    assert all(other[kind] != events for kind, events in loner_events(seed=4, **settings).items())


def test_one_kinds_count_leaves_the_other_kinds_customers_as_they_were() -> None:
    settings = {"lone_resellers": 2, "enormous_orders": 2, "views": 50}

    assert (
        loner_events(bots=1, **settings)["enormous order"]
        == (loner_events(bots=3, **settings)["enormous order"])
    )


def score(segment: int, name: str) -> CustomerScore:
    return CustomerScore(
        churn_risk=0.5, segment=segment, segment_name=name, value=0.5, monetary=10.0,
        orders=1, sentiment=None, event_time=0.0, as_of=0.0, model_version="test",
    )  # fmt: skip


def test_stability_counts_changed_ids_and_names_of_the_customers_asked_about() -> None:
    before = {"a": score(1, "regulars"), "b": score(2, "lapsing"), "c": score(3, "lost")}
    after = {"a": score(1, "regulars"), "b": score(4, "lapsing"), "c": score(3, "hibernating")}

    stability = segment_stability(before, after, ["a", "b", "c"])

    assert stability["customers"] == 3
    assert stability["segment_id_changed"] == pytest.approx(1 / 3)
    assert stability["segment_name_changed"] == pytest.approx(1 / 3)
    assert segment_stability(before, after, [])["segment_id_changed"] is None


def test_the_knee_separates_a_dense_blob_from_scattered_points() -> None:
    rng = np.random.default_rng(0)
    blob = rng.normal(0.0, 0.01, size=(500, 2))
    scattered = rng.uniform(1.0, 5.0, size=(25, 2))

    eps = knee_eps(np.vstack([blob, scattered]), min_samples=4)

    assert 0.005 < eps < 0.2


@dataclass(frozen=True)
class FencedAt:
    """A segmenter whose fence at each number of MADs sits at the given ``outlier_score``."""

    fences: dict[float, float | None]

    def outlier_fence_score(self, mads: float) -> float | None:
        return self.fences[mads]


def run_at_cutoff(
    outlier_scores: dict[str, float],
    flagged: Collection[str] = (),
    alerted: Collection[str] = (),
) -> Backtest:
    """A backtest's scores at the cutoff: these outlier scores, ``flagged`` customers flagged
    ``segment_outlier``, ``alerted`` ones alerted unusual_customer (and everyone a churn alert)."""
    run = Backtest(as_of=CUTOFF.timestamp())
    for customer, outlier_score in sorted(outlier_scores.items()):
        flag = customer in flagged
        outcome = score(1, "regulars")._replace(segment_outlier=flag, outlier_score=outlier_score)
        run.rows.append(BacktestRow(customer, outcome, []))
        run.alert_log.append((customer, "churn_risk", 0.0, 10.0))
    run.alert_log += [(customer, "unusual_customer", 0.0, None) for customer in sorted(alerted)]
    return run


def test_the_fence_sweep_tells_who_each_fence_would_flag() -> None:
    run = run_at_cutoff(
        {"bot-1": 0.999, "bot-2": 0.96, "r-1": 0.5, "r-2": 0.92, "r-3": 0.95, "r-4": 0.1}
    )
    segmenter = FencedAt({2.0: 0.9, 2.5: 0.95, 3.0: 0.99, 3.5: None})

    sweep = fence_sweep(run, {"bot": {"bot-1", "bot-2"}}, segmenter)

    assert sweep == [
        {"mads": 2.0, "fence_score": 0.9, "flagged": {"bot": 1.0, "real": 0.5}},
        # A score at the fence is flagged.
        {"mads": 2.5, "fence_score": 0.95, "flagged": {"bot": 1.0, "real": 0.25}},
        {"mads": 3.0, "fence_score": 0.99, "flagged": {"bot": 0.5, "real": 0.0}},
        # Too little data for a fence: nobody is measured.
        {"mads": 3.5, "fence_score": None, "flagged": {"bot": None, "real": None}},
    ]


def test_the_loners_report_gives_each_kind_and_the_real_customers_flags_and_alerts() -> None:
    run = run_at_cutoff(
        {"bot-1": 0.99, "bot-2": 0.8, "order-1": 0.97, "r-1": 0.2, "r-2": 0.4, "r-3": 0.6},
        flagged={"bot-1", "r-3"},
        alerted={"bot-1", "bot-2", "r-1"},
    )
    kinds = {"bot": {"bot-1", "bot-2"}, "enormous order": {"order-1"}, "lone reseller": set()}

    report = loners_report(run, kinds, FencedAt({2.0: 0.9, 2.5: 0.95, 3.0: 0.98, 3.5: 0.995}))

    bot, order, lone = (report["kinds"][kind] for kind in kinds)
    assert bot == {"count": 2, "flagged": 0.5, "alerted": 1.0, "median_outlier_score": 0.895}
    assert order == {"count": 1, "flagged": 0.0, "alerted": 0.0, "median_outlier_score": 0.97}
    assert lone == {"count": 0, "flagged": None, "alerted": None, "median_outlier_score": None}
    assert report["real"]["count"] == 3
    assert report["real"]["flagged"] == pytest.approx(1 / 3)
    assert report["real"]["alerted"] == pytest.approx(1 / 3)
    assert [step["flagged"]["enormous order"] for step in report["fence_sweep"]] == [
        1.0, 1.0, 0.0, 0.0,
    ]  # fmt: skip


def test_the_sweep_table_shows_each_runs_groups_and_a_dash_for_groups_it_lacks() -> None:
    run = run_at_cutoff({"reseller-1": 0.99, "bot-1": 0.97, "r-1": 0.5})
    segmenter = FencedAt({2.0: 0.9, 2.5: 0.95, 3.0: 0.98, 3.5: None})
    report = {
        "cutoff": "2011-09-09",
        "models": {
            "kmeans": {"fence_sweep": fence_sweep(run, {"reseller": {"reseller-1"}}, segmenter)}
        },
        "loners": {"fence_sweep": fence_sweep(run, {"bot": {"bot-1"}}, segmenter)},
    }
    console = Console(record=True, width=120)

    show_fence_sweep([report], console)

    lines = console.export_text().splitlines()
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line.startswith("│")
    ]
    cells, k = {}, ""
    for first, who, with_resellers, with_loners in rows:
        k = first or k
        cells[k, who] = (with_resellers, with_loners)
    assert cells["2", "fence (outlier_score)"] == ("0.900", "0.900")
    assert cells["2.5", "reseller"] == ("1.000", "-")
    assert cells["2.5", "bot"] == ("-", "1.000")
    assert cells["3", "bot"] == ("-", "0.000")
    assert cells["2.5", "real"] == ("0.500", "0.500")
    assert cells["3.5", "real"] == ("-", "-")
