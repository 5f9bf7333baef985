"""The group model's merge rules, each without a broker: what workers learn apart, merged.

- counts and sums merge exactly: two workers' deltas merged equal one model that learned both
  streams (value-rank counts, scaler statistics, label counts, segment sums and weights,
  popularity, co-purchase counts);
- gradient-learned weights (churn regression, item factors) merge by adding each worker's
  steps, and land within a stated tolerance of one model learning every example;
- segment centres are created in the group's model only, so an id names one segment on every
  worker.
"""

from __future__ import annotations

import math
import random
import zlib

import numpy as np
import pytest

from online_models import __version__
from online_models.churn.model import ChurnModel
from online_models.customer.activity import DAY, Activity
from online_models.customer.profile import CHURN_FEATURES
from online_models.group.local import LocalGroup
from online_models.group.model import GroupModel
from online_models.group.worker import WorkerSync
from online_models.recommend.recommender import Recommender
from online_models.scoring.scorer import CustomerScorer, ScorerConfig
from online_models.segments.centres import SegmentShare, merge_segments
from online_models.segments.kmeans import Segmenter
from online_models.value.ranks import ValueModel, merge_value

T0 = 1_735_689_600.0
CONFIG = ScorerConfig(recommender_factors=4, item_buckets=8)
# How far the churn risk of a model merged from 2 or 4 workers' steps (syncing every 50 to 100
# labels per worker) may be from one model that learned every example: absolute probability,
# worst case over 200 probe customers; the README's stated tolerance. One model learning the
# same examples in another order lands 0.11 away.
CHURN_TOLERANCE = 0.05


def spread(customer: str, workers: int) -> int:
    """A worker for a customer, the same in every run (``hash`` of a str is not)."""
    return zlib.crc32(customer.encode()) % workers


