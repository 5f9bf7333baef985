"""Which alerts a fresh score raises: the alert policy asked with the score and the models."""

from __future__ import annotations

import logging
from typing import Any

from online_models.churn.model import ChurnModel
from online_models.scoring.alert_policy import AlertIntent, AlertPolicy
from online_models.scoring.score_types import CustomerScore, Moved
from online_models.scoring.state import CustomerState
from online_models.segments.density import DensitySegmenter
from online_models.segments.kmeans import Segmenter

__all__ = ["ScoreAlerts"]

logger = logging.getLogger(__name__)


class ScoreAlerts:
    """The alerts of :class:`~online_models.scoring.scorer.CustomerScorer` (a part of it)."""

    _policy: AlertPolicy
    _churn: ChurnModel
    _segmenter: Segmenter | DensitySegmenter

    def _alerts(
        self,
        state: CustomerState,
        score: CustomerScore,
        moved: Moved,
        now: float,
        tone: float | None,
        kind: str,
        newly_cancelled: bool = False,
    ) -> list[AlertIntent]:
        policy = self._policy
        left_segment = moved.left
        time = now
        if newly_cancelled:
            alerts = policy.cancellation(state.alerts, time=time)
        elif state.cancelled:
            alerts = []  # already alerted when the customer cancelled
        else:
            alerts = policy.churn(
                state.alerts,
                score.churn_risk,
                value_at_risk=score.value_at_risk,
                time=time,
                labels=self._churn.labels_learned,
                details=lambda: {
                    "p_alive": round(score.p_alive, 6),
                    "predicted_clv": round(score.predicted_clv, 2),
                    "reasons": [reason.to_dict() for reason in score.churn_reasons],
                },
            )
        # Ids of neighbouring clusters can trade customers without a change a CRM cares
        # about: only a move to a differently described segment is an alert.
        if (
            left_segment is not None
            and self._segmenter.describe(left_segment) != score.segment_name
        ):
            alerts += policy.segment_change(
                state.alerts,
                time=time,
                previous=left_segment,
                current=score.segment,
                names=(self._segmenter.describe(left_segment), score.segment_name),
                orders=score.orders,
                learned=self._segmenter.learned,
                by_silence=kind == "silence",
            )
        if moved.became_outlier:
            alerts += policy.unusual_customer(
                state.alerts,
                time=time,
                score=score.outlier_score or 0.0,  # known: an outlier's always is
                threshold=(
                    self._segmenter.outlier_fence_score()
                    if isinstance(self._segmenter, Segmenter)
                    else None
                ),
                learned=self._segmenter.learned,
                details=lambda: self._unusual_details(state, score, now),
            )
        if tone is not None:
            alerts += policy.negative_feedback(
                state.alerts, time=time, sentiment=tone, value=score.value, kind=kind
            )
        return alerts

    def _unusual_details(
        self, state: CustomerState, score: CustomerScore, now: float
    ) -> dict[str, Any]:
        """What makes a customer unusual: which case it is (``alone``, or in a ``new group``
        segment of outliers alike), and the features that put them far from the nearest
        ordinary segment (k-means centre, or micro-cluster of a dense region), with their
        values."""
        profile = state.profile
        features = self._segmenter.unusual_features(
            profile.segment_features(now), profile.segment_quantities(now)
        )
        grouped = isinstance(self._segmenter, Segmenter) and self._segmenter.in_group(score.segment)
        return {
            # Alone, or one of a group of outliers alike that has a segment of its own.
            "case": "new group" if grouped else "alone",
            "segment": score.segment,
            "segment_name": score.segment_name,
            "features": [
                {name: feature[name] for name in ("feature", "value", "typical", "deviation")}
                for feature in features
            ],
            "reasons": [feature["reason"] for feature in features],
        }
