"""EASE in the stream: the group's Gram is the customers' co-ownership, whatever the workers;
its refit is batch EASE; the blend served is the one the stream's outcomes favour."""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import replace

import numpy as np
import pytest

from online_models.customer.activity import DAY, Activity
from online_models.group.local import LocalGroup
from online_models.group.model import GroupModel
from online_models.group.parts import EASE, Delta
from online_models.group.worker import WorkerSync
from online_models.recommend.blend import DEFAULT_ARM, basket_weight, choose_arm, outcomes
from online_models.recommend.ease import (
    EaseCounts,
    EaseGram,
    EaseShare,
    GramSnapshot,
    fit_ease,
    merge_counts,
)
from online_models.recommend.items import item_hash
from online_models.scoring.scorer import CustomerScorer, ScorerConfig
from schemas.model_records import ModelRecordRefused
from streams.model_codec import decode_delta, encode_delta

T0 = 1_735_689_600.0
CONFIG = ScorerConfig(recommender_factors=4, item_buckets=8, ease_strength=2.0)


def shop(customers: int, items: int, seed: int) -> list[tuple[str, Activity]]:
    """Purchases over two weeks where customers of a taste buy within its items."""
    rng = random.Random(seed)
    events = []
    for c in range(customers):
        taste = rng.randrange(3)
        for n in range(rng.randint(2, 8)):
            item = f"sku-{taste * (items // 3) + rng.randrange(items // 3)}"
            when = T0 + rng.uniform(0.0, 14 * DAY) + n
            events.append((when, f"c{c}", item))
    events.sort()
    return [(c, Activity("purchase", t, item_id=i, amount=5.0, quantity=1)) for t, c, i in events]


def batch_gram(events: list[tuple[str, Activity]]) -> dict[tuple[int, int], float]:
    """X'X of the binary customer x item matrix, by item hashes (the diagonal: owners)."""
    owned: dict[str, set[str]] = {}
    for customer, activity in events:
        assert activity.item_id is not None
        owned.setdefault(customer, set()).add(activity.item_id)
    gram: dict[tuple[int, int], float] = {}
    for items in owned.values():
        for a in items:
            for b in items:
                key = (item_hash(a), item_hash(b))
                gram[key] = gram.get(key, 0.0) + 1.0
    return gram


def run(events: list[tuple[str, Activity]], workers: int, config: ScorerConfig) -> LocalGroup:
    group = LocalGroup(config, workers=workers, sync_seconds=3_600.0)
    for customer, activity in events:
        group.process(customer, activity, worker=zlib.crc32(customer.encode()) % workers)
    group.sync()
    return group


@pytest.mark.parametrize("workers", [1, 3])
def test_the_groups_gram_is_every_customers_co_ownership(workers: int) -> None:
    events = shop(60, 30, seed=workers)
    group = run(events, workers, CONFIG)
    assert group.merger.ease is not None
    snapshot = group.merger.ease.snapshot()
    items = snapshot.items.tolist()
    streamed = {
        (a, b): float(snapshot.gram[i, j])
        for i, a in enumerate(items)
        for j, b in enumerate(items)
        if snapshot.gram[i, j]
    }
    assert streamed == batch_gram(events)


def test_the_refit_is_batch_ease_and_keeps_the_strongest_weights() -> None:
    rng = np.random.default_rng(3)
    owned = (rng.random((40, 12)) < 0.3).astype(float)
    gram = owned.T @ owned
    items = np.arange(100, 112)
    share = fit_ease(GramSnapshot(items, gram.copy(), 1.0, 0.0), strength=5.0, neighbors=11,
                     fitted_at=0.0)  # fmt: skip
    inverse = np.linalg.inv(gram + 5.0 * np.eye(12))
    batch = inverse / -np.diag(inverse)
    np.fill_diagonal(batch, 0.0)
    streamed = np.zeros((12, 12))
    for row in range(12):
        start, end = share.offsets[row], share.offsets[row + 1]
        streamed[row, share.refs[start:end] - 100] = share.weights[start:end]
        # Best first, and only positive weights.
        assert (np.diff(share.weights[start:end]) <= 0).all()
    np.testing.assert_allclose(streamed, np.where(batch > 0, batch, 0.0), rtol=1e-5, atol=1e-7)
    kept = fit_ease(GramSnapshot(items, gram.copy(), 1.0, 0.0), strength=5.0, neighbors=2,
                    fitted_at=0.0)  # fmt: skip
    assert (np.diff(kept.offsets) <= 2).all()
    assert kept.weights[0] == share.weights[0]


