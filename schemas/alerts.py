"""Alerts published to the outbound topic for the CRM to act on."""

from __future__ import annotations

import logging
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Alert", "AlertType", "Severity"]

logger = logging.getLogger(__name__)


class AlertType(StrEnum):
    """What happened to the customer."""

    CHURN_RISK = "churn_risk"
    SEGMENT_CHANGE = "segment_change"
    NEGATIVE_FEEDBACK = "negative_feedback"
    UNUSUAL_CUSTOMER = "unusual_customer"


class Severity(StrEnum):
    """How urgently the CRM should act."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(BaseModel):
    """One alert; the Kafka key is ``customer_id``.

    >>> from datetime import UTC, datetime
    >>> alert = Alert(alert_id="a1", customer_id="c1", type=AlertType.CHURN_RISK,
    ...               severity=Severity.WARNING, timestamp=datetime(2024, 1, 1, tzinfo=UTC),
    ...               details={"score": 0.9, "threshold": 0.7, "reasons": ["silent"]})
    >>> Alert.model_validate_json(alert.to_bytes()) == alert
    True
    """

    model_config = ConfigDict(frozen=True)

    alert_id: str = Field(description="Deterministic id: the same trigger always has the same id.")
    customer_id: str
    type: AlertType
    severity: Severity
    timestamp: datetime = Field(description="Event time of the event that raised the alert.")
    event_id: str | None = Field(default=None, description="The event that raised the alert.")
    details: dict[str, Any] = Field(
        description="The score, the threshold and the reasons behind the alert."
    )

    def to_bytes(self) -> bytes:
        """The JSON message value."""
        return orjson.dumps(self.model_dump(mode="json"))
