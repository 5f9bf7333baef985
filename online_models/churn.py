"""Churn risk: a scaled logistic regression that learns from labels the stream produces later."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from river import drift, linear_model, metrics, optim, preprocessing, stats, tree, utils

from online_models.profile import CHURN_FEATURES

__all__ = ["CHURN_MODEL_KINDS", "ChurnModel", "ChurnQuality", "PendingExample"]

logger = logging.getLogger(__name__)


#: The churn model kinds: the default logistic regression and its challenger.
CHURN_MODEL_KINDS = ("logistic", "hoeffding_tree")


class ChurnModel:
    """``StandardScaler | LogisticRegression`` (AdaGrad) over a customer's churn features.

    AdaGrad's per-weight steps shrink as evidence accumulates: plain SGD with a fixed step
    was as good on a year of Online Retail but far worse after five months (AUC 0.65 against
    0.75), being pushed around by the bursts of delayed labels.

    ``kind="hoeffding_tree"`` swaps the regression for River's Hoeffding adaptive tree, the
    challenger the quality benchmark compares; it gives no per-feature reasons.

    >>> model = ChurnModel()
    >>> model.predict_proba_one({"log_days_since_order": 1.0})
    {False: 0.5, True: 0.5}
    >>> for _ in range(200):
    ...     model.learn_one({"log_days_since_order": 4.0}, True)
    ...     model.learn_one({"log_days_since_order": 0.5}, False)
    >>> silent = {"log_days_since_order": 4.0}
    >>> model.predict_one(silent), model.risk(silent) > 0.9
    (True, True)
    """

    def __init__(
        self, learning_rate: float = 0.1, l2: float = 1e-4, kind: str = "logistic"
    ) -> None:
        if kind not in CHURN_MODEL_KINDS:
            msg = f"kind must be one of {', '.join(CHURN_MODEL_KINDS)}, got {kind!r}"
            raise ValueError(msg)
        self.learning_rate = learning_rate
        self.l2 = l2
        self.kind = kind
        self._scaler = preprocessing.StandardScaler()
        self._regression = linear_model.LogisticRegression(
            optimizer=optim.AdaGrad(learning_rate), l2=l2
        )
        self._classifier: Any = (
            self._regression
            if kind == "logistic"
            else tree.HoeffdingAdaptiveTreeClassifier(
                grace_period=100, leaf_prediction="nba", seed=0
            )
        )
        self._labels_learned = 0

    @property
    def labels_learned(self) -> int:
        """How many labelled examples the model has learned from."""
        return self._labels_learned

    def predict_proba_one(self, x: dict[str, float]) -> dict[bool, float]:
        """``{False: p(stays), True: p(churns)}``, as River's classifiers answer."""
        churn = self.risk(x)
        return {False: 1.0 - churn, True: churn}

    def predict_one(self, x: dict[str, float]) -> bool:
        """Whether the customer is more likely to churn than not."""
        return self.risk(x) > 0.5

    def risk(self, x: dict[str, float]) -> float:
        """Probability that the customer churns (0..1)."""
        scaled = self._scaler.transform_one(x)
        return float(self._classifier.predict_proba_one(scaled).get(True, 0.0))

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        """Learn one labelled example (``y`` True = churned)."""
        self._scaler.learn_one(x)
        self._classifier.learn_one(self._scaler.transform_one(x), y)
        self._labels_learned += 1

    def explain_one(self, x: dict[str, float], top: int = 3) -> list[str]:
        """The features pushing the risk up the most, strongest first (logistic kind only)."""
        if self.kind != "logistic":
            return []
        scaled = self._scaler.transform_one(x)
        weights = self._regression.weights
        pushes = {name: weights.get(name, 0.0) * value for name, value in scaled.items()}
        ranked = sorted(pushes.items(), key=lambda kv: kv[1], reverse=True)
        return [name for name, push in ranked[:top] if push > 0]

    def weights(self) -> dict[str, float]:
        """The regression's weights (on scaled features) and intercept."""
        return {**self._regression.weights, "intercept": self._regression.intercept}


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


class ChurnQuality:
    """Progressive quality of the churn scores actually served, on their delayed labels.

    >>> quality = ChurnQuality(window=100)
    >>> for risk, churned in [(0.9, True), (0.2, False), (0.8, True), (0.3, False)]:
    ...     quality.update(risk, churned)
    >>> quality.roc_auc, quality.labels, quality.churn_rate, quality.drifts
    (1.0, 4, 0.5, 0)

    An ADWIN detector watches the absolute error of the served risks: a change in it (the
    customers or the model shifted) is counted in :attr:`drifts`.
    """

    def __init__(self, window: int = 1000, drift_delta: float = 0.002) -> None:
        self.window = window
        self.drift_delta = drift_delta
        self._drift = drift.ADWIN(delta=drift_delta)
        self._drifts = 0
        self._roc_auc = metrics.RollingROCAUC(window_size=window)
        self._log_loss: Any = utils.Rolling(metrics.LogLoss, window_size=window)
        self._positives: Any = utils.Rolling(stats.Mean, window_size=window)
        self._labels = 0

    def update(self, risk: float, churned: bool) -> None:
        """Count one served score against its label."""
        self._roc_auc.update(churned, risk)
        self._log_loss.update(churned, min(max(risk, 1e-6), 1 - 1e-6))
        self._positives.update(1.0 if churned else 0.0)
        self._labels += 1
        self._drift.update(abs((1.0 if churned else 0.0) - risk))
        if self._drift.drift_detected:
            self._drifts += 1

    @property
    def drifts(self) -> int:
        """Changes the drift detector found in the churn error so far."""
        return self._drifts

    @property
    def labels(self) -> int:
        """Labels seen in total."""
        return self._labels

    @property
    def roc_auc(self) -> float:
        """Rolling ROC AUC (NaN unless the window holds both classes)."""
        # River answers 0.0 for a one-class window, which reads as "perfectly wrong". With both
        # classes in the window its churn rate is at least 1/window away from 0 and from 1.
        margin = 0.5 / self.window
        if not margin < self.churn_rate < 1.0 - margin:
            return math.nan
        return float(self._roc_auc.get())

    @property
    def log_loss(self) -> float:
        """Rolling log loss."""
        return float(self._log_loss.get()) if self._labels else math.nan

    @property
    def churn_rate(self) -> float:
        """Share of churned labels in the window."""
        return float(self._positives.get()) if self._labels else math.nan
