"""Unit tests of the streaming recommender on synthetic worlds (no services)."""

from __future__ import annotations

import copy
import math
import pickle
import random

import numpy as np
import pytest

from online_models.customer.activity import Activity
from online_models.recommend.items import initial_latent, item_hash
from online_models.recommend.ranking import top_k_columns
from online_models.recommend.recommender import Recommender
from online_models.scoring.scorer import CustomerScorer, ScorerConfig
from online_models.scoring.state import CustomerState

DAY = 86_400.0
N_GROUP_ITEMS = 20
N_GROUP_USERS = 30
PURCHASES_PER_USER = 10
PASSES = 3


def two_group_world(seed: int = 0) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """Users ``a*`` buy only items ``a*``, users ``b*`` only items ``b*``.

    Item popularity inside a group is Zipf-like; every user buys distinct items. Returns each
    user's purchase sequence and the users' sequences interleaved at random into one stream.
    """
    rng = random.Random(seed)
    histories: dict[str, list[str]] = {}
    for group in ("a", "b"):
        for u in range(N_GROUP_USERS):
            pool = [f"{group}{i}" for i in range(N_GROUP_ITEMS)]
            weights = [1.0 / (i + 1) for i in range(N_GROUP_ITEMS)]
            sequence = []
            for _ in range(PURCHASES_PER_USER):
                j = rng.choices(range(len(pool)), weights=weights)[0]
                sequence.append(pool.pop(j))
                weights.pop(j)
            histories[f"{group}-user{u}"] = sequence
    cursors = dict.fromkeys(histories, 0)
    pending = list(histories)
    stream = []
    while pending:
        user = rng.choice(pending)
        stream.append((user, histories[user][cursors[user]]))
        cursors[user] += 1
        if cursors[user] == len(histories[user]):
            pending.remove(user)
    return histories, stream


def train(
    model: Recommender,
    stream: list[tuple[str, str]],
    *,
    held_out: dict[str, str] | None = None,
    passes: int = PASSES,
) -> dict[str, list[str]]:
    """Replay the stream ``passes`` times (event time keeps moving, one event a minute).

    Returns what each user bought in the last pass (held-out purchases are skipped).
    """
    held_out = held_out or {}
    clock = 0.0
    bought: dict[str, list[str]] = {}
    for _ in range(passes):
        bought = {}
        for user, item in stream:
            clock += 60.0
            if held_out.get(user) == item:
                continue
            previous = bought.setdefault(user, [])
            model.learn_one(user, item, time=clock, basket=previous[-3:])
            previous.append(item)
    return bought


@pytest.fixture(scope="module")
def world() -> tuple[Recommender, dict[str, list[str]], list[tuple[str, str]]]:
    histories, stream = two_group_world()
    model = Recommender()
    train(model, stream)
    return model, histories, stream


def probe_ranks(model: Recommender) -> list[list[str]]:
    """Rankings of a known user, a stranger with and without history, with exclusions."""
    return [
        model.rank("a-user0", 10),
        model.rank("b-user3", 5, exclude={"b0", "b1"}, recent=["b2"]),
        model.rank("stranger", 7),
        model.rank("stranger", 7, recent=["a1", "b4"]),
    ]


# --- quality on the two-group world -------------------------------------------------------


def test_known_users_get_their_own_group(world):
    model, histories, _ = world
    for group in ("a", "b"):
        users = [u for u in histories if u.startswith(group)]
        top = [item for u in users for item in model.rank(u, 5)]
        share = sum(item.startswith(group) for item in top) / len(top)
        assert share > 0.8, (group, share)


def test_unknown_user_with_recent_item_gets_that_group(world):
    model, _, _ = world
    n_users = model.n_users
    top = model.rank("stranger", 5, recent=["a1"])
    assert sum(item.startswith("a") for item in top) / len(top) > 0.8, top
    top = model.rank("stranger", 5, recent=["b1"], exclude={"b1"})
    assert all(item.startswith("b") for item in top), top
    assert model.n_users == n_users  # ranking never creates factors for a stranger


def test_unknown_user_without_history_gets_most_popular(world):
    model, _, stream = world
    # Independent decayed popularity: the replay has PASSES passes of one event a minute.
    halflife = model.popularity_halflife_days * DAY
    end = 60.0 * PASSES * len(stream)
    popularity: dict[str, float] = {}
    for t, (_, item) in enumerate(stream * PASSES, start=1):
        popularity[item] = popularity.get(item, 0.0) + 2.0 ** ((60.0 * t - end) / halflife)
    expected = sorted(popularity, key=popularity.__getitem__, reverse=True)[:5]
    assert model.rank("stranger", 5) == expected


