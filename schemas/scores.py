"""The score hash the CRM reads from Redis, and its field-by-field string encoding."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChurnReasonField", "Score", "ValueReasonField"]

logger = logging.getLogger(__name__)

Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class ChurnReasonField(BaseModel):
    """One factor pushing a customer's churn risk up (``churn_reasons``)."""

    model_config = ConfigDict(frozen=True)

    factor: str = Field(description="The churn model's feature, or subscription_cancel.")
    contribution: float | None = Field(
        description="Its term of the risk's log-odds (positive: it raises the risk); null for "
        "a rule such as a cancellation."
    )
    reason: str = Field(description="What it means, in CRM words.")


class ValueReasonField(BaseModel):
    """One factor behind a customer's ``predicted_clv`` (``value_reasons``)."""

    model_config = ConfigDict(frozen=True)

    factor: str = Field(
        description="log_spend_to_date or log_bgnbd_value (the value regression's features), "
        "expected_orders or spend_per_order (BG/NBD + Gamma-Gamma's parts, before the "
        "regression serves), or a rule: subscription_cancel, has_ordered."
    )
    contribution: float | None = Field(
        description="Its term of the natural log of the forecast, relative to an average "
        "customer (positive: it raises the forecast); null for a rule."
    )
    reason: str = Field(description="What it means, in CRM words.")


class Score(BaseModel):
    """One customer's current scores, stored as a Redis hash at ``{prefix}{customer_id}``.

    Every value in the hash is a string: numbers in decimal, ``recommendations`` as a JSON
    array, times as ISO-8601 UTC, ``segment_outlier`` as ``true`` or ``false``. ``sentiment``
    is absent until feedback or a ticket was seen.

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
    segment: int = Field(
        ge=-1,
        description="Stable id of the customer's segment (cluster); -1 for a customer in no "
        "dense region (CRM_SEGMENT_MODEL=density).",
    )
    segment_name: str = Field(description="The segment described in CRM words.")
    value: Unit = Field(description="RFM value score: 1 is the most valuable customers.")
    monetary: float = Field(description="Net spend: purchases minus refunds.")
    orders: int = Field(ge=0, description="Distinct purchase baskets seen.")
    recommendations: list[str] = Field(description="Item ids, best first.")
    sentiment: float | None = Field(
        default=None, ge=-1.0, le=1.0, description="Recent feedback and ticket tone, -1..1."
    )
    model_version: str = Field(
        description="Scorer version and the version of the group model that scored, e.g. 0.1.0+v42."
    )
    event_time: datetime = Field(description="Event time of the customer's latest event.")
    as_of: datetime | None = Field(
        default=None,
        description="Event time the scores are as of: the latest event, or later when the "
        "customer was re-scored while silent.",
    )
    updated_at: datetime = Field(description="Wall-clock time the score was computed.")
    p_alive: Unit = Field(
        default=1.0, description="Probability that the customer still buys (BG/NBD)."
    )
    expected_orders: float = Field(
        default=0.0, ge=0.0, description="Orders expected within CRM_CHURN_HORIZON_DAYS."
    )
    predicted_clv: float = Field(
        default=0.0,
        ge=0.0,
        description="Spend expected within CRM_CLV_HORIZON_DAYS, in the events' currency.",
    )
    next_order_expected: datetime | None = Field(
        default=None,
        description="Event time by which an active customer's expected number of new orders "
        "reaches one; absent for a customer who never ordered or who cancelled.",
    )
    churn_reasons: list[ChurnReasonField] = Field(
        default_factory=list,
        description="The (at most three) factors pushing the churn risk up the most.",
    )
    segment_outlier: bool = Field(
        default=False,
        description="Whether the customer fits no segment: with k-means, far from their "
        "segment in units of its spread, over the segment features and the basket (beyond "
        "CRM_OUTLIER_MADS robust standard deviations of everyone's log distances above the "
        "median); with density, in no dense region (segment -1, segment_name unusual).",
    )
    value_reasons: list[ValueReasonField] = Field(
        default_factory=list,
        description="The factors behind predicted_clv, strongest (up or down) first.",
    )
    outlier_score: Unit | None = Field(
        default=None,
        description="Share of customers nearer to their segment than this one (the "
        "percentile rank of the distance): 0..1, rising with the distance; absent (unknown) "
        "while the customer's segment is too young to tell who is unusual in it.",
    )

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
            "p_alive": f"{self.p_alive:.6f}",
            "expected_orders": f"{self.expected_orders:.4f}",
            "predicted_clv": f"{self.predicted_clv:.2f}",
            "churn_reasons": orjson.dumps(
                [reason.model_dump() for reason in self.churn_reasons]
            ).decode(),
            "segment_outlier": "true" if self.segment_outlier else "false",
            "value_reasons": orjson.dumps(
                [reason.model_dump() for reason in self.value_reasons]
            ).decode(),
        }
        if self.outlier_score is not None:
            fields["outlier_score"] = f"{self.outlier_score:.6f}"
        if self.sentiment is not None:
            fields["sentiment"] = f"{self.sentiment:.6f}"
        if self.next_order_expected is not None:
            fields["next_order_expected"] = self.next_order_expected.isoformat()
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
        data["churn_reasons"] = orjson.loads(text.get("churn_reasons", "[]"))
        data["value_reasons"] = orjson.loads(text.get("value_reasons", "[]"))
        return cls.model_validate(data)
