"""Catalogue items as the shop publishes them on CRM_ITEMS_TOPIC: the model and its decoding."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.errors import EventRejected
from schemas.events import Identifier, parse_event_json, validation_rejection

__all__ = ["MAX_ITEM_BYTES", "CatalogueItem", "decode_item", "item_key"]

logger = logging.getLogger(__name__)

#: Larger catalogue records are dead-lettered unread: an item's text needs far less.
MAX_ITEM_BYTES = 200_000

_Name = Annotated[str, Field(min_length=1, max_length=1_000)]
_Short = Annotated[str, Field(min_length=1, max_length=256)]


class CatalogueItem(BaseModel):
    """One product of the shop's catalogue: the value of a record on ``CRM_ITEMS_TOPIC``.

    The record's key is ``item_id`` (UTF-8); a record with no value (a tombstone) removes the
    item. ``category`` is a path from the broadest level down (``home/lighting``); every
    level is a feature of the content model. ``available`` false keeps the item known (its
    text still describes customers who bought it) but never recommended. ``properties`` are
    free attributes (``{"colour": "red"}``): strings, numbers and booleans become features,
    anything else is kept and ignored.

    >>> item = CatalogueItem.model_validate({"item_id": "sku-1", "name": "Red lamp",
    ...                                      "category": "home/lighting/", "price": 20})
    >>> item.category, item.available, item.price
    ('home/lighting', True, 20.0)
    """

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    item_id: Identifier = Field(description="The item's id as events name it; the record key.")
    name: _Name = Field(description="Product name.")
    category: _Name | None = Field(
        default=None, description="Category path, broadest first, '/'-separated."
    )
    brand: _Short | None = None
    price: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False, strict=False)] | None = None
    description: Annotated[str, Field(max_length=20_000)] | None = None
    available: bool = Field(default=True, description="False: known, never recommended.")
    properties: dict[str, Any] | None = Field(
        default=None, description="Free attributes; scalar values become content features."
    )

    @field_validator("category")
    @classmethod
    def _clean_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        levels = [level.strip() for level in value.split("/") if level.strip()]
        if not levels:
            msg = "must name at least one level"
            raise ValueError(msg)
        return "/".join(levels)

    def to_bytes(self) -> bytes:
        """The record's value, as ``crm-scorer items`` sends it."""
        return self.model_dump_json(exclude_none=True).encode("utf-8")


def item_key(item_id: str) -> bytes:
    """The record key of an item (compaction keeps the newest record per key)."""
    return item_id.encode("utf-8")


def decode_item(key: bytes | None, raw: bytes | None) -> CatalogueItem | None:
    """Decode one catalogue record: the item, or None for a tombstone (the item is removed).

    Raises :class:`EventRejected` (dead-letter it) naming the field, like an event's decoding;
    a key that is not the value's ``item_id`` is ``key_mismatch`` (compaction would keep the
    wrong record).

    >>> decode_item(b"sku-1", b'{"item_id": "sku-1", "name": "Lamp"}').name
    'Lamp'
    >>> decode_item(b"sku-1", None) is None
    True
    >>> decode_item(b"sku-1", b'{"item_id": "sku-1"}')
    Traceback (most recent call last):
    ...
    schemas.errors.EventRejected: name: Field required
    """
    if raw is None:
        if not key:
            raise EventRejected("missing_field", "a tombstone needs the item_id as its key")
        return None
    if len(raw) > MAX_ITEM_BYTES:
        msg = f"record of {len(raw)} bytes exceeds the {MAX_ITEM_BYTES} byte limit"
        raise EventRejected("oversized", msg)
    document = parse_event_json(raw)
    if not isinstance(document, dict):
        msg = f"item must be a JSON object, got {type(document).__name__}"
        raise EventRejected("not_an_object", msg)
    try:
        item = CatalogueItem.model_validate(document)
    except ValidationError as exc:
        raise validation_rejection(exc) from None
    if key is not None and key != item_key(item.item_id):
        shown = key[:64].decode("utf-8", "replace")
        msg = f"item_id: {item.item_id!r} does not match the record key {shown!r}"
        raise EventRejected("key_mismatch", msg, "item_id")
    return item