def test_blend_beats_pure_popularity_on_hit_rate():
    histories, stream = two_group_world(seed=1)
    held_out = {user: items[-1] for user, items in histories.items()}
    blend = Recommender()
    popularity = Recommender(cf_weight=0.0, co_purchase_weight=0.0)
    bought = train(blend, stream, held_out=held_out)
    train(popularity, stream, held_out=held_out)

    def hit_rate(model: Recommender, use_recent: bool) -> float:
        hits = 0
        for user, item in held_out.items():
            recent = bought[user][-3:] if use_recent else ()
            hits += item in model.rank(user, 5, exclude=bought[user], recent=recent)
        return hits / len(held_out)

    baseline = hit_rate(popularity, use_recent=True)
    assert hit_rate(blend, use_recent=True) > baseline + 0.2
    assert hit_rate(blend, use_recent=False) > baseline + 0.1  # factors alone also help


# --- ranking contract ---------------------------------------------------------------------


def test_exclude_is_honoured_and_no_duplicates(world):
    model, histories, _ = world
    exclude = set(histories["a-user0"]) | {"b0", "unknown-item"}
    for user in ("a-user0", "stranger"):
        top = model.rank(user, 15, exclude=exclude, recent=["a3"])
        assert len(top) == 15
        assert len(set(top)) == len(top)
        assert not exclude & set(top)


def test_k_larger_than_catalogue_returns_every_other_item(world):
    model, _, _ = world
    assert model.n_items == 2 * N_GROUP_ITEMS
    exclude = {"a0", "b7", "not-an-item"}
    top = model.rank("a-user1", 1000, exclude=exclude)
    assert len(top) == model.n_items - 2
    assert set(top) == {f"{g}{i}" for g in "ab" for i in range(N_GROUP_ITEMS)} - exclude
    everything = {f"{g}{i}" for g in "ab" for i in range(N_GROUP_ITEMS)}
    assert model.rank("a-user1", 1000, exclude=everything) == []


def test_empty_model_and_non_positive_k():
    model = Recommender()
    assert model.rank("anyone", 10) == []
    assert model.n_items == 0
    assert model.n_users == 0
    model.learn_one("u", "x", time=0.0)
    assert model.rank("u", 0) == []
    assert model.rank("u", -3) == []
    assert model.rank("someone-else", 3) == ["x"]


def test_invalid_arguments_are_rejected():
    model = Recommender()
    with pytest.raises(ValueError):
        model.learn_one("u", "x", time=0.0, weight=0.0)
    with pytest.raises(ValueError):
        model.learn_one("u", "x", time=math.nan)
    with pytest.raises(ValueError):
        Recommender(n_factors=0)
    with pytest.raises(ValueError):
        Recommender(popularity_halflife_days=0.0)
    with pytest.raises(ValueError):
        Recommender(negative_samples=-1)


# --- popularity decay ---------------------------------------------------------------------


def popularity_race(model: Recommender, shuffle_seed: int | None = None) -> None:
    """``old`` is bought 10 times on day 0, ``new`` 3 times on day 200, ``filler`` on day 50."""
    events = [(f"old-fan{i}", "old", 0.0 + i) for i in range(10)]
    events += [(f"new-fan{i}", "new", 200 * DAY + i) for i in range(3)]
    events.append(("someone", "filler", 50 * DAY))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(events)
    for user, item, time in events:
        model.learn_one(user, item, time=time)


def test_recent_popularity_beats_old_popularity():
    recent_matters = Recommender(popularity_halflife_days=30.0)
    popularity_race(recent_matters)
    assert recent_matters.rank("stranger", 3) == ["new", "old", "filler"]
    # With a halflife far longer than the horizon the raw counts win.
    counts_matter = Recommender(popularity_halflife_days=100_000.0)
    popularity_race(counts_matter)
    assert counts_matter.rank("stranger", 3) == ["old", "new", "filler"]


def test_out_of_order_events_rank_like_ordered_ones():
    ordered = Recommender()
    popularity_race(ordered)
    for seed in range(5):
        shuffled = Recommender()
        popularity_race(shuffled, shuffle_seed=seed)
        assert shuffled.rank("stranger", 3) == ordered.rank("stranger", 3)


def test_decay_survives_a_long_horizon_without_overflow():
    model = Recommender(popularity_halflife_days=1.0, negative_samples=0)
    # Five years of daily events on a one-day halflife: exp((t - t0) / tau) would overflow.
    for day in range(5 * 365):
        model.learn_one("u", "steady", time=day * DAY)
        if day % 7 == 0:
            model.learn_one("v", "weekly", time=day * DAY + 1.0, weight=2.0)
    model.learn_one("w", "ancient", time=0.0, weight=50.0)  # very late, very old
    assert np.isfinite(model._popularity[: model.n_items]).all()
    assert model.rank("stranger", 3) == ["steady", "weekly", "ancient"]


