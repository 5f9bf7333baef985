"""A churn label in waiting: a served score that becomes an example once the stream says."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from online_models.customer.profile import CHURN_FEATURES

__all__ = ["PendingExample"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class PendingExample:
    """A score that was served and now waits for its label: churned or came back."""

    time: float
    features: dict[str, float]
    risk: float

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the state table: feature values in ``CHURN_FEATURES`` order.

        >>> example = PendingExample(5.0, {"log_orders": 1.0}, 0.25)
        >>> PendingExample.from_dict(example.to_dict()).features["log_orders"]
        1.0
        """
        features = self.features
        return {
            "time": self.time,
            "x": [features.get(name, 0.0) for name in CHURN_FEATURES],
            "risk": self.risk,
        }

    def to_list(self) -> list[Any]:
        """``[time, risk, feature values in CHURN_FEATURES order]``, for a compact record.

        >>> PendingExample.from_list(PendingExample(5.0, {"log_orders": 1.0}, 0.25).to_list())
        ... # doctest: +ELLIPSIS
        PendingExample(time=5.0, features={'log_orders': 1.0, ...}, risk=0.25)
        """
        features = self.features
        return [self.time, self.risk, [features.get(name, 0.0) for name in CHURN_FEATURES]]

    @classmethod
    def from_list(cls, data: list[Any]) -> PendingExample:
        """Inverse of :meth:`to_list`."""
        time, risk, values = data
        return cls(time, dict(zip(CHURN_FEATURES, values, strict=True)), risk)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingExample:
        """Inverse of :meth:`to_dict` (also reads the named ``features`` of state format 1)."""
        if "x" in data:
            features = dict(zip(CHURN_FEATURES, data["x"], strict=True))
        else:
            features = dict(data["features"])
        return cls(time=data["time"], features=features, risk=data["risk"])
