"""When a score becomes an alert: thresholds, hysteresis and cooldowns, in event time."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from online_models.customer.activity import DAY

__all__ = ["AlertIntent", "AlertPolicy", "AlertState", "AlertThresholds"]

logger = logging.getLogger(__name__)

# Segment names silence drifts a customer into (see Segmenter.describe_all).
_LAPSING_NAMES = ("lapsing", "hibernating", "lost")
# Alert types whose cooldown is the segment alerts' (segment_cooldown_days).
_SEGMENT_KINDS = frozenset({"segment_change", "unusual_customer"})


@dataclass(frozen=True, slots=True)
class AlertThresholds:
    """The knobs of every alert (all settings of the worker)."""

    churn_risk: float = 0.7
    churn_hysteresis: float = 0.1
    churn_min_labels: int = 200
    value_at_risk: float = 300.0
    negative_sentiment: float = -0.3
    valuable_customer_value: float = 0.8
    segment_min_orders: int = 2
    segment_warmup: int = 500
    cooldown_days: float = 7.0
    segment_cooldown_days: float = 30.0
    segment_alert_on_silence: bool = False
    unusual_customer: bool = True


@dataclass(slots=True)
class AlertState:
    """Per-customer memory of alerts: whether churn may fire again, and when each type last did."""

    churn_armed: bool = True
    last_alert_at: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the state table."""
        return {"churn_armed": self.churn_armed, "last_alert_at": dict(self.last_alert_at)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertState:
        """Inverse of :meth:`to_dict`."""
        return cls(bool(data.get("churn_armed", True)), dict(data.get("last_alert_at", {})))


@dataclass(frozen=True, slots=True)
class AlertIntent:
    """An alert to publish: its type, severity and details (score, threshold, reasons)."""

    type: str
    severity: str
    details: dict[str, Any]
    time: float = 0.0


class AlertPolicy:
    """Decides which alerts a fresh score raises.

    A churn-risk alert needs both a risk of at least ``churn_risk`` and a value at risk
    (risk times predicted CLV) of at least ``value_at_risk``: the CRM hears about the valuable
    customers it is about to lose, not every cheap one-time buyer drifting silent. It uses
    hysteresis: once it fired, it re-arms only after the risk fell below ``churn_risk -
    churn_hysteresis``; and every alert type has a per-customer cooldown.

    >>> policy = AlertPolicy(AlertThresholds(churn_min_labels=0, cooldown_days=0.0,
    ...                                      value_at_risk=100.0))
    >>> state = AlertState()
    >>> [len(policy.churn(state, risk, value_at_risk=300 * risk, time=t, labels=1))
    ...  for t, risk in enumerate([0.75, 0.69, 0.72, 0.55, 0.71])]
    [1, 0, 0, 0, 1]
    >>> len(policy.churn(AlertState(), 0.95, value_at_risk=40.0, time=0.0, labels=1))
    0
    """

    def __init__(self, thresholds: AlertThresholds) -> None:
        self.thresholds = thresholds

    def _cooled_down(self, state: AlertState, kind: str, time: float) -> bool:
        last = state.last_alert_at.get(kind)
        days = (
            self.thresholds.segment_cooldown_days
            if kind in _SEGMENT_KINDS
            else self.thresholds.cooldown_days
        )
        return last is None or time - last >= days * DAY

    def _fire(
        self, state: AlertState, kind: str, time: float, severity: str, details: dict[str, Any]
    ) -> list[AlertIntent]:
        state.last_alert_at[kind] = time
        return [AlertIntent(kind, severity, details, time)]

    def churn(
        self,
        state: AlertState,
        risk: float,
        *,
        value_at_risk: float,
        time: float,
        labels: int,
        details: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
    ) -> list[AlertIntent]:
        """A churn-risk alert when risk and value at risk cross their thresholds while armed.

        ``details`` (more of the alert's details) may be a callable, asked only when the
        alert fires.
        """
        limits = self.thresholds
        if risk < limits.churn_risk - limits.churn_hysteresis:
            state.churn_armed = True
        if not state.churn_armed or risk < limits.churn_risk or labels < limits.churn_min_labels:
            return []
        if value_at_risk < limits.value_at_risk:
            return []
        if not self._cooled_down(state, "churn_risk", time):
            return []
        state.churn_armed = False
        severity = "critical" if risk >= (1.0 + limits.churn_risk) / 2 else "warning"
        if callable(details):
            details = details()
        return self._fire(
            state,
            "churn_risk",
            time,
            severity,
            {
                "score": round(risk, 6),
                "threshold": limits.churn_risk,
                "value_at_risk": round(value_at_risk, 2),
                "value_at_risk_threshold": limits.value_at_risk,
                **(details or {}),
            },
        )

    def churn_may_act(
        self, risks: np.ndarray, armed: np.ndarray, values_at_risk: np.ndarray, labels: int
    ) -> np.ndarray:
        """Which of many scores :meth:`churn` may act on (given each customer's risk, whether
        their churn alert is armed and their value at risk): re-arm a disarmed alert, or fire
        one (the cooldown is left to :meth:`churn`). For every other score it would return no
        alert and change nothing, so a batch asks it only about these.

        >>> policy = AlertPolicy(AlertThresholds(churn_min_labels=0, value_at_risk=100.0))
        >>> policy.churn_may_act(np.array([0.75, 0.75, 0.5, 0.65, 0.9]),
        ...                      np.array([True, False, False, False, True]),
        ...                      np.array([300.0, 300.0, 300.0, 300.0, 50.0]), labels=1).tolist()
        [True, False, True, False, False]
        """
        limits = self.thresholds
        rearmed = ~armed & (risks < limits.churn_risk - limits.churn_hysteresis)
        if labels < limits.churn_min_labels:
            return rearmed
        fires = (
            (armed | rearmed)
            & (risks >= limits.churn_risk)
            & (values_at_risk >= limits.value_at_risk)
        )
        return rearmed | fires

    def cancellation(self, state: AlertState, *, time: float) -> list[AlertIntent]:
        """A cancellation is certain churn: always alert, once, whatever hysteresis says."""
        state.churn_armed = False
        details = {
            "score": 1.0,
            "threshold": self.thresholds.churn_risk,
            "reasons": [
                {"factor": "subscription_cancel", "contribution": None,
                 "reason": "cancelled the subscription"}
            ],
        }  # fmt: skip
        return self._fire(state, "churn_risk", time, "critical", details)

    def segment_change(
        self,
        state: AlertState,
        *,
        time: float,
        previous: int | None,
        current: int,
        names: tuple[str, str],
        orders: int,
        learned: int,
        by_silence: bool = False,
    ) -> list[AlertIntent]:
        """A segment-change alert for an established customer once segments have settled.

        Silence alone (a re-score, no event of the customer's) moving them into or between
        lapsing, hibernating and lost raises none: that drift is every quiet customer's, and
        the churn-risk alert (value at risk) says which of them matter
        (``segment_alert_on_silence`` brings those alerts back).
        """
        limits = self.thresholds
        if previous is None or previous == current:
            return []
        if (
            by_silence
            and names[1].startswith(_LAPSING_NAMES)
            and not limits.segment_alert_on_silence
        ):
            return []
        if orders < limits.segment_min_orders or learned < limits.segment_warmup:
            return []
        if not self._cooled_down(state, "segment_change", time):
            return []
        details = {
            "score": current,
            "threshold": None,
            "from_segment": previous,
            "to_segment": current,
            "reasons": [f"moved from '{names[0]}' to '{names[1]}'"],
        }
        return self._fire(state, "segment_change", time, "info", details)

    def unusual_customer(
        self,
        state: AlertState,
        *,
        time: float,
        score: float,
        threshold: float | None,
        learned: int,
        details: Callable[[], dict[str, Any]],
    ) -> list[AlertIntent]:
        """An alert for a customer who just became an outlier (call it on that change only),
        once the segmenter has settled, at most once per segment cooldown, unless turned off
        (``unusual_customer``). ``details`` (the features behind it) is asked only when it
        fires.

        >>> policy = AlertPolicy(AlertThresholds(segment_warmup=0))
        >>> state = AlertState()
        >>> [len(policy.unusual_customer(state, time=day * 86_400.0, score=0.995,
        ...                              threshold=0.99, learned=1, details=dict))
        ...  for day in (0, 10, 30)]
        [1, 0, 1]
        """
        limits = self.thresholds
        if not limits.unusual_customer or learned < limits.segment_warmup:
            return []
        if not self._cooled_down(state, "unusual_customer", time):
            return []
        return self._fire(
            state,
            "unusual_customer",
            time,
            "info",
            {
                "score": round(score, 6),
                "threshold": None if threshold is None else round(threshold, 6),
                **details(),
            },
        )

    def negative_feedback(
        self, state: AlertState, *, time: float, sentiment: float, value: float, kind: str
    ) -> list[AlertIntent]:
        """Clearly negative feedback or a ticket from one of the most valuable customers."""
        limits = self.thresholds
        if sentiment > limits.negative_sentiment or value < limits.valuable_customer_value:
            return []
        if not self._cooled_down(state, "negative_feedback", time):
            return []
        severity = "critical" if value >= (1.0 + limits.valuable_customer_value) / 2 else "warning"
        details = {
            "score": round(sentiment, 6),
            "threshold": limits.negative_sentiment,
            "value": round(value, 6),
            "value_threshold": limits.valuable_customer_value,
            "reasons": [f"negative {kind.replace('_', ' ')} from a top-value customer"],
        }
        return self._fire(state, "negative_feedback", time, severity, details)
