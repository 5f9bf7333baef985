"""Audit records of erasure requests, published to the audit topic once carried out."""

from __future__ import annotations

from datetime import datetime

import orjson
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ErasureRecord"]


class ErasureRecord(BaseModel):
    """Proof that a customer's erasure request was carried out; the Kafka key is
    ``customer_id``. A request delivered twice is carried out, and recorded, twice.

    >>> from datetime import UTC, datetime
    >>> when = datetime(2025, 1, 1, tzinfo=UTC)
    >>> record = ErasureRecord(request_id="r1", customer_id="c1", requested_by="dpo",
    ...     requested_at=when, erased_at=when, worker="crm-scorer", partition=3, offset=42,
    ...     removed={"state": True, "redis_score": True})
    >>> ErasureRecord.model_validate_json(record.to_bytes()) == record
    True
    """

    model_config = ConfigDict(frozen=True)

    request_id: str = Field(description="The erasure request's event_id.")
    customer_id: str = Field(description="The id the scorer kept (pseudonymised when enabled).")
    requested_by: str = Field(description="Who asked, as the request said.")
    requested_at: datetime = Field(description="The request's timestamp.")
    erased_at: datetime = Field(description="When the worker finished erasing (UTC).")
    worker: str = Field(description="The consumer group (CRM_APP_ID) that carried it out.")
    partition: int = Field(description="Events-topic partition of the request.")
    offset: int = Field(description="Events-topic offset of the request.")
    removed: dict[str, bool | int] = Field(
        description="What there was to remove: state, pending_labels (count), "
        "rescore_schedule, recommender_user_factors, redis_score."
    )

    def to_bytes(self) -> bytes:
        """The JSON message value."""
        return orjson.dumps(self.model_dump(mode="json"))
