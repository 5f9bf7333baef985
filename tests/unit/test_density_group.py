"""Density segments in a consumer group: micro-clusters merge, the group's model alone gives
region ids, and every worker then places a customer in the same region; the density part
travels as a checked model record.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import replace

import numpy as np
import pytest

from online_models.customer.activity import DAY, Activity
from online_models.group.local import LocalGroup
from online_models.group.parts import DENSITY
from online_models.group.worker import WorkerSync
from online_models.scoring.scorer import CustomerScorer, ScorerConfig
from online_models.segments.density import UNUSUAL, DensitySegmenter
from online_models.segments.density_share import DensityShare, merge_density
from schemas.model_records import ManifestHeader, ModelRecordRefused
from streams.model_codec import (
    decode_delta,
    decode_manifest,
    decode_part,
    encode_delta,
    encode_manifest,
    encode_part,
    model_shapes,
)
from tests.unit.crowds import T0, crowd

CONFIG = ScorerConfig(segment_model="density", recommender_factors=4, item_buckets=4)
#: A customer of each kind the shop has.
PROBES = ("heavy-0", "light-1", "browser-2")


def shop(seed: int, customers: int = 240, days: float = 40.0) -> list[tuple[str, Activity]]:
    """Heavy buyers, light buyers and browsers, in event-time order."""
    rng = random.Random(seed)
    kinds = {  # days between events, amount (0: a view)
        "heavy": ((1.0, 3.0), (150.0, 400.0)),
        "light": ((8.0, 16.0), (10.0, 30.0)),
        "browser": ((1.0, 4.0), (0.0, 0.0)),
    }
    events = []
    for n in range(customers):
        kind = list(kinds)[n % len(kinds)]
        (low, high), (least, most) = kinds[kind]
        day = rng.uniform(0.0, high)
        while day < days:
            when = T0 + day * DAY
            if most:
                amount = rng.uniform(least, most)
                activity = Activity("purchase", when, item_id="sku-1", amount=amount, quantity=1)
            else:
                activity = Activity("view", when, item_id=f"sku-{rng.randrange(9)}")
            events.append((f"{kind}-{n}", activity))
            day += rng.uniform(low, high)
    return sorted(events, key=lambda event: event[1].time)


def worker_of(customer: str) -> int:
    return zlib.crc32(customer.encode()) % 2


def probes(local: LocalGroup, now: float) -> list[dict[str, float]]:
    """The probe customers' segment features at event time ``now``."""
    return [
        local.states[worker_of(customer)][customer].profile.segment_features(now)
        for customer in PROBES
    ]


@pytest.fixture(scope="module")
def group() -> LocalGroup:
    local = LocalGroup(CONFIG, workers=2, sync_seconds=6 * 3600.0)
    for customer, activity in shop(seed=1):
        local.process(customer, activity, worker=worker_of(customer))
    local.sync()
    return local


def test_two_workers_agree_on_the_regions_and_their_ids(group: LocalGroup) -> None:
    a, b = (scorer.segmenter for scorer in group.scorers)
    assert isinstance(a, DensitySegmenter) and isinstance(b, DensitySegmenter)

    assert a.describe_all() and a.describe_all() == b.describe_all()
    assert a.centers() == b.centers()
    features = probes(group, T0 + 40 * DAY)
    assert [a.place_one(x) for x in features] == [b.place_one(x) for x in features]
    regions = [a.predict_one(x) for x in features]
    assert UNUSUAL not in regions and len(set(regions)) == len(PROBES)


def test_a_worker_starting_from_the_group_model_places_customers_as_the_others_do(
    group: LocalGroup,
) -> None:
    fresh = CustomerScorer(CONFIG)
    WorkerSync(fresh, "new").apply(group.version, group.merger.parts)
    unusual = {"ordered": 1.0, "frequency": 1.5, "monetary": 1.5}
    for x in (*probes(group, T0 + 40 * DAY), unusual):
        places = [scorer.segmenter.place_one(x) for scorer in (*group.scorers, fresh)]
        assert places[1:] == places[:-1]
    assert fresh.segmenter.place_one(unusual).segment == UNUSUAL


@pytest.mark.slow
def test_region_ids_stay_put_through_more_syncs() -> None:
    local = LocalGroup(CONFIG, workers=2, sync_seconds=6 * 3600.0)
    events = shop(seed=2, days=60.0)
    half = len(events) // 2
    for customer, activity in events[:half]:
        local.process(customer, activity, worker=worker_of(customer))
    segmenter = local.scorers[0].segmenter
    ids = [segmenter.predict_one(x) for x in probes(local, events[half][1].time)]
    assert UNUSUAL not in ids

    versions = local.version
    for customer, activity in events[half:]:
        local.process(customer, activity, worker=worker_of(customer))
        assert [segmenter.predict_one(x) for x in probes(local, activity.time)] == ids

    assert local.version - versions > 50


