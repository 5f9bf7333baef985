"""Everything the scorer keeps about one customer, as one record of the state table."""

from __future__ import annotations

import base64
import hashlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from online_models.churn.labels import PendingExample
from online_models.customer.profile import PROFILE_FIELDS, CustomerProfile
from online_models.scoring.alert_policy import AlertState
from schemas.errors import CrmScorerError

__all__ = [
    "RECORD_VERSION",
    "STATE_VERSION",
    "CustomerState",
    "StateVersionError",
    "event_fingerprint",
]

logger = logging.getLogger(__name__)

#: Format of :meth:`CustomerState.to_dict`, the named form.
STATE_VERSION = 3
#: Format of :meth:`CustomerState.encode`, the compact record the state table keeps: the
#: fields by position, so a record carries no field names (half the bytes of format 3).
#: Format 5 added the customer's latent factors; format 4 records read as having none. Three
#: trailing fields came later within format 5, the outlier flag (since a count of outlier
#: scores in a row, read by older workers as the flag it implies), the latest ranked
#: recommendations and the pending value examples, then the generation of the customer's
#: segment: records without them read as 0 and none, and readers that do not know them ignore
#: them (so workers of either kind can share a group during an upgrade).
RECORD_VERSION = 5
_READABLE_RECORDS = frozenset({4, RECORD_VERSION})
# Format 1 kept at most one pending example, as an object instead of a list; format 2 had no
# record of the events applied. Both read as is.
_READABLE_VERSIONS = frozenset({1, 2, STATE_VERSION})
_FINGERPRINT_BYTES = 6


def event_fingerprint(event_id: str) -> int:
    """48 bits of BLAKE2b of an event id: what a state keeps to recognise the event again.

    Small enough for any JSON reader (< 2**53); two ids of one customer's recent events
    collide with odds of about one in 10**13.

    >>> event_fingerprint("e-1") == event_fingerprint("e-1") != event_fingerprint("e-2")
    True
    """
    digest = hashlib.blake2b(event_id.encode("utf-8"), digest_size=6).digest()
    return int.from_bytes(digest, "big")


class StateVersionError(CrmScorerError, ValueError):
    """A stored record written by an incompatible version."""


