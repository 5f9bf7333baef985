"""Turns wire objects into model inputs and model outputs into wire objects."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from online_models.customer.activity import Activity
from online_models.scoring.alert_policy import AlertIntent
from online_models.scoring.scorer import CustomerScore
from schemas.alerts import Alert, AlertType, Severity
from schemas.event_batch import EventColumns
from schemas.events import (
    CartAddEvent,
    EventType,
    FeedbackEvent,
    PurchaseEvent,
    ReturnEvent,
    SupportTicketEvent,
    ViewEvent,
)
from schemas.score_hash import ReasonValues, ScoreValues, score_hash
from schemas.scores import ChurnReasonField, Score, ValueReasonField

__all__ = ["activities_of", "activity_of", "alert_of", "score_fields", "score_of"]

logger = logging.getLogger(__name__)

_ALERT_NAMESPACE = uuid.UUID("6f0d7c3e-2b1a-4d8e-9a57-5c1f3e0b9d21")


def activity_of(event: object) -> Activity:
    """The model input of a decoded event (any of the ``schemas.events`` models)."""
    kind: str = event.type  # type: ignore[attr-defined]
    time = event.timestamp.timestamp()  # type: ignore[attr-defined]
    if isinstance(event, PurchaseEvent | ReturnEvent):
        return Activity(
            kind, time, item_id=event.item_id, amount=event.amount, quantity=event.quantity
        )
    if isinstance(event, FeedbackEvent):
        return Activity(kind, time, text=event.text, rating=event.rating)
    if isinstance(event, SupportTicketEvent):
        return Activity(kind, time, text=event.text)
    if isinstance(event, ViewEvent | CartAddEvent):
        return Activity(kind, time, item_id=event.item_id)
    # Not getattr: a producer's extra field is an attribute of the event too.
    return Activity(kind, time)


def activities_of(columns: EventColumns) -> list[Activity | None]:
    """The model input of every row of decoded columns, as :func:`activity_of` makes it of
    each event; ``None`` for an erasure request, which is carried out rather than learned.

    >>> from schemas.event_batch import decode_events
    >>> batch = decode_events([b'{"event_id": "e1", "customer_id": "c1", "type": "return",'
    ...                        b' "timestamp": 1740823200, "item_id": "sku-1", "amount": 5}'])
    >>> activities_of(batch.columns)
    [Activity(kind='return', time=1740823200.0, item_id='sku-1', amount=5.0, quantity=1, \
text=None, rating=None)]
    """
    # The columns hold Activity's defaults where a type has no such field.
    rows = zip(
        columns.types,
        columns.times.tolist(),
        columns.item_ids,
        columns.amounts.tolist(),
        columns.quantities.tolist(),
        columns.texts,
        columns.ratings,
        strict=True,
    )
    erasure = EventType.ERASURE_REQUEST.value
    return [None if row[0] == erasure else Activity(*row) for row in rows]


def score_fields(
    customer_id: str, score: CustomerScore, recommendations: list[str], updated_at: str
) -> dict[str, str]:
    """The Redis hash fields of a model score and the customer's recommendations, as
    ``score_of(...).to_redis()`` gives them, without the pydantic object (``updated_at`` in
    ISO-8601, made once per flush). Raises :class:`~schemas.score_hash.UnwritableScore`."""
    values = ScoreValues(
        customer_id,
        score.churn_risk,
        score.segment,
        score.segment_name,
        score.value,
        score.monetary,
        score.orders,
        recommendations,
        score.sentiment,
        score.model_version,
        score.event_time,
        score.as_of,
        score.p_alive,
        score.expected_orders,
        score.predicted_clv,
        score.next_order_expected,
        [ReasonValues(r.factor, r.contribution, r.reason) for r in score.churn_reasons],
        score.segment_outlier,
        score.outlier_score,
        [ReasonValues(r.factor, r.contribution, r.reason) for r in score.value_reasons],
    )
    return score_hash(values, updated_at)


def score_of(
    customer_id: str, score: CustomerScore, recommendations: list[str], updated_at: datetime
) -> Score:
    """The Redis score of a model score and the customer's recommendations."""
    return Score(
        customer_id=customer_id,
        churn_risk=score.churn_risk,
        segment=score.segment,
        segment_name=score.segment_name,
        value=score.value,
        monetary=score.monetary,
        orders=score.orders,
        recommendations=recommendations,
        sentiment=score.sentiment,
        model_version=score.model_version,
        event_time=datetime.fromtimestamp(score.event_time, tz=UTC),
        as_of=datetime.fromtimestamp(score.as_of, tz=UTC),
        updated_at=updated_at,
        p_alive=score.p_alive,
        expected_orders=score.expected_orders,
        predicted_clv=score.predicted_clv,
        next_order_expected=(
            None
            if score.next_order_expected is None
            else datetime.fromtimestamp(score.next_order_expected, tz=UTC)
        ),
        churn_reasons=[
            ChurnReasonField(factor=r.factor, contribution=r.contribution, reason=r.reason)
            for r in score.churn_reasons
        ],
        segment_outlier=score.segment_outlier,
        outlier_score=score.outlier_score,
        value_reasons=[
            ValueReasonField(factor=r.factor, contribution=r.contribution, reason=r.reason)
            for r in score.value_reasons
        ],
    )


def alert_of(customer_id: str, intent: AlertIntent, time: float, event_id: str | None) -> Alert:
    """The outbound alert of an alert decision.

    The id is derived from the customer, type and trigger, so a redelivered event raises an
    alert with the same id and consumers can drop the duplicate.
    """
    trigger = event_id if event_id is not None else f"t{time:.3f}"
    alert_id = uuid.uuid5(_ALERT_NAMESPACE, f"{customer_id}\x1f{intent.type}\x1f{trigger}")
    return Alert(
        alert_id=str(alert_id),
        customer_id=customer_id,
        type=AlertType(intent.type),
        severity=Severity(intent.severity),
        timestamp=datetime.fromtimestamp(time, tz=UTC),
        event_id=event_id,
        details=intent.details,
    )
