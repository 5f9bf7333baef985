"""The product catalogue: its records on the wire, and what it changes in the recommendations."""

from __future__ import annotations

import numpy as np
import pytest

from online_models.customer.activity import DAY, Activity
from online_models.recommend.content import ContentModel
from online_models.scoring.engine import ScoringEngine
from online_models.scoring.scorer import CustomerScorer, ScorerConfig
from schemas.errors import EventRejected
from schemas.items import CatalogueItem, decode_item

T0 = 1_735_689_600.0

CATALOGUE = {
    "lamp-red": {"name": "Red table lamp", "category": "home/lighting", "brand": "Lumo"},
    "lamp-green": {"name": "Green table lamp", "category": "home/lighting", "brand": "Lumo"},
    "lamp-white": {"name": "White table lamp", "category": "home/lighting", "brand": "Lumo"},
    "mug-blue": {"name": "Blue coffee mug", "category": "home/kitchen", "price": 6},
    "mug-pink": {"name": "Pink coffee mug", "category": "home/kitchen", "price": 6},
    "teapot": {"name": "Teapot with strainer", "category": "home/kitchen", "price": 25},
    "socks": {"name": "Wool socks", "category": "clothing", "price": 9},
    "scarf": {"name": "Wool scarf", "category": "clothing", "price": 19},
}


def shop(config: ScorerConfig | None = None) -> tuple[CustomerScorer, ScoringEngine]:
    """A scorer with the catalogue, and kitchen shoppers who made mugs the popular items."""
    scorer = CustomerScorer(config or ScorerConfig(top_k=3))
    for item_id, item in CATALOGUE.items():
        scorer.catalogue.upsert(item_id, item)
    engine = ScoringEngine(scorer, {})
    t = T0
    for n in range(30):
        for item in ("mug-blue", "mug-pink", "teapot"):
            t += 600
            engine.process(f"kitchen-{n}", Activity("purchase", t, item_id=item, amount=6.0,
                                                    quantity=1))  # fmt: skip
    return scorer, engine


def buy(engine: ScoringEngine, customer: str, item: str, t: float) -> None:
    engine.process(customer, Activity("purchase", t, item_id=item, amount=20.0, quantity=1))


def recommendations(scorer: CustomerScorer, engine: ScoringEngine, customer: str) -> list[str]:
    return scorer.recommend(customer, engine.states[customer])


def test_a_new_catalogue_item_is_recommended_from_its_content_before_anyone_buys_it():
    scorer, engine = shop()
    buy(engine, "ann", "lamp-red", T0 + DAY)

    assert "lamp-green" in recommendations(scorer, engine, "ann")  # nobody bought it

    scorer.catalogue.upsert(
        "lamp-amber", {"name": "Amber table lamp", "category": "home/lighting", "brand": "Lumo"}
    )
    assert "lamp-amber" in recommendations(scorer, engine, "ann")


def test_without_content_the_same_customer_gets_the_popular_kitchen_items():
    scorer, engine = shop(ScorerConfig(top_k=3, content_weight=0.0))
    buy(engine, "ann", "lamp-red", T0 + DAY)

    assert set(recommendations(scorer, engine, "ann")) == {"mug-blue", "mug-pink", "teapot"}


def test_an_item_marked_unavailable_disappears_from_every_customers_recommendations():
    scorer, engine = shop()
    buy(engine, "ann", "lamp-red", T0 + DAY)
    customers = sorted(engine.states)
    before = {c: recommendations(scorer, engine, c) for c in customers}
    assert sum("mug-pink" in ranked for ranked in before.values()) > 0

    scorer.catalogue.upsert("mug-pink", {**CATALOGUE["mug-pink"], "available": False})

    after = {c: recommendations(scorer, engine, c) for c in customers}
    assert not any("mug-pink" in ranked for ranked in after.values())
    assert all(len(ranked) == 3 for ranked in after.values())  # the lists are refilled

    scorer.catalogue.upsert("mug-pink", CATALOGUE["mug-pink"])  # back in stock
    assert sum("mug-pink" in recommendations(scorer, engine, c) for c in customers) > 0


def test_a_removed_item_is_never_recommended_and_items_outside_the_catalogue_only_if_allowed():
    for catalogue_only in (True, False):
        scorer, engine = shop(ScorerConfig(top_k=10, recommend_catalogue_only=catalogue_only))
        for n in range(5):  # an item the catalogue never names, bought by many
            buy(engine, f"gift-{n}", "gift-card", T0 + DAY + n)
        scorer.catalogue.remove("teapot")
        buy(engine, "ann", "socks", T0 + 2 * DAY)

        ranked = recommendations(scorer, engine, "ann")

        assert "teapot" not in ranked
        assert ("gift-card" in ranked) is not catalogue_only