@dataclass(slots=True)
class CustomerState:
    """Features, churn examples waiting for their labels, the segment and alert memory.

    ``pending`` holds the served churn scores not yet labelled, oldest first: one taken at
    the customer's latest event and, while the customer stays silent, more taken as the
    scorer re-scores them, so the model also learns what silence of every length means.

    ``offset`` is the position (a Kafka offset) of the latest event applied from ``shard``,
    and ``recent_events`` the fingerprints of the latest events' ids, newest last: together
    they let an event delivered twice be recognised and applied once (:meth:`has_applied`).

    ``outlier_streak`` counts the customer's latest scores in a row that found them in no
    segment (``segment_outlier``; 0 when the latest did not): an alert goes out when they have
    been one for as many scores as a segment change needs, not while they stay one.

    ``latent`` holds the customer's own latent factors of the recommender (float32,
    little-endian): they are the customer's, so they move with the customer's partition and
    go with an erasure, while the item factors belong to the group's model.

    ``value_pending`` holds the value examples waiting for the horizon to pass, oldest first,
    each ``[served at, net spend then, *SPEND_FEATURES, forecast served, unscaled forecast]``:
    the net spend (purchases less refunds, not floored) lets the label be the spend since, once
    due; the unscaled forecast (the regression's before its calibration's scale, 0 before it
    served) is what the calibration learns from. An example of a record from before it was kept
    has none, and reads as one taken before the regression served (0).

    ``segment_generation`` is the generation of the customer's segment when they were placed
    in it (a group segment's row is reused by the next group, under its next generation;
    0 for an ordinary segment, and in records from before it was kept): a segment whose row
    moved on to another generation is no longer theirs (``Segmenter.current``).

    ``ranked`` is the customer's latest recommendations and ``ranked_at`` the event time
    they were ranked for: a silent customer's re-score serves them again for a while
    instead of ranking the catalogue anew (:meth:`CustomerScorer.recommend_many`).

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
    offset: int | None = None
    recent_events: list[int] = field(default_factory=list)
    latent: bytes | None = None
    outlier_streak: int = 0
    ranked: list[str] = field(default_factory=list)
    ranked_at: float | None = None
    value_pending: list[list[float]] = field(default_factory=list)
    segment_generation: int = 0

    @classmethod
    def new(cls, time: float) -> CustomerState:
        """A customer first seen at ``time``."""
        return cls(profile=CustomerProfile.new(time))

    @property
    def outlier(self) -> bool:
        """Whether the customer's latest score found them in no segment."""
        return self.outlier_streak > 0

    def confirm_outlier(self, outlier: bool, confirmations: int, *, counts: bool = True) -> bool:
        """Count a score's outlier flag; True when it makes the customer an outlier for
        ``confirmations`` counted scores in a row (once per streak). A score that does not
        ``count`` (a further event of a day already counted) can end a streak, not lengthen it.

        >>> state = CustomerState.new(0.0)
        >>> [state.confirm_outlier(f, 2) for f in (True, False, True, True, True)]
        [False, False, False, True, False]
        >>> state = CustomerState.new(0.0)
        >>> [state.confirm_outlier(True, 2, counts=c) for c in (True, False, False, True)]
        [False, False, False, True]
        """
        if not outlier:
            self.outlier_streak = 0
            return False
        if not counts:
            self.outlier_streak = max(self.outlier_streak, 1)
            return False
        # Capped: the record keeps a small number, however long the streak.
        self.outlier_streak = min(self.outlier_streak + 1, confirmations + 1)
        return self.outlier_streak == confirmations

    def confirm_segment(
        self, predicted: int, confirmations: int, generation: int = 0
    ) -> int | None:
        """Adopt ``predicted`` (its row's ``generation``) once it won ``confirmations``
        scores in a row.

        Returns the segment left behind when the customer's segment changed, else None.

        >>> state = CustomerState.new(0.0)
        >>> [state.confirm_segment(s, 2) for s in (1, 2, 1, 2, 2)], state.segment
        ([None, None, None, None, 1], 2)
        """
        if self.segment is None:
            self.segment, self.segment_generation = predicted, generation
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
        previous, self.segment, self.segment_generation = self.segment, predicted, generation
        self.segment_candidate, self.segment_votes = None, 0
        return previous

    def placement_record(self) -> tuple[object, ...]:
        """What a score's placement may change: segment, its votes, outlier flag, alerts
        (compared before and after a re-score to tell whether the state changed)."""
        return (
            self.segment, self.segment_generation, self.segment_candidate, self.segment_votes,
            self.outlier_streak, self.alerts,
        )  # fmt: skip

    def has_applied(self, shard: int, offset: int | None, fingerprint: int | None) -> bool:
        """Whether the event at ``offset`` of ``shard``, or one with this id fingerprint,
        was applied to this state already.

        >>> state = CustomerState.new(0.0)
        >>> state.record_applied(2, 41, event_fingerprint("e-1"), window=8)
        >>> state.has_applied(2, 40, None), state.has_applied(2, 42, None)
        (True, False)
        >>> state.has_applied(3, 1, event_fingerprint("e-1"))  # same id on another partition
        True
        """
        redelivered = (
            offset is not None
            and self.offset is not None
            and shard == self.shard
            and offset <= self.offset
        )
        return redelivered or (fingerprint is not None and fingerprint in self.recent_events)

    def record_applied(
        self, shard: int, offset: int | None, fingerprint: int | None, *, window: int
    ) -> None:
        """Remember an applied event; the ``window`` latest fingerprints are kept."""
        if shard != self.shard:
            self.offset = None  # offsets of another partition say nothing about this one
        self.shard = shard
        if offset is not None:
            self.offset = offset if self.offset is None else max(self.offset, offset)
        if fingerprint is not None and window > 0:
            self.recent_events.append(fingerprint)
            del self.recent_events[:-window]

    def last_scored_at(self) -> float:
        """Event time of the latest score that left a trace: the latest event or example."""
        return max([self.profile.last_seen, *(example.time for example in self.pending)])

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
            "offset": self.offset,
            "recent_events": self.recent_events,
            "latent": None if self.latent is None else base64.b64encode(self.latent).decode(),
            "outlier": self.outlier_streak,
            "ranked": self.ranked,
            "ranked_at": self.ranked_at,
            "value_pending": self.value_pending,
            "segment_generation": self.segment_generation,
        }

    def encode(self) -> bytes:
        """The compact record (format :data:`RECORD_VERSION`): a JSON array of the fields.

        >>> state = CustomerState.new(0.0)
        >>> CustomerState.decode(state.encode()) == state
        True
        """
        profile = self.profile
        record = orjson.dumps(
            [
                RECORD_VERSION,
                [getattr(profile, name) for name in PROFILE_FIELDS],
                [example.to_list() for example in self.pending],
                self.segment,
                self.segment_candidate,
                self.segment_votes,
                self.cancelled,
                self.alerts.churn_armed,
                self.alerts.last_alert_at,
                self.shard,
                self.offset,
                _pack_fingerprints(self.recent_events),
                None if self.latent is None else base64.b64encode(self.latent).decode("ascii"),
                self.outlier_streak,
                None if self.ranked_at is None else [self.ranked_at, self.ranked],
                self.value_pending,
                self.segment_generation,
            ]
        )
        # A right-sized copy: the worker keeps this record for as long as it owns the
        # customer, and orjson's own bytes keep its whole scratch buffer (4 KB and up).
        return bytes(memoryview(record))

    @classmethod
    def decode(cls, raw: bytes) -> CustomerState:
        """A state from a stored record: :meth:`encode`'s format, or any format
        :meth:`from_dict` reads (as JSON). Raises :class:`StateVersionError` for others."""
        data = orjson.loads(raw)
        if not isinstance(data, list):
            return cls.from_dict(data)
        if not data or data[0] not in _READABLE_RECORDS:
            msg = f"customer state record of format {data[:1]!r}; this scorer reads 1-5"
            raise StateVersionError(msg)
        _, profile, pending, segment, candidate, votes, cancelled, armed, alerted, *rest = data
        shard, offset, recent, *more = rest
        latent = more[0] if more else None
        # A flag before outlier streaks were counted: True reads as a streak of 1.
        outlier = int(more[1]) if len(more) > 1 else 0
        ranked_at, ranked = more[2] if len(more) > 2 and more[2] is not None else (None, [])
        value_pending = _value_examples(more[3] if len(more) > 3 else [])
        generation = _generation(more[4] if len(more) > 4 else 0)
        return cls(
            profile=CustomerProfile(*profile),
            pending=[PendingExample.from_list(example) for example in pending],
            segment=segment,
            segment_candidate=candidate,
            segment_votes=votes,
            cancelled=cancelled,
            alerts=AlertState(armed, alerted),
            shard=shard,
            offset=offset,
            recent_events=_unpack_fingerprints(recent),
            latent=None if latent is None else base64.b64decode(latent),
            outlier_streak=outlier,
            ranked=ranked,
            ranked_at=ranked_at,
            value_pending=value_pending,
            segment_generation=generation,
        )

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
            offset=data.get("offset"),
            recent_events=list(data.get("recent_events") or []),
            latent=None if data.get("latent") is None else base64.b64decode(data["latent"]),
            outlier_streak=int(data.get("outlier", 0)),
            ranked=list(data.get("ranked") or []),
            ranked_at=data.get("ranked_at"),
            value_pending=_value_examples(data.get("value_pending") or []),
            segment_generation=_generation(data.get("segment_generation", 0)),
        )