def test_one_worker_and_three_fit_the_same_weights_and_rank_alike() -> None:
    events = shop(80, 30, seed=7)
    config = ScorerConfig(recommender_factors=4, item_buckets=8, ease_strength=2.0,
                          ease_refit_days=0.5)  # fmt: skip
    one, three = run(events, 1, config), run(events, 3, config)
    fits = [group.merger.parts[EASE].share for group in (one, three)]
    assert all(isinstance(fit, EaseShare) and len(fit.refs) for fit in fits)
    a, b = fits
    assert isinstance(a, EaseShare) and isinstance(b, EaseShare)
    assert a.fitted_at == b.fitted_at
    order_a, order_b = np.argsort(a.items), np.argsort(b.items)
    assert a.items[order_a].tolist() == b.items[order_b].tolist()
    assert (np.diff(a.offsets)[order_a] == np.diff(b.offsets)[order_b]).all()
    np.testing.assert_allclose(np.sort(a.weights), np.sort(b.weights), rtol=1e-5)


def test_a_customer_is_recommended_what_owners_of_their_items_own() -> None:
    """Owners of the tea own the cup; a new tea buyer is offered the cup first by EASE."""
    events = []
    for c in range(30):
        events.append((f"c{c}", Activity("purchase", T0 + c * 600.0, item_id="tea", amount=3.0,
                                         quantity=1)))  # fmt: skip
        other = "cup" if c < 20 else f"rare-{c}"
        events.append((f"c{c}", Activity("purchase", T0 + c * 600.0 + 60.0, item_id=other,
                                         amount=3.0, quantity=1)))  # fmt: skip
    for c in range(30, 60):  # popular with others
        for item in ("soap", "towel"):
            events.append((f"c{c}", Activity("purchase", T0 + 2 * DAY + c * 60.0,
                                             item_id=item, amount=3.0, quantity=1)))  # fmt: skip
    group = run(events, 1, CONFIG)
    recommender = group.scorers[0].recommender
    recommender.arm = next(n for n, arm in enumerate(recommender.arms) if arm.name == "ease")
    assert recommender.rank(None, 1, recent=["tea"], exclude={"tea"}) == ["cup"]


def test_the_blend_serves_the_arm_customers_buy_from() -> None:
    """Baskets that only the popularity arm's lists held: the group's model serves it."""
    config = ScorerConfig(recommender_factors=4, item_buckets=8, ease_refit_days=1.0)
    group = GroupModel(config)
    scorer = CustomerScorer(config)
    sync = WorkerSync(scorer, "w1")
    recommender = scorer.recommender
    arms = len(recommender.arms)
    times = [T0 + n * 3_600.0 for n in range(300)]
    hits = np.zeros((300, arms), dtype=bool)
    hits[:, 0] = True  # popularity hit every basket
    hits[::3, 3] = True  # EASE with content one in three
    recommender.learn_owned("sku-0", [], time=times[0])
    for delta in sync.deltas():  # the first counts: EASE is fitted a refit period after them
        group.merge(delta)
    for n in range(1, 3):
        recommender.learn_owned(f"sku-{n}", [f"sku-{m}" for m in range(n)], time=times[-1])
    recommender.learn_outcomes(times, hits)
    for delta in sync.deltas():
        group.merge(delta)
    version, parts = group.publish()
    fit = group.parts[EASE].share
    assert isinstance(fit, EaseShare) and fit.arm == 0
    sync.apply(version, {part.key: part for part in parts})
    assert recommender.arms[recommender.arm].name == "popularity"
    rates = np.exp(fit.hits - fit.trials) if fit.hits is not None else None
    assert rates is not None and rates[0] == pytest.approx(1.0) and rates[1] == 0.0