# --- co-purchase --------------------------------------------------------------------------


def test_new_item_surfaces_through_co_purchase():
    model = Recommender()
    for i in range(20):
        model.learn_one(f"fan{i}", "bestseller", time=float(i))
        model.learn_one(f"fan{i}", "runner-up", time=float(i))
    model.learn_one("explorer", "niche", time=100.0)
    model.learn_one("explorer", "brand-new", time=101.0, basket=["niche"])
    assert model.rank("stranger", 2) == ["bestseller", "runner-up"]
    assert model.rank("stranger", 1, recent=["niche"]) == ["brand-new"]
    assert model.rank("stranger", 1, recent=["brand-new"], exclude={"brand-new"}) == ["niche"]


def test_co_purchase_counts_only_purchases():
    model = Recommender()
    model.learn_one("u", "x", time=0.0)
    model.learn_one("u", "y", time=1.0, weight=0.5, basket=["x"])  # cart add: no pair
    model.learn_one("u", "z", time=2.0, weight=0.2, basket=["x"])  # view: no pair
    assert model._neighbors == {}
    model.learn_one("u", "y", time=3.0, weight=1.0, basket=["x", "y", "x"])
    assert model.rank("stranger", 1, recent=["x"], exclude={"x"}) == ["y"]


def test_co_purchase_neighbours_are_bounded_and_keep_the_strongest():
    model = Recommender(co_purchase_neighbors=3)
    for i in range(5):
        model.learn_one(f"u{i}", "hub", time=float(i), basket=["partner"])
    for i in range(30):
        model.learn_one(f"v{i}", "hub", time=10.0 + i, basket=[f"one-off{i}"])
    assert all(len(neighbours) <= 3 for neighbours in model._neighbors.values())
    # The strongest neighbour survives the stream of one-off pairs and ranks first.
    only_co_purchase = copy.deepcopy(model)
    only_co_purchase.popularity_weight = 0.0
    assert only_co_purchase.rank("stranger", 1, recent=["hub"]) == ["partner"]


# --- factorisation ------------------------------------------------------------------------


def test_event_weight_scales_the_gradient_like_a_sample_weight():
    base = Recommender(negative_samples=0, l2=0.0)
    base.learn_one("u", "x", time=0.0)
    moves = {}
    for weight in (0.2, 1.0):
        model = copy.deepcopy(base)
        before = model._users["u"].copy()
        model.learn_one("u", "x", time=1.0, weight=weight)
        moves[weight] = model._users["u"] - before
    np.testing.assert_allclose(moves[0.2], 0.2 * moves[1.0], rtol=1e-9, atol=1e-15)


def test_item_matrix_grows_and_keeps_every_item_in_its_row():
    model = Recommender(n_factors=4)
    for i in range(300):  # several capacity doublings
        model.learn_one(f"u{i % 17}", f"item{i}", time=float(i), basket=[f"item{i // 2}"])
    assert model.n_items == 300
    for item, row in model._index.items():
        assert model._items[row] == item and model._hashes[row] == item_hash(item)
    assert np.isfinite(model._factors[:300]).all() and np.isfinite(model._popularity[:300]).all()


# --- persistence, privacy, determinism ----------------------------------------------------


@pytest.mark.parametrize(
    "clone", [lambda m: pickle.loads(pickle.dumps(m)), copy.deepcopy], ids=["pickle", "deepcopy"]
)
def test_clone_ranks_identically_and_keeps_learning_identically(world, clone):
    original = copy.deepcopy(world[0])
    twin = clone(original)
    assert probe_ranks(twin) == probe_ranks(original)
    assert (twin.n_items, twin.n_users) == (original.n_items, original.n_users)
    # Full state (RNGs included) survives: the same further events keep both identical.
    for step, (user, item) in enumerate(world[2][:200]):
        for model in (original, twin):
            model.learn_one(user, item, time=1e9 + step, basket=["a2"])
    assert probe_ranks(twin) == probe_ranks(original)


def test_forget_user_drops_factors_and_falls_back_to_popularity(world):
    model = copy.deepcopy(world[0])
    n_users = model.n_users
    assert model.rank("a-user0", 5) != model.rank("stranger", 5)
    assert model.forget_user("a-user0") is True
    assert model.forget_user("a-user0") is False
    assert model.forget_user("never-seen") is False
    assert model.n_users == n_users - 1
    assert "a-user0" not in model._users
    assert model.rank("a-user0", 5) == model.rank("stranger", 5)
    assert model.n_users == n_users - 1