# --- merging and the wire ---------------------------------------------------------------------


def learned_share(seed: int, segmenter: DensitySegmenter | None = None) -> DensityShare:
    data = crowd(seed, ordinary=600, extremes=0)
    segmenter = segmenter or DensitySegmenter()
    segmenter.shared = True
    for x, time in zip(data.points, data.times, strict=True):
        segmenter.learn_one(x, time)
    return segmenter.delta()


def test_merging_two_workers_deltas_adds_their_weight_and_distances() -> None:
    a, b = learned_share(3), learned_share(4)

    merged = merge_density(a, b, halflife_days=1.0, clustering_threshold=0.2)

    assert merged.points == a.points + b.points
    assert merged.weights.sum() == pytest.approx(a.weights.sum() + b.weights.sum())
    # Shared density between two micro-clusters that joined one is inside it now.
    assert 0 < merged.shared.sum() <= a.shared.sum() + b.shared.sum()
    np.testing.assert_allclose(merged.distances, a.distances + b.distances)
    # Micro-clusters of the same dense spots joined: fewer than both workers' together.
    assert len(merged.weights) < len(a.weights) + len(b.weights)
    assert merged.problem(1024) is None


def settled_part(group: LocalGroup):
    part = group.merger.parts[DENSITY]
    assert isinstance(part.share, DensityShare) and len(part.share.registry.ids)
    return part


def test_the_density_part_and_a_delta_survive_their_bytes(group: LocalGroup) -> None:
    part = settled_part(group)

    back = decode_part(encode_part(part, key=b"k"), CONFIG, key=b"k")

    for name in ("centres", "weights", "pairs", "shared", "labels", "distances"):
        np.testing.assert_array_equal(getattr(back.share, name), getattr(part.share, name))
    for name in ("ids", "centres", "successors", "next_id"):
        assert np.array_equal(
            getattr(back.share.registry, name), getattr(part.share.registry, name)
        )
    delta = WorkerSync(CustomerScorer(CONFIG), "w9").deltas()
    assert delta == []  # nothing learned, nothing sent
    sync = group.syncs[0]
    sync.scorer.segmenter.learn_one(probes(group, T0 + 50 * DAY)[0], T0 + 50 * DAY)
    (density,) = [d for d in sync.deltas() if d.key == DENSITY]
    again = decode_delta(encode_delta(density, key=None, sent_at=T0), CONFIG, key=None)
    assert again.share.points == density.share.points == 1


@pytest.mark.parametrize(
    "forge",
    [
        lambda s: replace(s, labels=np.full(len(s.labels), 999)),  # a region it does not hold
        # a pair of micro-clusters it does not hold
        lambda s: replace(s, pairs=np.array([[0, len(s.weights)]]), shared=np.ones(1)),
        lambda s: replace(s, weights=np.where(np.arange(len(s.weights)) == 0, np.nan, s.weights)),
        lambda s: replace(s, centres=s.centres[:, :3]),  # features of another shape
        lambda s: replace(s, distances=-s.distances - 1.0),
    ],
)
def test_a_density_record_failing_its_checks_is_refused(group: LocalGroup, forge) -> None:
    part = settled_part(group)
    forged = replace(part, share=forge(part.share))

    with pytest.raises(ModelRecordRefused) as refused:
        decode_part(encode_part(forged, key=None), CONFIG, key=None)

    assert refused.value.reason == "shape"


def test_a_worker_of_the_other_segmentation_refuses_the_part(group: LocalGroup) -> None:
    raw = encode_part(settled_part(group), key=None)

    with pytest.raises(ModelRecordRefused) as refused:
        decode_part(raw, replace(CONFIG, segment_model="kmeans"), key=None)

    assert refused.value.reason == "shape" and "CRM_SEGMENT_MODEL" in refused.value.message


def test_a_version_of_the_other_segmentation_is_refused_naming_the_setting() -> None:
    header = ManifestHeader(
        version=3, parts={}, shapes=model_shapes(CONFIG), merger="w-1", published_at=T0
    )
    kmeans = replace(CONFIG, segment_model="kmeans")

    with pytest.raises(ModelRecordRefused) as refused:
        decode_manifest(encode_manifest(header, key=None), kmeans, key=None)

    assert refused.value.reason == "shape" and "CRM_SEGMENT_MODEL" in refused.value.message
    assert decode_manifest(encode_manifest(header, key=None), CONFIG, key=None) == header