def judged(hits: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The blend's outcomes of baskets judged a minute apart up to T0 (``hits``: baskets x
    arms)."""
    weights = np.array([basket_weight(T0 - n * 60.0) for n in range(len(hits))])
    return outcomes(weights, hits)


def test_before_enough_baskets_the_hybrid_serves_and_ease_waits_for_its_fit() -> None:
    assert choose_arm(-math.inf, None, None, now=T0, fitted=False) == 1  # the hybrid
    assert choose_arm(-math.inf, None, None, now=T0, fitted=True) == 1  # outcomes first
    few = np.ones((10, 5), dtype=bool)
    assert choose_arm(*judged(few), now=T0, fitted=True) == 1  # 10 baskets: too few
    # EASE arms are not served before EASE is fitted, however they scored.
    hits = np.zeros((500, 5), dtype=bool)
    hits[:50, 0], hits[:100, 1], hits[:450, 2:] = True, True, True
    assert choose_arm(*judged(hits), now=T0, fitted=False) == 1
    assert choose_arm(*judged(hits), now=T0, fitted=True) == DEFAULT_ARM


def test_an_arm_a_few_baskets_ahead_does_not_take_over_from_the_default() -> None:
    """Hit rates a few baskets apart are noise: the default serves (one worker and eight
    judge different baskets, and must not serve different arms for it); a lead beyond chance
    switches, and an arm switched to stays while its lead holds."""

    def ahead_by(extra: int, shared: int = 40) -> np.ndarray:
        hits = np.zeros((400, 5), dtype=bool)
        hits[:shared, DEFAULT_ARM] = hits[: shared + extra, 1] = True
        return hits

    # The hybrid hit 12 more baskets, EASE with content none it missed: beyond chance.
    assert choose_arm(*judged(ahead_by(12)), now=T0, fitted=True) == 1
    # 9 of 9 leads by enough deviations, but is too few disagreements to switch on.
    assert choose_arm(*judged(ahead_by(9)), now=T0, fitted=True) == DEFAULT_ARM
    # The same rates, but the baskets they hit mostly differ: 48 against 40 of 88 is chance.
    apart = np.zeros((400, 5), dtype=bool)
    apart[:40, DEFAULT_ARM] = True
    apart[40:88, 1] = True
    assert choose_arm(*judged(apart), now=T0, fitted=True) == DEFAULT_ARM
    # Served since an earlier fit, the hybrid stays while its lead holds one deviation (5 of
    # 5); ahead by 1 of 9 it goes back to the default.
    assert choose_arm(*judged(ahead_by(5)), now=T0, fitted=True) == DEFAULT_ARM
    assert choose_arm(*judged(ahead_by(5)), now=T0, fitted=True, served=1) == 1
    mixed = ahead_by(5)
    mixed[100:104, DEFAULT_ARM] = True
    assert choose_arm(*judged(mixed), now=T0, fitted=True, served=1) == DEFAULT_ARM
    # Outcomes from before the pairs were counted (0.4.0's records) keep the default.
    trials, arm_hits, _ = judged(ahead_by(12))
    assert choose_arm(trials, arm_hits, None, now=T0, fitted=True) == DEFAULT_ARM


def test_the_pairs_of_outcomes_travel_and_merge_in_any_order() -> None:
    hits = np.zeros((300, 5), dtype=bool)
    hits[:30, 0] = hits[10:70, 3] = True
    trials, arm_hits, wins = judged(hits)
    counts = replace(EaseCounts.empty(), trials=trials, hits=arm_hits, wins=wins)
    raw = encode_delta(Delta(EASE, "w1", 1, counts), key=None, sent_at=T0)
    again = decode_delta(raw, CONFIG, key=None)
    assert isinstance(again.share, EaseCounts) and again.share.wins is not None
    np.testing.assert_array_equal(again.share.wins, wins)
    other = replace(counts, wins=wins - 1.0)
    np.testing.assert_allclose(
        merge_counts(counts, other).wins,
        merge_counts(other, counts).wins,  # type: ignore[arg-type]
    )
    assert math.exp(wins[3, 0] - basket_weight(T0)) == pytest.approx(40.0, rel=0.01)
    fit = replace(EaseShare.empty(), trials=trials, hits=arm_hits, wins=wins, arm=3)
    meta, arrays = fit.to_arrays()
    read = EaseShare.from_arrays(meta, arrays)
    assert read.wins is not None and np.array_equal(read.wins, wins)
    del arrays["wins"]  # a 0.4.0 fit
    assert EaseShare.from_arrays(meta, arrays).wins is None
    bad = {**counts.to_arrays()[1], "wins": np.full((5, 5), np.nan)}
    with pytest.raises(ValueError, match="wins"):
        EaseCounts.from_arrays({}, bad)
    one_arm = {**counts.to_arrays()[1], "hits": arm_hits[:1], "wins": wins[:1, :1]}
    with pytest.raises(ValueError, match="outcomes of 5 arms"):
        EaseCounts.from_arrays({}, one_arm)
    with pytest.raises(ValueError, match="not a fit"):
        EaseShare.from_arrays(meta, {**arrays, "hits": arm_hits[:1]})


def test_counts_merge_in_any_order() -> None:
    a = EaseCounts.of_purchases([(1, [2, 3]), (4, [1])], time=T0)
    b = EaseCounts.of_purchases([(2, [4]), (3, [1, 2])], time=T0 + 1.0)
    ab, ba = merge_counts(a, b), merge_counts(b, a)
    for field in ("left", "right", "counts", "owned", "owners"):
        assert getattr(ab, field).tolist() == getattr(ba, field).tolist()
    one = EaseGram(max_items=10)
    one.add(ab)
    two = EaseGram(max_items=10)
    two.add(b)
    two.add(a)
    first, second = one.snapshot(), two.snapshot()
    order_1, order_2 = np.argsort(first.items), np.argsort(second.items)
    np.testing.assert_array_equal(
        first.gram[np.ix_(order_1, order_1)], second.gram[np.ix_(order_2, order_2)]
    )


def test_a_full_gram_takes_in_items_owned_far_more_than_its_least_owned() -> None:
    gram = EaseGram(max_items=2)
    gram.add(EaseCounts.of_purchases([(1, []), (2, [1])], time=T0))
    many = [(3, []) for _ in range(5)]
    gram.add(EaseCounts.of_purchases(many, time=T0))
    # Item 3's five owners against one each: it takes the place of the least owned (1, of the
    # two tied, the lower hash), its pairs counted from now on.
    assert sorted(gram.snapshot().items.tolist()) == [2, 3]
    assert gram.owners[3] == 5.0


def test_a_new_merger_keeps_the_last_fit_until_its_counts_hold_as_many_pairs() -> None:
    events = shop(60, 30, seed=2)
    group = run(events, 1, CONFIG)
    fitted = group.merger.parts[EASE]
    assert isinstance(fitted.share, EaseShare) and fitted.share.pairs > 0
    successor = GroupModel(CONFIG, dict(group.merger.parts), group.merger.version)
    for seq, (item, days) in enumerate([(1, 30), (3, 60)], start=1):
        counts = EaseCounts.of_purchases([(item, [2])], time=T0 + days * DAY)
        successor.merge(Delta(EASE, "w9", seq, counts))
    assert successor.ease_fit_due() is None  # two pairs against the fit's many
    # ... until its own counts span a season: a fit of those, not weights frozen for ever.
    successor.merge(Delta(EASE, "w9", 3, EaseCounts.of_purchases([(4, [2])], time=T0 + 121 * DAY)))
    assert successor.ease_fit_due() is not None


def test_a_merger_given_its_partition_back_keeps_its_counts() -> None:
    """A rebalance that hands the updates partition back to the same worker: its Gram is
    adopted when no other merger published EASE meanwhile, and refused when one did."""
    events = shop(60, 30, seed=4)
    group = run(events, 1, CONFIG)
    state = group.merger.ease_state()
    assert state is not None and state[0].pairs > 0
    again = GroupModel(CONFIG, dict(group.merger.parts), group.merger.version)
    assert again.adopt_ease(state) and again.ease is state[0]
    fitted = group.merger.parts[EASE]
    moved_on = {**group.merger.parts, EASE: replace(fitted, version=fitted.version + 5)}
    other = GroupModel(CONFIG, moved_on, group.merger.version + 5)
    assert not other.adopt_ease(state) and other.ease is not None and other.ease.pairs == 0


def test_counts_that_are_not_counts_are_refused() -> None:
    good = Delta(EASE, "w1", 1, EaseCounts.of_purchases([(1, [2])], time=T0))
    raw = encode_delta(good, key=None, sent_at=T0)
    assert decode_delta(raw, CONFIG, key=None).share.counts.tolist() == [1.0]
    bad = EaseCounts(np.array([5]), np.array([2]), np.array([1.0]), np.zeros(0, np.int64),
                     np.zeros(0), T0)  # fmt: skip
    with pytest.raises(ModelRecordRefused) as refused:
        decode_delta(encode_delta(Delta(EASE, "w1", 2, bad), key=None, sent_at=T0), CONFIG,
                     key=None)  # fmt: skip
    assert refused.value.reason == "shape"


def test_counts_that_are_not_quite_a_gram_still_fit(caplog: pytest.LogCaptureFixture) -> None:
    """Items that joined a full Gram late miss the pairs counted before: the matrix may not be
    positive definite; the fit takes a general inverse and says so."""
    gram = np.array([[2.0, 2.0, 2.0], [2.0, 1.0, 0.0], [2.0, 0.0, 1.0]])
    snapshot = GramSnapshot(np.array([1, 2, 3]), gram, 4.0, T0)
    with caplog.at_level("WARNING"):
        share = fit_ease(snapshot, strength=0.5, neighbors=2, fitted_at=T0)
    assert "not positive definite" in caplog.text
    assert np.isfinite(share.weights).all() and len(share.items) == 3
    np.testing.assert_array_equal(snapshot.gram, gram)  # the snapshot is left as it was


def test_a_sync_of_many_pairs_goes_in_record_sized_deltas_none_kept_pending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import online_models.group.worker as worker_module

    events = shop(40, 30, seed=5)
    whole = run(events, 1, CONFIG)
    monkeypatch.setattr(worker_module, "EASE_DELTA_PAIRS", 7)
    pieces = LocalGroup(CONFIG, workers=1, sync_seconds=1e9)  # one sync at the end
    for customer, activity in events:
        pieces.process(customer, activity)
    deltas = pieces.syncs[0].deltas()
    ease = [d for d in deltas if d.key == EASE]
    assert len(ease) > 3 and all(len(d.share.left) <= 7 for d in ease)
    assert [d.seq for d in ease] == sorted({d.seq for d in ease})  # each its own, in order
    assert pieces.syncs[0].pending == len(deltas) - len(ease)  # EASE's never wait here
    for delta in deltas:
        pieces.merger.merge(delta)
    assert whole.merger.ease is not None and pieces.merger.ease is not None
    a, b = whole.merger.ease.snapshot(), pieces.merger.ease.snapshot()
    order_a, order_b = np.argsort(a.items), np.argsort(b.items)
    np.testing.assert_array_equal(
        a.gram[np.ix_(order_a, order_a)], b.gram[np.ix_(order_b, order_b)]
    )
