"""The score hash's fields built straight from a score's values, without a model object.

:class:`schemas.scores.Score` is the contract (its JSON Schema, ``to_redis``, ``from_redis``);
this module writes the same strings for the worker, which renders thousands of scores a
second: building and validating a pydantic object per score cost more than re-scoring the
customer. The checks pydantic would make are made here on the values (ranges, finiteness),
so a score the contract refuses is still refused, with the field named.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

import orjson

from schemas.errors import CrmScorerError

__all__ = ["OPTIONAL_FIELDS", "ReasonValues", "ScoreValues", "UnwritableScore", "score_hash"]

logger = logging.getLogger(__name__)

#: Fields a customer's hash can hold at one score and not at the next: ``outlier_score`` while
#: their segment is too young to tell (unknown), ``next_order_expected`` once no next order is
#: expected. A writer deletes the ones a score leaves out (a ``sentiment`` once known stays).
OPTIONAL_FIELDS = ("outlier_score", "next_order_expected")

# The latest event time a datetime holds (9999-12-31T23:59:59 UTC).
_LATEST = datetime.max.replace(tzinfo=UTC).timestamp() - 1.0


class UnwritableScore(CrmScorerError):
    """A score the hash's contract refuses (a value out of its range, or not a number)."""


class ReasonValues(NamedTuple):
    """One churn or value reason as the hash spells it (``ChurnReasonField``,
    ``ValueReasonField``)."""

    factor: str
    contribution: float | None
    reason: str


class ScoreValues(NamedTuple):
    """What a score hash holds, as plain values (times as event-time seconds)."""

    customer_id: str
    churn_risk: float
    segment: int
    segment_name: str
    value: float
    monetary: float
    orders: int
    recommendations: Sequence[str]
    sentiment: float | None
    model_version: str
    event_time: float
    as_of: float
    p_alive: float
    expected_orders: float
    predicted_clv: float
    next_order_expected: float | None
    churn_reasons: Sequence[ReasonValues]
    segment_outlier: bool
    outlier_score: float | None
    value_reasons: Sequence[ReasonValues] = ()


def _refuse(field: str, value: object, why: str) -> UnwritableScore:
    msg = f"{field}: {value!r} {why}"
    return UnwritableScore(msg)


def _unit(field: str, value: float) -> str:
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise _refuse(field, value, "is not within 0..1")
    return f"{value:.6f}"


def _at_least_zero(field: str, value: float, digits: str) -> str:
    if not value >= 0.0 or value == math.inf:
        raise _refuse(field, value, "is not a number of 0 or more")
    return format(value, digits)


def _iso(field: str, seconds: float) -> str:
    if not -62_135_596_800.0 <= seconds <= _LATEST:  # NaN fails too
        raise _refuse(field, seconds, "is not a time between the years 1 and 9999")
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()


def _reasons(reasons: Sequence[ReasonValues]) -> str:
    return orjson.dumps(
        [
            {"factor": factor, "contribution": contribution, "reason": reason}
            for factor, contribution, reason in reasons
        ]
    ).decode()


def score_hash(score: ScoreValues, updated_at: str) -> dict[str, str]:
    """The hash fields of ``score`` (``updated_at`` already ISO-8601), as
    :meth:`schemas.scores.Score.to_redis` writes them; raises :class:`UnwritableScore` naming
    the field when a value breaks the contract.

    A ``next_order_expected`` beyond the year 9999 (a customer whose purchase rate BG/NBD
    reads as next to nothing) is left out, as for a customer who never ordered: there is no
    order to expect.

    >>> values = ScoreValues("c1", 0.25, 2, "loyal", 0.8, 120.5, 3, ["a"], None, "0.1.0+v4",
    ...                      0.0, 86_400.0, 0.9, 1.5, 80.0, 1e300, [], False, 0.1)
    >>> fields = score_hash(values, "2024-01-01T00:00:00+00:00")
    >>> fields["churn_risk"], fields["as_of"], "next_order_expected" in fields
    ('0.250000', '1970-01-02T00:00:00+00:00', False)
    """
    if score.orders < 0:
        raise _refuse("orders", score.orders, "is below 0")
    if score.segment < -1:
        raise _refuse("segment", score.segment, "is below -1")
    if not math.isfinite(score.monetary):
        raise _refuse("monetary", score.monetary, "is not a finite number")
    fields = {
        "customer_id": score.customer_id,
        "churn_risk": _unit("churn_risk", score.churn_risk),
        "segment": str(score.segment),
        "segment_name": score.segment_name,
        "value": _unit("value", score.value),
        "monetary": f"{score.monetary:.2f}",
        "orders": str(score.orders),
        "recommendations": orjson.dumps(list(score.recommendations)).decode(),
        "model_version": score.model_version,
        "event_time": _iso("event_time", score.event_time),
        "as_of": _iso("as_of", score.as_of),
        "updated_at": updated_at,
        "p_alive": _unit("p_alive", score.p_alive),
        "expected_orders": _at_least_zero("expected_orders", score.expected_orders, ".4f"),
        "predicted_clv": _at_least_zero("predicted_clv", score.predicted_clv, ".2f"),
        "churn_reasons": _reasons(score.churn_reasons),
        "segment_outlier": "true" if score.segment_outlier else "false",
        "value_reasons": _reasons(score.value_reasons),
    }
    # Absent while the customer's segment is too young to tell who is unusual (unknown).
    if score.outlier_score is not None:
        fields["outlier_score"] = _unit("outlier_score", score.outlier_score)
    if score.sentiment is not None:
        if not -1.0 <= score.sentiment <= 1.0:
            raise _refuse("sentiment", score.sentiment, "is not within -1..1")
        fields["sentiment"] = f"{score.sentiment:.6f}"
    expected = score.next_order_expected
    if expected is not None and expected <= _LATEST:
        fields["next_order_expected"] = _iso("next_order_expected", expected)
    return fields