def churn_examples(n: int, seed: int) -> list[tuple[dict[str, float], bool]]:
    """Examples where long silence and few orders mean churn."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        x = {name: rng.gauss(0.0, 1.0) for name in CHURN_FEATURES}
        logit = 1.5 * x["log_days_since_order"] - 1.0 * x["log_orders"] + 0.3
        examples.append((x, rng.random() < 1.0 / (1.0 + math.exp(-logit))))
    return examples


# --- counts and sums merge exactly -------------------------------------------------------------


def test_value_counts_of_two_workers_merge_into_one_models_counts() -> None:
    one, a, b = ValueModel(), ValueModel(), ValueModel()
    rng = random.Random(1)
    for n in range(300):
        spend, orders = rng.uniform(1, 5000), rng.randint(1, 40)
        one.observe(None, None, spend, orders)
        (a if n % 2 else b).observe(None, None, spend, orders)
    merged = merge_value(a.delta(), b.delta())
    whole = one.delta()
    np.testing.assert_array_equal(merged.monetary, whole.monetary)
    np.testing.assert_array_equal(merged.frequency, whole.frequency)


def test_churn_scaler_statistics_and_labels_merge_exactly() -> None:
    examples = churn_examples(400, seed=2)
    one, a, b = ChurnModel(), ChurnModel(), ChurnModel()
    for n, (x, y) in enumerate(examples):
        one.learn_one(x, y)
        (a if n % 3 else b).learn_one(x, y)
    from online_models.churn.model import merge_churn

    merged, whole = merge_churn(a.delta(), b.delta()), one.delta()
    np.testing.assert_allclose(merged.count, whole.count)
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(merged.var, whole.var, rtol=1e-10, atol=1e-12)
    assert merged.labels == whole.labels == 400


def test_segment_sums_and_weights_merge_exactly() -> None:
    centres = np.array(
        [[1.0, 0.1, 0.8, 0.8, 0.5], [1.0, 0.9, 0.1, 0.2, 0.1], [0.0, 0.5, 0, 0, 0.7]]
    )
    group = SegmentShare(centres.copy(), np.ones(3), time=T0, points=3)
    one, a, b = (Segmenter(n_segments=3, halflife_days=30.0) for _ in range(3))
    for model in (one, a, b):
        model.shared = True
        model.apply(group)
    rng = random.Random(3)
    for n in range(600):
        point = dict(
            zip(("ordered", "recency", "frequency", "monetary", "engagement"),
                (centres[n % 3] + [rng.gauss(0, 0.03) for _ in range(5)]).tolist(), strict=True)
        )  # fmt: skip
        when = T0 + n * 600.0
        one.learn_one(point, when)
        (a if rng.random() < 0.5 else b).learn_one(point, when)
    merged = merge_segments(a.delta(), b.delta(), halflife_days=30.0)
    whole = one.delta()
    np.testing.assert_allclose(merged.sums, whole.sums, rtol=1e-9)
    np.testing.assert_allclose(merged.weights, whole.weights, rtol=1e-9)
    assert merged.points == whole.points == 600


def test_popularity_and_co_purchase_counts_merge_exactly() -> None:
    one, a, b = (Recommender(n_factors=4, buckets=4, seed=5) for _ in range(3))
    for model in (one, a, b):
        model.shared = True
    rng = random.Random(4)
    for n in range(500):
        basket = [f"sku-{rng.randrange(12)}" for _ in range(2)]
        item = f"sku-{rng.randrange(12)}"
        for model in (one, a if n % 2 else b):
            model.learn_one(f"u{n % 30}", item, time=T0 + n * 60.0, basket=basket)
    merged_buckets = {}
    a_deltas, b_deltas = a.delta(), b.delta()
    from online_models.recommend.items import merge_items

    for bucket in set(a_deltas) | set(b_deltas):
        empty = a_deltas.get(bucket) or b_deltas[bucket]
        first = a_deltas.get(bucket, type(empty).empty(4))
        merged_buckets[bucket] = merge_items(first, b_deltas.get(bucket, type(empty).empty(4)))
    for bucket, whole in one.delta().items():
        merged = merged_buckets[bucket]
        at = {item: i for i, item in enumerate(merged.items)}
        for i, item in enumerate(whole.items):
            j = at[item]
            assert merged.popularity[j] == pytest.approx(whole.popularity[i], abs=1e-9)
            got = dict(zip(*(v.tolist() for v in merged.neighbors(j)), strict=True))
            want = dict(zip(*(v.tolist() for v in whole.neighbors(i)), strict=True))
            assert got == want


# --- gradient-learned weights: within a stated tolerance ------------------------------------


@pytest.mark.parametrize("workers", [2, 4])
def test_churn_weights_merged_from_workers_steps_stay_near_one_model(workers: int) -> None:
    examples = churn_examples(4_000, seed=6)
    alone = ChurnModel()
    scorers = [CustomerScorer(CONFIG) for _ in range(workers)]
    syncs = [WorkerSync(scorer, f"w{n}") for n, scorer in enumerate(scorers)]
    group = GroupModel(CONFIG)
    for n, (x, y) in enumerate(examples):
        alone.learn_one(x, y)
        scorers[n % workers].churn_model.learn_one(x, y)
        if n % 200 == 199:  # a sync every 200 labels, 50 per worker with 4 workers
            for sync in syncs:
                for delta in sync.deltas():
                    group.merge(delta)
            version, parts = group.publish()
            for sync in syncs:
                sync.apply(version, {part.key: part for part in parts})
    probes = [x for x, _ in churn_examples(200, seed=7)]
    gaps = [abs(scorers[0].churn_model.risk(x) - alone.risk(x)) for x in probes]
    assert max(gaps) <= CHURN_TOLERANCE, f"largest gap {max(gaps):.4f}"
    shuffled, reordered = examples[:], ChurnModel()
    random.Random(1).shuffle(shuffled)
    for x, y in shuffled:
        reordered.learn_one(x, y)
    assert max(gaps) < max(abs(reordered.risk(x) - alone.risk(x)) for x in probes)
    risks = [scorers[-1].churn_model.risk(x) for x in probes]
    assert risks == [scorers[0].churn_model.risk(x) for x in probes]  # one model, every worker
    assert scorers[0].churn_model.labels_learned == len(examples)


@pytest.mark.slow
def test_item_factors_merged_from_workers_steps_rank_like_one_model() -> None:
    """Two groups of customers buying from two groups of items: the factors alone (no
    popularity, no co-purchase) must put a customer's own group first, split or not."""
    rng = random.Random(8)
    stream = []
    for n in range(4_000):
        group = "a" if n % 2 else "b"
        stream.append((f"{group}-user{rng.randrange(20)}", f"{group}-sku{rng.randrange(10)}"))
    models = {}
    for workers in (1, 4):
        local = LocalGroup(CONFIG, workers=workers, sync_seconds=600.0)
        for n, (user, item) in enumerate(stream):
            activity = Activity("purchase", T0 + n * 60.0, item_id=item, amount=5.0, quantity=1)
            local.process(user, activity, worker=int(user[-1]) % workers)
        local.sync()
        models[workers] = local
    for workers, local in models.items():
        hits = 0
        for user in {user for user, _ in stream}:
            n = int(user[-1]) % workers
            state = local.states[n][user]
            recommender = local.scorers[n].recommender
            recommender.popularity_weight = recommender.co_purchase_weight = 0.0
            top = recommender.rank(np.frombuffer(state.latent, "<f4"), 5)
            hits += sum(item[0] == user[0] for item in top)
        assert hits / (40 * 5) >= 0.9, (workers, hits)


# --- segment ids: created in the group's model, the same on every worker -------------------------


