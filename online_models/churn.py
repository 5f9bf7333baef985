"""Churn risk: a scaled logistic regression that learns from labels the stream produces later."""

from __future__ import annotations

import heapq
import logging
import math
from dataclasses import dataclass
from typing import Any

from river import linear_model, metrics, optim, preprocessing, stats, utils

__all__ = ["ChurnModel", "ChurnQuality", "LabelSchedule", "PendingExample"]

logger = logging.getLogger(__name__)


class ChurnModel:
    """``StandardScaler | LogisticRegression`` over a customer's churn features.

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

    def __init__(self, learning_rate: float = 0.05, l2: float = 1e-4) -> None:
        self.learning_rate = learning_rate
        self.l2 = l2
        self._scaler = preprocessing.StandardScaler()
        self._regression = linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate), l2=l2
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
        return float(self._regression.predict_proba_one(scaled).get(True, 0.0))

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        """Learn one labelled example (``y`` True = churned)."""
        self._scaler.learn_one(x)
        self._regression.learn_one(self._scaler.transform_one(x), y)
        self._labels_learned += 1

    def explain_one(self, x: dict[str, float], top: int = 3) -> list[str]:
        """The features pushing the risk up the most, strongest first."""
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
        """Plain data for the state table."""
        return {"time": self.time, "features": self.features, "risk": self.risk}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingExample:
        """Inverse of :meth:`to_dict`."""
        return cls(time=data["time"], features=dict(data["features"]), risk=data["risk"])


class LabelSchedule:
    """When each customer's pending example falls due, without scanning every customer.

    A min-heap of ``(deadline, customer)``; a customer's later entry supersedes earlier ones,
    so stale heap entries are skipped when popped.

    >>> schedule = LabelSchedule()
    >>> schedule.schedule("a", 10.0); schedule.schedule("b", 5.0); schedule.schedule("a", 20.0)
    >>> schedule.pop_due(15.0)
    ['b']
    >>> schedule.pop_due(25.0)
    ['a']
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._deadlines: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._deadlines)

    def schedule(self, customer_id: str, deadline: float) -> None:
        """Expect a label for ``customer_id`` by ``deadline`` (event time)."""
        self._deadlines[customer_id] = deadline
        heapq.heappush(self._heap, (deadline, customer_id))
        if len(self._heap) > 4 * len(self._deadlines) + 1024:
            self._compact()

    def cancel(self, customer_id: str) -> None:
        """The customer's example was labelled some other way."""
        self._deadlines.pop(customer_id, None)

    def pop_due(self, watermark: float) -> list[str]:
        """Customers whose deadline is at or before ``watermark``, removed from the schedule."""
        due = []
        heap = self._heap
        while heap and heap[0][0] <= watermark:
            deadline, customer_id = heapq.heappop(heap)
            if self._deadlines.get(customer_id) == deadline:
                del self._deadlines[customer_id]
                due.append(customer_id)
        return due

    def _compact(self) -> None:
        self._heap = [(d, c) for c, d in self._deadlines.items()]
        heapq.heapify(self._heap)


class ChurnQuality:
    """Progressive quality of the churn scores actually served, on their delayed labels.

    >>> quality = ChurnQuality(window=100)
    >>> for risk, churned in [(0.9, True), (0.2, False), (0.8, True), (0.3, False)]:
    ...     quality.update(risk, churned)
    >>> quality.roc_auc, quality.labels, quality.churn_rate
    (1.0, 4, 0.5)
    """

    def __init__(self, window: int = 1000) -> None:
        self.window = window
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
