"""The group model's wire format: what any writer to the model topics can and cannot do.

Whoever can write to the models or model-updates topic can make a worker refuse a record,
never run code in it nor make it trust numbers of another shape: every record is numbers
with JSON metadata in a versioned envelope, signed when ``CRM_CHECKPOINT_KEY`` is set.
"""

from __future__ import annotations

import pickle
import random
import struct
import zlib
from dataclasses import fields, is_dataclass

import numpy as np
import orjson
import pytest

from online_models.customer.activity import Activity
from online_models.group.local import LocalGroup
from online_models.scoring.scorer import ScorerConfig
from schemas.model_records import (
    MAX_RECORD_BYTES,
    ManifestHeader,
    ModelRecord,
    ModelRecordRefused,
    PartRef,
    decode_record,
    encode_record,
)
from streams.model_codec import (
    decode_delta,
    decode_manifest,
    decode_part,
    encode_delta,
    encode_manifest,
    encode_part,
    model_shapes,
)

CONFIG = ScorerConfig(recommender_factors=4, item_buckets=8, segments=4)
KEY = b"group-model-key"
T0 = 1_735_689_600.0


@pytest.fixture(scope="module")
def group() -> LocalGroup:
    """Two workers that learned every kind of part."""
    local = LocalGroup(CONFIG, workers=2, sync_seconds=3_600.0)
    rng = random.Random(1)
    for n in range(1_500):
        customer = f"c{rng.randrange(80)}"
        kind = rng.choice(["purchase", "purchase", "view"])
        activity = Activity(
            kind, T0 + n * 1_200.0, item_id=f"sku-{rng.randrange(30)}",
            amount=rng.uniform(5, 200) if kind == "purchase" else 0.0,
            quantity=1 if kind == "purchase" else 0,
        )  # fmt: skip
        local.process(customer, activity, worker=zlib.crc32(customer.encode()) % 2)
    local.sync()
    return local


def manifest(version: int = 3, shapes: dict[str, int] | None = None) -> ManifestHeader:
    return ManifestHeader(
        version=version,
        parts={"churn": PartRef(version=2, offset=10)},
        shapes=shapes or model_shapes(CONFIG),
        merger="w-1",
        published_at=T0,
    )


def same_share(a: object, b: object) -> None:
    """Every field equal (item factors and counts travel in single precision)."""
    assert type(a) is type(b)
    for field in fields(a):  # type: ignore[arg-type]
        mine, theirs = getattr(a, field.name), getattr(b, field.name)
        if isinstance(mine, np.ndarray):
            np.testing.assert_allclose(theirs, mine, rtol=1e-6, atol=1e-7)
        elif is_dataclass(mine):  # a part of the share, such as a segment's spread
            same_share(mine, theirs)
        else:
            assert theirs == mine, field.name


def test_every_part_and_delta_survives_its_bytes(group: LocalGroup) -> None:
    kinds = set()
    for part in group.merger.parts.values():
        back = decode_part(encode_part(part, key=KEY), CONFIG, key=KEY)
        assert (back.key, back.version, dict(back.merged), back.since) == (
            part.key,
            part.version,
            dict(part.merged),
            part.since,
        )
        if part.changed is not None:
            assert back.changed is not None and back.changed.tolist() == part.changed.tolist()
        same_share(part.share, back.share)
        kinds.add(type(back.share).__name__)
    assert kinds == {
        "ChurnShare", "SegmentShare", "ValueShare", "LifetimeShare", "ItemShare", "EaseShare"
    }  # fmt: skip
    group.process("late", Activity("purchase", T0 + 9e6, item_id="sku-1", amount=3.0,
                                   quantity=1), worker=0)  # fmt: skip
    deltas = group.syncs[0].deltas()
    assert {type(d.share).__name__ for d in deltas} >= {
        "SegmentShare", "ValueShare", "ItemShare", "EaseCounts"
    }  # fmt: skip
    for delta in deltas:
        back = decode_delta(encode_delta(delta, key=None, sent_at=T0), CONFIG, key=None)
        assert (back.key, back.worker, back.seq) == (delta.key, delta.worker, delta.seq)
        same_share(delta.share, back.share)
    assert decode_manifest(encode_manifest(manifest(), key=KEY), CONFIG, key=KEY) == manifest()


