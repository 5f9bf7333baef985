"""Everything the scorer keeps about one customer, as one record of the state table."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from online_models.alert_policy import AlertState
from online_models.churn import PendingExample
from online_models.profile import CustomerProfile
from schemas.errors import CrmScorerError

__all__ = ["STATE_VERSION", "CustomerState", "StateVersionError"]

logger = logging.getLogger(__name__)

STATE_VERSION = 2
# Format 1 kept at most one pending example, as an object instead of a list; it reads as is.
_READABLE_VERSIONS = frozenset({1, STATE_VERSION})


class StateVersionError(CrmScorerError, ValueError):
    """A stored record written by an incompatible version."""


@dataclass(slots=True)
class CustomerState:
    """Features, churn examples waiting for their labels, the segment and alert memory.

    ``pending`` holds the served churn scores not yet labelled, oldest first: one taken at
    the customer's latest event and, while the customer stays silent, more taken as the
    scorer re-scores them, so the model also learns what silence of every length means.

    >>> state = CustomerState.new(0.0)
    >>> CustomerState.from_dict(state.to_dict()) == state
    True
    """

    profile: CustomerProfile
    pending: list[PendingExample] = field(default_factory=list)
    segment: int | None = None
    segment_candidate: int | None = None
    segment_votes: int = 0
    cancelled: bool = False
    alerts: AlertState = field(default_factory=AlertState)
    shard: int | None = None

    @classmethod
    def new(cls, time: float) -> CustomerState:
        """A customer first seen at ``time``."""
        return cls(profile=CustomerProfile.new(time))

    def confirm_segment(self, predicted: int, confirmations: int) -> int | None:
        """Adopt ``predicted`` once it won ``confirmations`` scores in a row.

        Returns the segment left behind when the customer's segment changed, else None.

        >>> state = CustomerState.new(0.0)
        >>> [state.confirm_segment(s, 2) for s in (1, 2, 1, 2, 2)], state.segment
        ([None, None, None, None, 1], 2)
        """
        if self.segment is None:
            self.segment = predicted
            return None
        if predicted == self.segment:
            self.segment_candidate, self.segment_votes = None, 0
            return None
        if predicted == self.segment_candidate:
            self.segment_votes += 1
        else:
            self.segment_candidate, self.segment_votes = predicted, 1
        if self.segment_votes < confirmations:
            return None
        previous, self.segment = self.segment, predicted
        self.segment_candidate, self.segment_votes = None, 0
        return previous

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-safe) for the state table."""
        return {
            "v": STATE_VERSION,
            "profile": self.profile.to_dict(),
            "pending": [example.to_dict() for example in self.pending],
            "segment": self.segment,
            "segment_candidate": self.segment_candidate,
            "segment_votes": self.segment_votes,
            "cancelled": self.cancelled,
            "alerts": self.alerts.to_dict(),
            "shard": self.shard,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CustomerState:
        """Inverse of :meth:`to_dict`; refuses records of another format version."""
        version = data.get("v")
        if version not in _READABLE_VERSIONS:
            readable = ", ".join(str(v) for v in sorted(_READABLE_VERSIONS))
            msg = f"customer state of format version {version!r}; this scorer reads {readable}"
            raise StateVersionError(msg)
        pending = data.get("pending") or []
        if isinstance(pending, dict):  # format 1
            pending = [pending]
        return cls(
            profile=CustomerProfile.from_dict(data["profile"]),
            pending=[PendingExample.from_dict(example) for example in pending],
            segment=data.get("segment"),
            segment_candidate=data.get("segment_candidate"),
            segment_votes=int(data.get("segment_votes", 0)),
            cancelled=bool(data.get("cancelled", False)),
            alerts=AlertState.from_dict(data.get("alerts", {})),
            shard=data.get("shard"),
        )
