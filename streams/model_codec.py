"""The group model's Kafka records: deltas, parts and manifests, encoded, and decoded only when
they fit this worker's model shapes.
"""

from __future__ import annotations

import logging
from typing import Any

from online_models.customer.profile import CHURN_FEATURES
from online_models.group.parts import Delta, GroupPart, share_from_arrays, share_to_arrays
from online_models.scoring.scorer import ScorerConfig
from schemas.model_records import (
    DeltaHeader,
    ManifestHeader,
    ModelRecord,
    ModelRecordRefused,
    PartHeader,
    decode_record,
    encode_record,
    read_header,
)

__all__ = [
    "MANIFEST_KEY",
    "decode_delta",
    "decode_manifest",
    "decode_part",
    "encode_delta",
    "encode_manifest",
    "encode_part",
    "model_shapes",
]

logger = logging.getLogger(__name__)


MANIFEST_KEY = b"manifest"


def model_shapes(config: ScorerConfig) -> dict[str, int]:
    """The sizes a model record must fit to be used by models made with ``config`` (and,
    with density segments, that they are: k-means groups' shapes are as they always were)."""
    shapes = {
        "segments": config.segments,
        "factors": config.recommender_factors,
        "item_buckets": config.item_buckets,
        "churn_features": len(CHURN_FEATURES),
        "lifetime_sample": config.lifetime_sample,
    }
    if config.segment_model == "density":
        shapes["density_segments"] = 1
    return shapes


# --- records ----------------------------------------------------------------------------------


def encode_delta(delta: Delta, *, key: bytes | None, sent_at: float) -> bytes:
    """A worker's delta as a signed model record."""
    header = DeltaHeader(key=delta.key, worker=delta.worker, seq=delta.seq, sent_at=sent_at)
    meta, arrays = share_to_arrays(delta.share)
    return encode_record(
        ModelRecord("delta", {"header": header.model_dump(), "share": meta}, arrays), key=key
    )


def decode_delta(raw: bytes | None, config: ScorerConfig, *, key: bytes | None) -> Delta:
    """A delta from its record; :class:`ModelRecordRefused` for anything not to be merged."""
    record = _decoded(raw, "delta", key)
    header: DeltaHeader = read_header(record)
    share = _share(header.key, record, config)
    return Delta(header.key, header.worker, header.seq, share)


def encode_part(part: GroupPart, *, key: bytes | None) -> bytes:
    """A part of the group's model as a signed model record."""
    header = PartHeader(
        key=part.key, version=part.version, merged=dict(part.merged), since=part.since
    )
    meta, arrays = share_to_arrays(part.share)
    if part.changed is not None:
        arrays = {**arrays, "changed": part.changed}
    return encode_record(
        ModelRecord("part", {"header": header.model_dump(), "share": meta}, arrays), key=key
    )


def decode_part(raw: bytes | None, config: ScorerConfig, *, key: bytes | None) -> GroupPart:
    """A part from its record; :class:`ModelRecordRefused` for anything not to be trusted."""
    record = _decoded(raw, "part", key)
    header: PartHeader = read_header(record)
    share = _share(header.key, record, config)
    changed = record.arrays.get("changed")
    if changed is not None:
        size = len(getattr(share, "items", ()))
        if (
            changed.ndim != 1
            or changed.dtype.kind != "i"
            or (changed >= size).any()
            or (changed < 0).any()
        ):
            msg = f"part record of {header.key} names changed items it does not hold"
            raise ModelRecordRefused("shape", msg)
    return GroupPart(header.key, share, header.version, header.merged, header.since, changed)


def encode_manifest(header: ManifestHeader, *, key: bytes | None) -> bytes:
    """A version's manifest as a signed model record."""
    return encode_record(ModelRecord("manifest", {"header": header.model_dump()}), key=key)


def decode_manifest(
    raw: bytes | None, config: ScorerConfig, *, key: bytes | None
) -> ManifestHeader:
    """A manifest from its record; refused when made for other model shapes."""
    header: ManifestHeader = read_header(_decoded(raw, "manifest", key))
    expected = model_shapes(config)
    if header.shapes != expected:
        msg = f"the group model's version {header.version} has shapes {header.shapes}, this "
        msg += f"worker's models {expected} (CRM_SEGMENT_MODEL, CRM_SEGMENTS, "
        msg += "CRM_RECOMMENDER_FACTORS, CRM_MODEL_ITEM_BUCKETS must be the same on every worker)"
        raise ModelRecordRefused("shape", msg)
    return header


def _decoded(raw: bytes | None, kind: str, key: bytes | None) -> ModelRecord:
    if raw is None:
        raise ModelRecordRefused("not_a_model_record", f"an empty {kind} record")
    record = decode_record(raw, key=key)
    if record.kind != kind:
        msg = f"a {record.kind} record where a {kind} was expected"
        raise ModelRecordRefused("malformed", msg)
    return record


def _share(key: str, record: ModelRecord, config: ScorerConfig) -> Any:
    meta = record.meta.get("share")
    if not isinstance(meta, dict):
        raise ModelRecordRefused("malformed", f"{record.kind} record of {key} has no share")
    try:
        return share_from_arrays(key, meta, record.arrays, config, delta=record.kind == "delta")
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelRecordRefused("shape", f"{record.kind} record of {key}: {exc}") from None