def test_an_empty_catalogue_changes_nothing():
    scorer = CustomerScorer(ScorerConfig(top_k=3))
    engine = ScoringEngine(scorer, {})
    buy(engine, "ann", "anything", T0)
    buy(engine, "bob", "other", T0 + 1)

    assert recommendations(scorer, engine, "bob") == ["anything"]


def test_content_vectors_are_the_same_on_every_worker_and_follow_the_catalogue():
    one, two = ContentModel(), ContentModel()
    for item_id, item in CATALOGUE.items():
        one.upsert(item_id, item)
    for item_id, item in reversed(CATALOGUE.items()):
        two.upsert(item_id, item)
    items = list(CATALOGUE)

    assert (one.vectors(items) == two.vectors(items)).all()
    lamps = one.scores([["lamp-red"]], ["lamp-green", "scarf"])[0]
    assert lamps[0] > 0.3 > lamps[1]

    one.upsert("lamp-green", {"name": "Green wool scarf", "category": "clothing"})
    assert one.scores([["lamp-red"]], ["lamp-green"])[0, 0] < lamps[0]


def test_a_catalogue_record_decodes_or_names_what_is_wrong():
    raw = (
        b'{"item_id": "sku-1", "name": "Lamp", "category": "home / lighting", "price": 12,'
        b' "available": false, "properties": {"colour": "red"}, "supplier": "x"}'
    )
    item = decode_item(b"sku-1", raw)

    assert isinstance(item, CatalogueItem)
    assert (item.category, item.price, item.available) == ("home/lighting", 12.0, False)
    assert item.model_extra == {"supplier": "x"}
    assert decode_item(b"sku-1", item.to_bytes()) == item
    assert decode_item(b"sku-1", None) is None  # a tombstone: the item is removed


@pytest.mark.parametrize(
    ("key", "raw", "reason", "field"),
    [
        (b"sku-1", b"not json", "not_json", None),
        (b"sku-1", b"[1, 2]", "not_an_object", None),
        (b"sku-1", b'{"item_id": "sku-1"}', "missing_field", "name"),
        (b"sku-1", b'{"item_id": "sku-1", "name": ""}', "invalid_value", "name"),
        (b"sku-1", b'{"item_id": "sku-1", "name": "x", "price": -1}', "invalid_value", "price"),
        (b"sku-1", b'{"item_id": "sku-1", "name": "x", "available": "no"}', "wrong_type",
         "available"),
        (b"sku-1", b'{"item_id": "sku-1", "name": "x", "category": " / "}', "invalid_value",
         "category"),
        (b"sku-2", b'{"item_id": "sku-1", "name": "x"}', "key_mismatch", "item_id"),
        (None, None, "missing_field", None),
        (b"sku-1", b'{"item_id": "sku-1", "name": "' + b"x" * 300_000 + b'"}', "oversized", None),
    ],
)  # fmt: skip
def test_a_bad_catalogue_record_is_rejected_with_its_reason(key, raw, reason, field):
    with pytest.raises(EventRejected) as caught:
        decode_item(key, raw)

    assert caught.value.reason == reason
    assert caught.value.field == field


RETAIL_CSV = """InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom
536366,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:28,2.95,17851,United Kingdom
536367,85123A,?,6,12/1/2010 8:29,0,,United Kingdom
536368,71053,WHITE METAL LANTERN,6,12/1/2010 8:30,3.39,17850,United Kingdom
536369,POST,POSTAGE,1,12/1/2010 8:31,18.0,17850,United Kingdom
536370,22752,SET 7 BABUSHKA NESTING BOXES,2,12/2/2010 9:00,7.65,17852,United Kingdom
"""


def test_the_online_retail_preset_derives_a_catalogue_from_transactions(tmp_path):
    from streams.commands.items import load_catalogue

    path = tmp_path / "retail.csv"
    path.write_text(RETAIL_CSV)

    catalogue = load_catalogue(path, preset="online-retail")

    by_id = {item.item_id: item for item in catalogue.items}
    assert set(by_id) == {"85123A", "71053", "22752"}
    assert by_id["85123A"].name == "WHITE HANGING HEART T-LIGHT HOLDER"  # the most common
    assert by_id["85123A"].price == 2.75  # the median of the priced lines
    assert dict(catalogue.rejected) == {"not_a_product": 1}


def test_a_backtest_with_a_catalogue_recommends_only_what_it_lists(tmp_path):
    from datetime import UTC, datetime

    from streams.commands.backtest import run_backtest
    from streams.commands.items import load_catalogue
    from streams.commands.transactions import load_transactions

    path = tmp_path / "retail.csv"
    path.write_text(RETAIL_CSV)
    events = [loaded.event for loaded in load_transactions(path, preset="online-retail").events]
    items = [i for i in load_catalogue(path, preset="online-retail").items if i.item_id != "71053"]
    items.append(CatalogueItem(item_id="NEW-1", name="WHITE HANGING HEART LANTERN"))

    result = run_backtest(events, datetime(2011, 1, 1, tzinfo=UTC), items=items)

    recommended = {item for row in result.rows for item in row.recommendations}
    assert "71053" not in recommended  # bought, but not in the catalogue
    assert "NEW-1" in recommended  # never bought: its content matches the hearts and lanterns


