"""The group model on the wire: deltas, model parts and manifests, as signed, versioned bytes.

Workers send what they learned (a *delta*) to the model-updates topic; the merging worker
publishes the group's model as *parts* (one per model, item factors in buckets) and a
*manifest* naming each part's version, on the compacted models topic. Every record is the
same envelope, and never a pickle: whoever can write to those topics can make a worker
refuse a record, never run code in it.

Layout (all integers little-endian)::

    b"CRMM" | format (u8) | flags (u8, bit 0: signed) | HMAC-SHA256 (32 bytes, zero when
    unsigned) | header length (u32) | header (JSON object) | array bytes

The HMAC (keyed with ``CRM_CHECKPOINT_KEY``) covers everything after itself. The header
holds ``kind``, free ``meta`` (JSON) and ``arrays``: ``[{"name", "dtype", "shape"}]`` in the
order of their bytes, C order. Only numeric dtypes of :data:`ARRAY_DTYPES` are read, and the
shapes must account for every array byte, exactly.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import struct
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from schemas.errors import CrmScorerError

__all__ = [
    "ARRAY_DTYPES",
    "MAX_RECORD_BYTES",
    "MODEL_FORMAT",
    "MODEL_RECORD_BYTES",
    "RECORD_KINDS",
    "REFUSAL_REASONS",
    "DeltaHeader",
    "ManifestHeader",
    "ModelRecord",
    "ModelRecordRefused",
    "PartHeader",
    "PartRef",
    "decode_record",
    "encode_record",
    "read_header",
]

logger = logging.getLogger(__name__)

#: The envelope's format version; records of any other are refused.
MODEL_FORMAT = 1
MAGIC = b"CRMM"
#: ``delta``: what one worker learned since its last delta, for one part; ``part``: one part
#: of the group's model at a version; ``manifest``: a version, naming every part's version.
RECORD_KINDS = frozenset({"delta", "part", "manifest"})
#: The array types a record may carry (little-endian numbers only: no objects, no pickles).
ARRAY_DTYPES = frozenset({"<f4", "<f8", "<i4", "<i8", "<u8"})
#: The largest record of the model topics (a delta or a part): what the topics accept and the
#: producer sends. A bigger part means too few CRM_MODEL_ITEM_BUCKETS for the catalogue.
MODEL_RECORD_BYTES = 8 * 1024 * 1024
#: The largest record read; a bigger one is refused before it is parsed.
MAX_RECORD_BYTES = 64 * 1024 * 1024
#: The largest JSON header read (an items part lists its item ids there).
MAX_HEADER_BYTES = 4 * 1024 * 1024
#: Why a record is refused (the label of ``crm_scorer_model_records_refused_total``).
REFUSAL_REASONS = (
    "not_a_model_record",
    "format",
    "unsigned",
    "bad_signature",
    "malformed",
    "oversized",
    "shape",
    "missing_part",
)
#: A part of the group model: ``churn``, ``segments`` (k-means) or ``density``, ``value``,
#: ``lifetime``, ``spend``, ``ease`` or ``items/NNNN``.
PART_KEY = r"^(churn|segments|density|value|lifetime|spend|ease|items/[0-9]{4})$"
WORKER_ID = r"^[A-Za-z0-9._-]{1,64}$"
_Worker = Annotated[str, StringConstraints(pattern=WORKER_ID)]
_PartKey = Annotated[str, StringConstraints(pattern=PART_KEY)]
_Seq = Annotated[int, Field(ge=1)]
_PREFIX = struct.Struct("<4sBB32sI")
_SIGNED = 1
_MAX_DIMENSIONS = 4


class ModelRecordRefused(CrmScorerError):
    """A model record that is not trusted or does not fit; ``reason`` is one of
    :data:`REFUSAL_REASONS` and the message says what is wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """One record: its kind, JSON metadata and named numeric arrays.

    >>> record = ModelRecord("delta", {"worker": "w1", "seq": 3}, {"x": np.arange(3.0)})
    >>> back = decode_record(encode_record(record, key=b"k"), key=b"k")
    >>> back.kind, back.meta["seq"], back.arrays["x"].tolist()
    ('delta', 3, [0.0, 1.0, 2.0])
    """

    kind: str
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def encode_record(record: ModelRecord, *, key: bytes | None = None) -> bytes:
    """The record's bytes, signed with ``key`` when one is given."""
    if record.kind not in RECORD_KINDS:
        msg = f"unknown model record kind {record.kind!r}"
        raise ValueError(msg)
    described = []
    buffers = []
    for name, array in record.arrays.items():
        contiguous = np.ascontiguousarray(array)
        dtype = contiguous.dtype.newbyteorder("<").str
        if dtype not in ARRAY_DTYPES:
            msg = f"array {name!r} has dtype {contiguous.dtype}, not one of {sorted(ARRAY_DTYPES)}"
            raise ValueError(msg)
        described.append({"name": name, "dtype": dtype, "shape": list(contiguous.shape)})
        buffers.append(contiguous.astype(dtype, copy=False).tobytes())
    header = orjson.dumps(
        {"kind": record.kind, "meta": record.meta, "arrays": described},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    body = struct.pack("<I", len(header)) + header + b"".join(buffers)
    if key is None:
        return MAGIC + bytes([MODEL_FORMAT, 0]) + bytes(32) + body
    signature = hmac.new(key, body, hashlib.sha256).digest()
    return MAGIC + bytes([MODEL_FORMAT, _SIGNED]) + signature + body


def decode_record(raw: bytes, *, key: bytes | None = None) -> ModelRecord:
    """Read and check a record; raises :class:`ModelRecordRefused` naming why it is refused.

    With ``key``, only records signed with it are read: an unsigned one, or one signed with
    another key, is refused before its header is parsed.
    """
    if len(raw) > MAX_RECORD_BYTES:
        msg = f"model record of {len(raw)} bytes is over the {MAX_RECORD_BYTES} read"
        raise ModelRecordRefused("oversized", msg)
    if len(raw) < _PREFIX.size or raw[:4] != MAGIC:
        raise ModelRecordRefused("not_a_model_record", "not a crm-scorer model record")
    _, version, flags, signature, header_size = _PREFIX.unpack_from(raw)
    if version != MODEL_FORMAT:
        msg = f"model record of format {version}; this crm-scorer reads format {MODEL_FORMAT}"
        raise ModelRecordRefused("format", msg)
    if key is not None:
        if not flags & _SIGNED:
            msg = "unsigned model record while CRM_CHECKPOINT_KEY is set"
            raise ModelRecordRefused("unsigned", msg)
        expected = hmac.new(key, raw[_PREFIX.size - 4 :], hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected):
            msg = "model record not signed with CRM_CHECKPOINT_KEY"
            raise ModelRecordRefused("bad_signature", msg)
    header_end = _PREFIX.size + header_size
    if header_size > MAX_HEADER_BYTES:
        msg = f"model record header of {header_size} bytes is over the {MAX_HEADER_BYTES} read"
        raise ModelRecordRefused("oversized", msg)
    if header_end > len(raw):
        raise ModelRecordRefused("malformed", "model record header runs past its end")
    try:
        header = orjson.loads(raw[_PREFIX.size : header_end])
    except orjson.JSONDecodeError as exc:
        msg = f"model record header is not JSON: {exc}"
        raise ModelRecordRefused("malformed", msg) from None
    kind, meta, arrays = _checked_header(header)
    return ModelRecord(kind, meta, _arrays(raw, header_end, arrays))


def _checked_header(header: Any) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    if not isinstance(header, dict):
        raise ModelRecordRefused("malformed", "model record header is not an object")
    kind, meta, arrays = header.get("kind"), header.get("meta"), header.get("arrays")
    if not isinstance(kind, str) or kind not in RECORD_KINDS:
        raise ModelRecordRefused("malformed", f"model record of unknown kind {kind!r}")
    if not isinstance(meta, dict) or not isinstance(arrays, list):
        raise ModelRecordRefused("malformed", "model record header lacks meta or arrays")
    for described in arrays:
        if not (
            isinstance(described, dict)
            and isinstance(described.get("name"), str)
            and isinstance(described.get("dtype"), str)
            and described["dtype"] in ARRAY_DTYPES
            and isinstance(described.get("shape"), list)
            and len(described["shape"]) <= _MAX_DIMENSIONS
            and all(isinstance(n, int) and 0 <= n < 2**40 for n in described["shape"])
        ):
            msg = f"model record describes an array it may not carry: {str(described)[:200]}"
            raise ModelRecordRefused("malformed", msg)
    return kind, meta, arrays


def _arrays(raw: bytes, start: int, described: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    position = start
    for spec in described:
        dtype = np.dtype(spec["dtype"])
        size = math.prod(spec["shape"]) * dtype.itemsize
        if position + size > len(raw):
            msg = f"array {spec['name']!r} runs past the record's end"
            raise ModelRecordRefused("malformed", msg)
        flat = np.frombuffer(raw, dtype=dtype, count=size // dtype.itemsize, offset=position)
        arrays[spec["name"]] = flat.reshape(spec["shape"]).astype(dtype.newbyteorder("="))
        position += size
    if position != len(raw):
        msg = f"model record has {len(raw) - position} bytes no array accounts for"
        raise ModelRecordRefused("malformed", msg)
    return arrays


class _Header(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeltaHeader(_Header):
    """A delta's ``meta["header"]``: part ``key`` learned by ``worker`` since its delta
    ``seq - 1`` (a worker's deltas are numbered from 1, per process)."""

    key: str = Field(pattern=PART_KEY)
    worker: str = Field(pattern=WORKER_ID)
    seq: int = Field(ge=1)
    sent_at: float


class PartHeader(_Header):
    """A part's ``meta["header"]``: the version that last changed part ``key``, the latest
    delta ``seq`` of each worker it includes, and the version of the part before (``since``,
    0 for a new part; an items part lists the positions changed since in its ``changed``
    array)."""

    key: str = Field(pattern=PART_KEY)
    version: int = Field(ge=1)
    merged: dict[_Worker, _Seq]
    since: int = Field(0, ge=0)


class PartRef(_Header):
    """Where a manifest's part is: its version and its offset on the models topic."""

    version: int = Field(ge=1)
    offset: int = Field(ge=0)


class ManifestHeader(_Header):
    """A version of the group model: every part's version and offset, the model shapes it was
    made for (``segments``, ``factors``, ``item_buckets``, ``churn_features``), who merged it
    and when (wall clock)."""

    version: int = Field(ge=1)
    parts: dict[_PartKey, PartRef]
    shapes: dict[str, int]
    merger: str = Field(pattern=WORKER_ID)
    published_at: float


_HEADERS: dict[str, type[_Header]] = {
    "delta": DeltaHeader,
    "part": PartHeader,
    "manifest": ManifestHeader,
}


def read_header(record: ModelRecord) -> Any:
    """The record's header (:class:`DeltaHeader`, :class:`PartHeader` or
    :class:`ManifestHeader`, by its kind); :class:`ModelRecordRefused` when it is not one.

    >>> header = DeltaHeader(key="churn", worker="w1", seq=1, sent_at=0.0)
    >>> record = ModelRecord("delta", {"header": header.model_dump(), "share": {}})
    >>> read_header(decode_record(encode_record(record))) == header
    True
    """
    try:
        return _HEADERS[record.kind].model_validate(record.meta.get("header"))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "header"
        msg = f"{record.kind} record header: {where}: {first['msg']}"
        raise ModelRecordRefused("malformed", msg) from None
