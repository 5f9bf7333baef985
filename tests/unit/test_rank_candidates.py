"""Ranking a batch of customers on candidate columns gives the lists ranking the whole
catalogue gives: the same items in the same order, for every arm of the blend."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from online_models.recommend import ranking
from online_models.recommend.candidates import new_item_candidates
from online_models.recommend.content import ContentModel
from online_models.recommend.ease import EaseShare
from online_models.recommend.items import item_hash
from online_models.recommend.recommender import Recommender

COLOURS = ("red", "blue", "green", "white", "black", "pink")
NOUNS = ("lamp", "mug", "candle", "frame", "cushion", "bag", "vase", "clock")
SOLD = 150  # items sku-0 .. sku-149 are sold; the rest of the catalogue never was
CATALOGUE = 600


def random_model(seed: int) -> Recommender:
    """A recommender with a catalogue of 600 items, 150 of them sold (co-bought in baskets),
    some withdrawn, some removed, and an EASE fit naming sold items and a few never sold."""
    rng = random.Random(seed)
    content = ContentModel(dimensions=32)
    for n in range(CATALOGUE):
        noun = rng.choice(NOUNS)
        content.upsert(
            f"sku-{n}",
            {"name": f"{rng.choice(COLOURS)} {noun} {rng.randrange(9)}", "category": noun,
             "price": rng.choice((2, 5, 20)), "available": rng.random() > 0.05},
        )  # fmt: skip
    for n in rng.sample(range(CATALOGUE), 10):
        content.remove(f"sku-{n}")
    model = Recommender(n_factors=8, seed=seed)
    model.attach(content)
    clock = 0.0
    for user in range(80):
        basket: list[str] = []
        for _ in range(rng.randrange(1, 9)):
            clock += rng.uniform(10.0, 5_000.0)
            item = f"sku-{min(int(rng.paretovariate(0.7)) - 1, SOLD - 1)}"
            weight = rng.choice((1.0, 1.0, 0.5, 0.2))
            model.learn_one(f"u{user}", item, time=clock, weight=weight, basket=basket[-4:])
            if weight >= 1.0:
                basket.append(item)
    model.rank(None, 1)  # the catalogue's items get their rows
    items = [f"sku-{n}" for n in range(SOLD)]
    owners, offsets, refs, weights = [], [0], [], []
    for item in items[:100]:
        # Owned items, and now and then one not sold here (another worker's sale).
        targets = rng.sample(range(SOLD), rng.randrange(0, 30)) + rng.sample(
            range(SOLD, CATALOGUE), rng.randrange(0, 2)
        )
        owners.append(item_hash(item))
        refs += [item_hash(f"sku-{t}") for t in targets]
        weights += [rng.random() for _ in targets]
        offsets.append(len(refs))
    model.apply_ease(
        EaseShare(np.array(owners), np.array(offsets), np.array(refs),
                  np.array(weights, np.float32), 2.0, clock, 1.0)
    )  # fmt: skip
    return model


def requests(seed: int, model: Recommender) -> list[ranking.RankRequest]:
    """Known customers, strangers and latent factors; histories of sold, never-sold and
    unknown items; exclusions of either."""
    rng = random.Random(seed + 1)
    catalogue = [f"sku-{n}" for n in range(CATALOGUE)]
    made: list[ranking.RankRequest] = []
    for row in range(120):
        user: str | np.ndarray | None = rng.choice(
            (f"u{rng.randrange(80)}", None, "stranger", model.user_latent(f"x{row}"))
        )
        recent = rng.sample(catalogue[:SOLD], rng.randrange(0, 6))
        recent += [*rng.sample(catalogue, rng.randrange(0, 3)), "not-in-catalogue"]
        owned = rng.sample(catalogue[:SOLD], rng.randrange(0, 12))
        exclude = set(owned) | set(rng.sample(catalogue, rng.randrange(0, 20)))
        made.append((user, exclude, recent, owned))
    return made


def ranked(
    model: Recommender, asked: list[ranking.RankRequest], k: int, *, candidates: bool
) -> list[list[list[str]]]:
    """Every arm's lists, ranked on candidate columns or on the whole catalogue."""
    saved = ranking.CANDIDATES_FROM_NEW_SHARE
    ranking.CANDIDATES_FROM_NEW_SHARE = 0.0 if candidates else math.inf
    try:
        return model.rank_arms(asked, k, model.arms)
    finally:
        ranking.CANDIDATES_FROM_NEW_SHARE = saved


@pytest.mark.parametrize("seed", [1, 2, 3, 10, 11, 23])
@pytest.mark.parametrize("k", [1, 2, 3, 10, 40])
def test_candidate_ranking_is_the_full_catalogues_ranking(seed: int, k: int) -> None:
    model = random_model(seed)
    asked = requests(seed, model)
    full = ranked(model, asked, k, candidates=False)
    assert ranked(model, asked, k, candidates=True) == full
    content = model.content
    assert content is not None
    listed = {item for lists in full for ranking_ in lists for item in ranking_}
    assert content.allows_all(listed)  # nothing withdrawn or removed
    sold = {f"sku-{n}" for n in range(SOLD)}
    assert listed - sold  # never-sold items do reach the lists (the new-item slot, EASE)


def test_candidate_ranking_ranks_fewer_columns_than_the_catalogue() -> None:
    model = random_model(4)
    asked = requests(4, model)
    seen: list[int] = []
    original = ranking.Ranker._signals

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        signals, columns = original(self, *args, **kwargs)
        seen.append(model.n_items if columns is None else len(columns))
        return signals, columns

    ranking.Ranker._signals = spy  # type: ignore[method-assign]
    try:
        ranked(model, asked[:10], 10, candidates=True)
    finally:
        ranking.Ranker._signals = original  # type: ignore[method-assign]
    assert seen and max(seen) < model.n_items / 2


def test_exclusions_hold_when_the_cosines_are_a_column_slice() -> None:
    """A batch's cosines with the never-sold items are a column slice of a larger matrix
    (Fortran-ordered for more than one customer): a customer's excluded item is still out of
    the race for their k-th best, so the next best is kept."""
    similarity = np.array([[0, 0, 0.8, 1, 0.9, 0], [0, 0, 0, 0, 0, 0.5]], np.float32)
    new = np.arange(10, 16)
    excluded = [np.array([3]), np.array([], np.intp)]
    expected = new_item_candidates(new, similarity.copy(), excluded, 1)
    sliced = new_item_candidates(new, np.asfortranarray(similarity), excluded, 1)
    assert expected.tolist() == sliced.tolist() == [10, 11, 14, 15]