def test_workers_propose_centres_and_only_the_group_creates_them() -> None:
    group = LocalGroup(ScorerConfig(segments=3), workers=2, sync_seconds=3_600.0)
    for n in range(40):
        spend = 10.0 if n % 2 else 4_000.0
        activity = Activity("purchase", T0 + n * 900.0, item_id="sku-1", amount=spend, quantity=1)
        group.process(f"c{n}", activity, worker=n % 2)
        if n == 1:  # before any sync: no worker has a centre of its own
            assert all(len(s.segmenter.centers()) == 0 for s in group.scorers)
    group.sync()
    centres = [s.segmenter.centers() for s in group.scorers]
    assert 1 <= len(centres[0]) <= 3
    assert centres[0] == centres[1]
    names = [s.segmenter.describe_all() for s in group.scorers]
    assert names[0] == names[1]


def test_a_delta_merged_twice_counts_once() -> None:
    scorer = CustomerScorer(CONFIG)
    sync = WorkerSync(scorer, "w1")
    scorer.value_model.observe(None, None, 50.0, 2)
    (delta,) = sync.deltas()
    group = GroupModel(CONFIG)
    assert group.merge(delta) is True
    assert group.merge(delta) is False  # delivered twice before a version
    version, parts = group.publish()
    assert int(parts[0].share.monetary.sum()) == 1
    assert group.merge(delta) is False  # delivered again after the version holding it
    # A new merger, rebuilt from the published parts (a failover), merges it once only too.
    successor = GroupModel(CONFIG, {p.key: p for p in parts}, version=version)
    assert successor.merge(delta) is False
    assert not successor.dirty


def test_pending_learning_stays_in_the_workers_own_scores_until_merged() -> None:
    scorer = CustomerScorer(CONFIG)
    sync = WorkerSync(scorer, "w1")
    other = WorkerSync(CustomerScorer(CONFIG), "w2")
    scorer.value_model.observe(None, None, 5_000.0, 30)
    sync.deltas()  # sent, not merged yet
    other.scorer.value_model.observe(None, None, 10.0, 1)
    group = GroupModel(CONFIG)
    for delta in other.deltas():
        group.merge(delta)
    version, parts = group.publish()
    sync.apply(version, {p.key: p for p in parts})
    # The group knows the other worker's customer; this worker still counts its own.
    assert scorer.value_model.customers == 2
    assert sync.pending == 1
    # Once a version holds this worker's delta, it is no longer pending nor counted twice.
    for delta in sync._pending["value"]:
        group.merge(delta)
    version, parts = group.publish()
    sync.apply(version, {p.key: p for p in parts})
    assert sync.pending == 0
    assert scorer.value_model.customers == 2


@pytest.mark.slow
def test_a_worker_starting_from_the_group_model_scores_a_newcomer_as_the_others_do() -> None:
    group = LocalGroup(CONFIG, workers=2, sync_seconds=1_800.0)
    rng = random.Random(9)
    for n in range(2_000):
        customer = f"c{rng.randrange(120)}"
        activity = Activity(
            "purchase", T0 + n * 3_000.0, item_id=f"sku-{rng.randrange(20)}",
            amount=rng.uniform(5, 300), quantity=1,
        )  # fmt: skip
        group.process(customer, activity, worker=spread(customer, 2))
    group.sync()
    fresh = CustomerScorer(CONFIG)
    WorkerSync(fresh, "new").apply(group.version, group.merger.parts)
    when = T0 + 2_000 * 3_000.0
    newcomer = Activity("purchase", when, item_id="sku-3", amount=42.0, quantity=1)
    scores = [s.score("newcomer", None, newcomer).score for s in (*group.scorers, fresh)]
    for score in scores[1:]:
        assert score.churn_risk == pytest.approx(scores[0].churn_risk, abs=1e-9)
        assert score.value == pytest.approx(scores[0].value, abs=1e-9)
        assert (score.segment, score.segment_name) == (scores[0].segment, scores[0].segment_name)
        assert score.model_version == scores[0].model_version == f"{__version__}+v{group.version}"


@pytest.mark.slow
def test_local_group_workers_share_one_label_count() -> None:
    four = LocalGroup(CONFIG, workers=4, sync_seconds=DAY)
    rng = random.Random(10)
    for n in range(3_000):
        customer = f"c{rng.randrange(200)}"
        activity = Activity("view", T0 + n * 7_200.0, item_id="sku-1")
        four.process(customer, activity, worker=spread(customer, 4), shard=spread(customer, 4))
    four.sync()
    learned = {s.churn_model.labels_learned for s in four.scorers}
    assert len(learned) == 1
    assert learned.pop() > 0