def test_same_seed_same_stream_same_ranking():
    _, stream = two_group_world(seed=2)
    first, second, other_seed = Recommender(seed=7), Recommender(seed=7), Recommender(seed=8)
    for model in (first, second, other_seed):
        train(model, stream, passes=1)
    assert probe_ranks(first) == probe_ranks(second)
    np.testing.assert_array_equal(first._factors, second._factors)
    assert not np.array_equal(first._factors, other_seed._factors)


# --- hit rate of what the scorer served --------------------------------------------------------


def test_a_new_basket_of_a_recommended_item_counts_as_a_hit():
    scorer = CustomerScorer(ScorerConfig(top_k=3, hit_rate_sample_every=1))
    quality = scorer.recommendation_quality
    t0 = 1_735_689_600.0

    def buy(customer: str, state: CustomerState | None, time: float, item: str) -> CustomerState:
        activity = Activity("purchase", time, item_id=item, amount=10.0, quantity=1)
        return scorer.score(customer, state, activity).state

    # A crowd buys sku-a, and a day later sku-b; a few buy rarer items.
    for n in range(20):
        buy(f"crowd-{n}", buy(f"crowd-{n}", None, t0 + n, "sku-a"), t0 + DAY + n, "sku-b")
    for n in range(5):
        buy(f"few-{n}", None, t0 + n, f"sku-{n + 10}")
    state = buy("ann", None, t0 + 2 * DAY, "sku-a")
    served = scorer.recommend("ann", state)
    assert "sku-b" in served
    assert "sku-never-sold" not in served
    baskets, hits = quality.baskets, round(quality.hit_rate * quality.baskets)

    state = buy("ann", state, t0 + 3 * DAY, "sku-b")  # a new basket, recommended: a hit
    assert (quality.baskets, round(quality.hit_rate * quality.baskets)) == (baskets + 1, hits + 1)
    state = buy("ann", state, t0 + 3 * DAY, "sku-never-sold")  # same basket: not counted again
    assert quality.baskets == baskets + 1
    buy("ann", state, t0 + 4 * DAY, "sku-never-sold-either")  # new basket, not served: a miss
    assert (quality.baskets, round(quality.hit_rate * quality.baskets)) == (baskets + 2, hits + 1)


def test_the_factor_step_is_rivers_funk_mf_step() -> None:
    """The hand-written SGD step gives exactly the latents River's FunkMF.learn_one gives."""
    from river import optim, reco

    ours = Recommender(n_factors=4, learning_rate=0.05, l2=0.001, negative_samples=0, seed=3)
    river_mf = reco.FunkMF(
        n_factors=4,
        optimizer=optim.SGD(0.05),
        loss=optim.losses.Squared(),
        l2=0.001,
        initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=3),
        seed=3,
    )
    # Both start from the same factors: ours are seeded by the ids, so every worker agrees.
    for user in ("ann", "bob"):
        river_mf.u_latents[user] = ours.user_latent(user)
    for item in ("tea", "cup"):
        river_mf.i_latents[item] = initial_latent(item, 4)
    interactions = [("ann", "tea", 1.0), ("bob", "tea", 0.5), ("ann", "cup", 1.0)] * 20
    for step, (user, item, weight) in enumerate(interactions):
        ours.learn_one(user, item, time=float(step), weight=weight)
        pred = river_mf.predict_one(user, item)
        river_mf.learn_one(user, item, pred + weight * (1.0 - pred))

    for user in ("ann", "bob"):
        np.testing.assert_allclose(ours._users[user], river_mf.u_latents[user])
    for item in ("tea", "cup"):
        np.testing.assert_allclose(ours._factors[ours._index[item]], river_mf.i_latents[item])


@pytest.mark.parametrize("k", [1, 10, 49, 50, 80])
@pytest.mark.parametrize("probed", [False, True])
def test_top_k_columns_is_a_stable_descending_sort_cut_at_k(k: int, probed: bool) -> None:
    """Rows full of ties (zeros, -inf, repeated values, -0.0) rank exactly as a stable sort
    by descending score would: ties by the lower column, with or without probe columns."""
    rng = np.random.default_rng(k)
    n = 1_000 if probed else 50
    choices = np.array([0.0, -0.0, 0.5, 1.0, -np.inf, 2.5e-6], dtype=np.float32)
    values = rng.choice(choices, (40, n), p=[0.4, 0.1, 0.05, 0.05, 0.35, 0.05])
    values[::3] = rng.random((14, n), dtype=np.float32)
    values[5] = -np.inf  # a row with nothing rankable still lists k columns
    probe = rng.choice(n, 100, replace=False) if probed else None
    expected = np.argsort(-(values + np.float32(0.0)), axis=1, kind="stable")[:, :k]
    assert (top_k_columns(values, k, probe) == expected).all()