def test_item_factors_travel_in_single_precision(group: LocalGroup) -> None:
    part = next(p for key, p in group.merger.parts.items() if key.startswith("items/"))
    back = decode_part(encode_part(part, key=None), CONFIG, key=None)
    np.testing.assert_allclose(back.share.factors, part.share.factors, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(back.share.popularity, part.share.popularity)


def refusal(raw: bytes, *, key: bytes | None = KEY, kind: str = "part") -> ModelRecordRefused:
    decode = {"part": decode_part, "delta": decode_delta, "manifest": decode_manifest}[kind]
    with pytest.raises(ModelRecordRefused) as caught:
        decode(raw, CONFIG, key=key)
    return caught.value


def test_garbage_a_pickle_and_an_empty_record_are_not_model_records() -> None:
    assert refusal(b"\x00\x01garbage" * 10).reason == "not_a_model_record"
    assert refusal(pickle.dumps({"weights": [1.0]})).reason == "not_a_model_record"
    assert refusal(b"").reason == "not_a_model_record"


def test_another_format_version_is_refused(group: LocalGroup) -> None:
    raw = bytearray(encode_part(group.merger.parts["churn"], key=KEY))
    raw[4] = 2
    refused = refusal(bytes(raw))
    assert refused.reason == "format" and "format 2" in refused.message


def test_with_a_key_set_unsigned_and_foreign_records_are_refused(group: LocalGroup) -> None:
    part = group.merger.parts["value"]
    assert refusal(encode_part(part, key=None)).reason == "unsigned"
    assert refusal(encode_part(part, key=b"someone-else")).reason == "bad_signature"
    tampered = bytearray(encode_part(part, key=KEY))
    tampered[-1] ^= 0xFF
    assert refusal(bytes(tampered)).reason == "bad_signature"


def test_a_record_lying_about_its_arrays_is_malformed() -> None:
    record = ModelRecord("part", {"header": {}}, {"x": np.zeros(4)})
    raw = encode_record(record)
    assert refusal(raw[:-8], key=None).reason == "malformed"  # truncated
    assert refusal(raw + b"\x00" * 8, key=None).reason == "malformed"  # trailing bytes
    header = orjson.dumps(
        {"kind": "part", "meta": {}, "arrays": [{"name": "x", "dtype": "|O", "shape": [1]}]}
    )
    objects = b"CRMM" + bytes([1, 0]) + bytes(32) + struct.pack("<I", len(header)) + header
    assert refusal(objects + pickle.dumps(object()), key=None).reason == "malformed"


def test_an_oversized_record_is_refused_before_it_is_read() -> None:
    assert refusal(b"CRMM" + bytes(MAX_RECORD_BYTES)).reason == "oversized"


def test_records_of_other_model_shapes_are_refused(group: LocalGroup) -> None:
    other = ScorerConfig(recommender_factors=8, item_buckets=8, segments=4)
    bucket = next(p for key, p in group.merger.parts.items() if key.startswith("items/"))
    raw = encode_part(bucket, key=KEY)
    with pytest.raises(ModelRecordRefused) as caught:
        decode_part(raw, other, key=KEY)
    assert caught.value.reason == "shape"
    with pytest.raises(ModelRecordRefused) as caught:
        decode_part(raw, ScorerConfig(recommender_factors=4, item_buckets=2), key=KEY)
    assert caught.value.reason == "shape" or caught.value.reason == "malformed"
    wrong = manifest(shapes={**model_shapes(CONFIG), "segments": 9})
    refused = refusal(encode_manifest(wrong, key=KEY), kind="manifest")
    assert refused.reason == "shape" and "CRM_SEGMENTS" in refused.message


@pytest.mark.parametrize(
    "names",
    [5, None, "abc", [1, 2, 3, 4], ["a", "b", "c"], ["x", "x", "y", "z"]],
)
def test_segment_names_that_do_not_name_each_row_once_are_refused(
    group: LocalGroup, names: object
) -> None:
    """A segments part names each of its rows once ('' for a dissolved group's): too few
    names, a repeated name or anything but strings is refused, never served."""
    record = decode_record(encode_part(group.merger.parts["segments"], key=None))
    assert len(record.meta["share"]["names"]) == 4
    forged = ModelRecord(
        "part", {**record.meta, "share": {**record.meta["share"], "names": names}}, record.arrays
    )
    assert refusal(encode_record(forged), key=None).reason == "shape"
    blank = {**record.meta["share"], "names": ["", "", "a", "b"]}  # dissolved rows: no name
    decode_part(encode_record(ModelRecord("part", {**record.meta, "share": blank}, record.arrays)),
                CONFIG, key=None)  # fmt: skip


def test_a_header_naming_an_unknown_part_or_a_bad_worker_is_malformed(group: LocalGroup) -> None:
    part = group.merger.parts["churn"]
    raw = encode_part(part, key=None)
    record = decode_record(raw)
    for header in (
        {**record.meta["header"], "key": "../../etc/passwd"},
        {**record.meta["header"], "version": 0},
        {**record.meta["header"], "surprise": True},
        {**record.meta["header"], "merged": {"a worker; DROP TABLE": 1}},
        {**record.meta["header"], "merged": {"w1": -5}},
    ):
        forged = ModelRecord("part", {**record.meta, "header": header}, record.arrays)
        assert refusal(encode_record(forged), key=None).reason == "malformed"


def test_header_values_of_the_wrong_json_type_are_malformed_not_a_crash() -> None:
    for header in (
        {"kind": ["part"], "meta": {}, "arrays": []},
        {"kind": "part", "meta": {}, "arrays": [{"name": "x", "dtype": ["<f8"], "shape": [1]}]},
        {"kind": "part", "meta": {}, "arrays": [{"name": "x", "dtype": "<f8", "shape": [-1]}]},
    ):
        encoded = orjson.dumps(header)
        raw = b"CRMM" + bytes([1, 0]) + bytes(32) + struct.pack("<I", len(encoded)) + encoded
        assert refusal(raw, key=None).reason == "malformed"


def test_an_item_share_of_no_items_with_counts_does_not_fit() -> None:
    from online_models.recommend.items import ItemShare

    empty = ItemShare((), np.zeros((0, 4)), np.zeros(0), np.array([0]), np.array([7]),
                      np.array([1.0]))  # fmt: skip
    from online_models.group.parts import GroupPart

    raw = encode_part(GroupPart("items/0001", empty, 2), key=None)
    assert refusal(raw, key=None).reason == "shape"


def test_group_generations_travel_and_a_record_without_them_reads_as_generation_0() -> None:
    from online_models.group.parts import SEGMENTS, GroupPart
    from online_models.segments.centres import SegmentShare

    share = SegmentShare(np.eye(4, 5) * 10.0, np.full(4, 10.0), time=T0, points=40)
    share.add_group(np.array([1.0, 0.0, 0.8, 1.2, 0.0, 1.2, 1.1]))
    share.add_group(np.array([1.0, 0.3, 0.1, 1.0, 0.0, 1.3, 1.2]))
    share.dissolve_group(0)
    share.add_group(np.array([0.0, 0.5, 0.0, 0.0, 0.9, 0.0, 0.0]))
    assert share.generations.tolist() == [1, 0]
    part = GroupPart(SEGMENTS, share, 3, {"w-1": 2})

    back = decode_part(encode_part(part, key=KEY), CONFIG, key=KEY).share

    assert isinstance(back, SegmentShare) and back.generations.tolist() == [1, 0]
    meta, arrays = share.to_arrays()
    del arrays["group_generations"]  # as 0.3.0 writes a share with group rows
    older = SegmentShare.from_arrays(meta, arrays, max_centres=4)
    assert older.groups == 2 and older.generations.tolist() == [0, 0]
    np.testing.assert_allclose(older.group_means(), share.group_means())
    for bad in (np.array([0.7, 0.0]), np.array([np.nan, 0.0]), np.array([-1, 0]), np.array([0])):
        with pytest.raises(ValueError, match="group_generations"):
            SegmentShare.from_arrays(meta, {**arrays, "group_generations": bad}, max_centres=4)