def test_points_after_a_version_weigh_against_the_groups_time() -> None:
    """A worker's own points and the group's sums decay to one event time (no drift when a
    version moved the group's time ahead of this worker's)."""
    centre = np.array([[1.0, 0, 0, 0, 0]])
    segmenter = Segmenter(n_segments=1, halflife_days=30.0)
    segmenter.shared = True
    segmenter.apply(SegmentShare(centre, np.array([1.0]), time=T0))
    segmenter.learn_one({"ordered": 1.0}, T0)  # this worker's point, not sent yet
    segmenter.apply(SegmentShare(centre, np.array([1.0]), time=T0 + 30 * DAY))  # newer group
    segmenter.learn_one({"ordered": 1.0}, T0 + 30 * DAY)
    delta = segmenter.delta()
    # The old point weighs half, the new one 1: as one segmenter seeing both would weigh them.
    assert delta.weights.tolist() == pytest.approx([1.5])


def test_co_purchases_naming_an_item_a_worker_meets_later_are_linked_when_it_does() -> None:
    from online_models.recommend.items import ItemShare, item_hash

    recommender = Recommender(n_factors=2, buckets=1)
    recommender.shared = True
    tea = ItemShare(("tea",), np.zeros((1, 2)), np.zeros(1), np.array([0, 1]),
                    np.array([item_hash("cup")]), np.array([4.0]))  # fmt: skip
    recommender.apply({0: (tea, [], None)})  # "cup" is in a bucket not applied yet
    assert recommender.rank(None, 5, recent=["tea"], exclude={"tea"}) == []
    cup = ItemShare(("cup",), np.zeros((1, 2)), np.zeros(1), np.array([0, 0]),
                    np.zeros(0, np.int64), np.zeros(0))  # fmt: skip
    recommender.apply({0: (cup, [], None)})
    recommender.popularity_weight = recommender.cf_weight = 0.0
    assert recommender.rank(None, 5, recent=["tea"], exclude={"tea"}) == ["cup"]


@pytest.mark.slow
def test_versions_applied_item_by_item_equal_the_whole_group_model() -> None:
    """Workers apply only the items a version changed; a worker loading every part at once
    (a new one) ends with the same items: factors, popularity and co-purchase counts."""
    local = LocalGroup(CONFIG, workers=3, sync_seconds=900.0)
    rng = random.Random(12)
    for n in range(3_000):
        customer = f"c{rng.randrange(150)}"
        activity = Activity(
            "purchase", T0 + n * 300.0, item_id=f"sku-{rng.randrange(60)}",
            amount=rng.uniform(5, 50), quantity=1,
        )  # fmt: skip
        local.process(customer, activity, worker=spread(customer, 3))
    local.sync()
    local.sync()  # nothing left unsent anywhere: every worker holds exactly the group model
    fresh = CustomerScorer(CONFIG)
    WorkerSync(fresh, "new").apply(local.version, local.merger.parts)
    for scorer in local.scorers:
        incremental, whole = scorer.recommender, fresh.recommender
        assert set(incremental._index) == set(whole._index)
        for item, row in whole._index.items():
            mine = incremental._index[item]
            np.testing.assert_allclose(incremental._factors[mine], whole._factors[row], atol=1e-6)
            assert incremental._popularity[mine] == pytest.approx(whole._popularity[row])
            ours, theirs = (model._neighbor_arrays_of(item) for model in (incremental, whole))
            if theirs is None:
                assert ours is None
                continue
            assert ours is not None
            named = [
                dict(zip((m._items[r] for r in rows.tolist()), weights.tolist(), strict=True))
                for m, (rows, weights) in ((incremental, ours), (whole, theirs))
            ]
            assert named[0] == pytest.approx(named[1])


# --- a group of one ----------------------------------------------------------------------------


def test_a_lone_worker_syncs_only_the_parts_its_group_model_changes() -> None:
    """Alone, a worker's churn, value and item parts would come back as its own model: it
    sends only its segments, lifetime and EASE deltas (those the group's model fits), unless
    told to sync every part."""
    groups = {
        every: LocalGroup(CONFIG, workers=1, sync_seconds=600.0, sync_all_parts=every)
        for every in (False, True)
    }
    for local in groups.values():
        for n in range(200):
            item = f"sku-{n % 7}"
            activity = Activity("purchase", T0 + n * 3_600.0, item_id=item, amount=5.0, quantity=1)
            local.process(f"c{n % 20}", activity)
        local.sync()

    alone, every_part = groups[False], groups[True]
    assert alone.version == every_part.version > 1
    assert set(alone.merger.parts) == {"segments", "lifetime", "ease"}
    assert {"value", "segments", "lifetime"} < set(every_part.merger.parts)
    assert any(key.startswith("items/") for key in every_part.merger.parts)
    assert alone.scorers[0].segmenter.centers() == every_part.scorers[0].segmenter.centers()