def test_a_new_item_gets_the_last_place_even_when_known_items_outscore_it():
    config = ScorerConfig(top_k=3, content_weight=0.1)  # content alone would never rank it
    scorer, engine = shop(config)
    for n in range(10):  # lamps bought together: strong co-purchase and popularity
        engine.process(f"lamps-{n}", Activity("purchase", T0 + DAY + n, item_id="lamp-red",
                                              amount=9.0, quantity=1))  # fmt: skip
        engine.process(f"lamps-{n}", Activity("purchase", T0 + DAY + n, item_id="lamp-green",
                                              amount=9.0, quantity=1))  # fmt: skip
    buy(engine, "ann", "lamp-red", T0 + 2 * DAY)
    scorer.catalogue.upsert("lamp-amber", {**CATALOGUE["lamp-red"], "name": "Amber table lamp"})
    scorer.catalogue.upsert("socks-red", {**CATALOGUE["socks"], "name": "Red socks"})

    ranked = recommendations(scorer, engine, "ann")

    assert ranked[-1] == "lamp-amber"  # the best-matching new item, last
    assert ranked[0] == "lamp-green"  # the known items keep their order before it
    scorer.recommender.new_item_slots = 0
    assert "lamp-amber" not in recommendations(scorer, engine, "ann")


def test_a_factored_view_scores_what_the_dense_vectors_score() -> None:
    """Ranking against the items' sparse features times their directions (smaller than the
    vectors for a catalogue of few distinct words) gives the dense cosines, items the
    catalogue does not hold included (zero)."""
    content = ContentModel(dimensions=64)
    for n in range(300):
        content.upsert(f"sku-{n}", {"name": f"red mug {n % 7}", "category": f"home/{n % 5}"})
    items = ["unknown", *(f"sku-{n}" for n in range(299, -1, -1))]  # not the insertion order
    histories = [["sku-3", "sku-10"], ["sku-42"], ["unknown"]]
    view = content.view(items)

    assert view.factored
    dense = content.profiles(histories) @ content.vectors(items).T
    factored = view.cosines(content.profiles(histories))
    assert np.allclose(factored, dense, atol=1e-5)
    assert (factored[:, 0] == 0).all()


def test_a_profile_is_the_normalised_mean_of_the_customers_items_each_counted_once() -> None:
    """A customer's profile is the direction of their items' mean vector: an item bought
    twice counts once, an item the catalogue does not hold not at all, and a customer with
    none of its items has a profile of zeros (cosine 0 with everything)."""
    content = ContentModel(dimensions=32)
    for n in range(50):
        content.upsert(f"sku-{n}", {"name": f"blue vase {n % 4}", "category": f"home/{n % 3}"})
    histories = [["sku-1", "sku-7", "sku-1", "gone"], ["sku-9"], ["gone"], []]

    profiles = content.profiles(histories)

    vectors = content.vectors(["sku-1", "sku-7", "sku-9"])
    mean = vectors[:2].mean(axis=0)
    assert np.allclose(profiles[0], mean / np.linalg.norm(mean), atol=1e-6)
    assert np.allclose(profiles[1], vectors[2], atol=1e-6)
    assert not profiles[2:].any()
    assert profiles.dtype == np.float32


def test_a_profile_follows_the_catalogue_as_it_changes() -> None:
    """An unavailable item still says what the customer likes; an item without features adds
    nothing; a changed item's new vector is used at once, a removed item's no more."""
    content = ContentModel(dimensions=32)
    content.upsert("mug", {"name": "blue mug", "category": "kitchen"})
    content.upsert("lamp", {"name": "red lamp", "category": "lighting"})
    content.upsert("blank", {})
    mug = content.profiles([["mug"]])[0]
    assert np.allclose(content.profiles([["mug", "blank"]])[0], mug, atol=1e-6)

    content.upsert("mug", {"name": "blue mug", "category": "kitchen", "available": False})
    assert np.allclose(content.profiles([["mug"]])[0], mug, atol=1e-6)

    content.upsert("mug", {"name": "green bowl", "category": "garden"})
    bowl = content.profiles([["mug"]])[0]
    assert np.allclose(bowl, content.vectors(["mug"])[0], atol=1e-6)
    assert not np.allclose(bowl, mug, atol=1e-3)

    content.remove("mug")
    assert not content.profiles([["mug"]]).any()
    assert np.allclose(content.profiles([["mug", "lamp"]])[0], content.vectors(["lamp"])[0])