def _value_examples(examples: Any) -> list[list[float]]:
    """A stored state's value examples, those that are not rows of finite numbers of one
    width (at least the time, spend, two features and the forecast) in time order dropped with
    a warning: a lost example is a label fewer, a malformed one would fail every label after it.
    One of 0.3.0 (no unscaled forecast yet) gets 0, as one taken before the regression served.

    >>> _value_examples([[1.0, 2.0, 0.1, 0.2, 3.0], [0.5, None, 0, 0, 0], "x"])
    [[1.0, 2.0, 0.1, 0.2, 3.0, 0.0]]
    """
    if not isinstance(examples, list):
        logger.warning("Dropped a state's value examples: not a list (%r)", type(examples))
        return []
    kept: list[list[float]] = []
    for example in examples:
        if isinstance(example, list) and len(example) == 5:  # 0.3.0's
            example = [*example, 0.0]
        if (
            isinstance(example, list)
            and len(example) >= 5
            and (not kept or len(example) == len(kept[0]))
            and all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in example
            )
            and (not kept or example[0] >= kept[-1][0])
        ):
            kept.append([float(v) for v in example])
    if len(kept) < len(examples):
        logger.warning("Dropped %d malformed value examples of a state", len(examples) - len(kept))
    return kept


def _generation(value: Any) -> int:
    """A stored segment generation; one that is not a whole number >= 0 reads as 0 (the
    customer is placed again if their segment's row moved on), with a warning.

    >>> _generation(2), _generation(-1), _generation("x")
    (2, 0, 0)
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    logger.warning("Read a state's segment generation %r as 0", value)
    return 0


def _pack_fingerprints(fingerprints: list[int]) -> str:
    """Event id fingerprints as one base64 string of 6-byte values."""
    packed = b"".join(f.to_bytes(_FINGERPRINT_BYTES, "big") for f in fingerprints)
    return base64.b64encode(packed).decode("ascii")


def _unpack_fingerprints(text: str) -> list[int]:
    packed = base64.b64decode(text)
    return [
        int.from_bytes(packed[i : i + _FINGERPRINT_BYTES], "big")
        for i in range(0, len(packed), _FINGERPRINT_BYTES)
    ]
