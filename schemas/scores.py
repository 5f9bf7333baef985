"""The score hash the CRM reads from Redis, and its field-by-field string encoding."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Score"]

logger = logging.getLogger(__name__)

Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class Score(BaseModel):
    """One customer's current scores, stored as a Redis hash at ``{prefix}{customer_id}``.

    Every value in the hash is a string: numbers in decimal, ``recommendations`` as a JSON
    array, times as ISO-8601 UTC. ``sentiment`` is absent until feedback or a ticket was seen.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2024, 1, 1, tzinfo=UTC)
    >>> score = Score(customer_id="c1", churn_risk=0.25, segment=2, segment_name="loyal",
    ...               value=0.8, monetary=120.5, orders=3, recommendations=["a", "b"],
    ...               sentiment=None, model_version="0.1.0+42", event_time=t, as_of=t,
    ...               updated_at=t)
    >>> Score.from_redis(score.to_redis()) == score
    True
    """

    model_config = ConfigDict(frozen=True)

    customer_id: str
    churn_risk: Unit = Field(description="Probability that the customer churns within the horizon.")
    segment: int = Field(ge=0, description="Stable id of the customer's segment (cluster).")
    segment_name: str = Field(description="The segment described in CRM words.")
    value: Unit = Field(description="RFM value score: 1 is the most valuable customers.")
    monetary: float = Field(description="Net spend: purchases minus refunds.")
    orders: int = Field(ge=0, description="Distinct purchase baskets seen.")
    recommendations: list[str] = Field(description="Item ids, best first.")
    sentiment: float | None = Field(
        default=None, ge=-1.0, le=1.0, description="Recent feedback and ticket tone, -1..1."
    )
    model_version: str = Field(description="Scorer version and how many events its models learned.")
    event_time: datetime = Field(description="Event time of the customer's latest event.")
    as_of: datetime | None = Field(
        default=None,
        description="Event time the scores are as of: the latest event, or later when the "
        "customer was re-scored while silent.",
    )
    updated_at: datetime = Field(description="Wall-clock time the score was computed.")

    def to_redis(self) -> dict[str, str]:
        """The hash fields, every value a string."""
        fields = {
            "customer_id": self.customer_id,
            "churn_risk": f"{self.churn_risk:.6f}",
            "segment": str(self.segment),
            "segment_name": self.segment_name,
            "value": f"{self.value:.6f}",
            "monetary": f"{self.monetary:.2f}",
            "orders": str(self.orders),
            "recommendations": orjson.dumps(self.recommendations).decode(),
            "model_version": self.model_version,
            "event_time": self.event_time.isoformat(),
            "as_of": (self.as_of or self.event_time).isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }
        if self.sentiment is not None:
            fields["sentiment"] = f"{self.sentiment:.6f}"
        return fields

    @classmethod
    def from_redis(cls, fields: Mapping[Any, Any]) -> Score:
        """Parse a hash as read from Redis (bytes or str keys)."""
        text = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()
        }
        data: dict[str, object] = dict(text)
        data["recommendations"] = orjson.loads(text.get("recommendations", "[]"))
        return cls.model_validate(data)
