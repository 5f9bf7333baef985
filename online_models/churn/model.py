"""Churn risk: a scaled logistic regression that learns from labels the stream produces later."""

from __future__ import annotations

import logging
import math
from array import array
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from river import drift, linear_model, metrics, optim, preprocessing, stats, tree, utils

from online_models.customer.activity import DAY
from online_models.customer.profile import CHURN_FEATURES

__all__ = [
    "CHURN_MODEL_KINDS",
    "ChurnModel",
    "ChurnQuality",
    "ChurnShare",
    "PendingExample",
    "merge_churn",
]

logger = logging.getLogger(__name__)


#: The churn model kinds: the default logistic regression and its challenger.
CHURN_MODEL_KINDS = ("logistic", "hoeffding_tree")
_FEATURES = len(CHURN_FEATURES)


@dataclass(frozen=True, slots=True)
class ChurnShare:
    """The churn model's shared part, or what one worker learned since its last delta.

    Arrays follow ``CHURN_FEATURES``. ``weights``, ``intercept`` and ``g2`` (AdaGrad's sums of
    squared gradients) are sums of per-example steps, as the regression starts from zero: a
    delta holds the steps its worker took, and steps add. ``count``, ``mean`` and ``var`` are
    the scaler's statistics (population variance), which merge exactly (Chan et al.).
    ``labels`` counts the labelled examples learned.
    """

    weights: np.ndarray
    intercept: float
    g2: np.ndarray
    count: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    labels: int

    @classmethod
    def zero(cls) -> ChurnShare:
        """Nothing learned."""
        weights, g2, count, mean, var = _zeros(5)
        return cls(weights, 0.0, g2, count, mean, var, 0)

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Metadata and arrays for a model record."""
        meta = {"intercept": self.intercept, "labels": self.labels, "features": CHURN_FEATURES}
        arrays = {name: getattr(self, name) for name in ("weights", "g2", "count", "mean", "var")}
        return meta, arrays

    @classmethod
    def from_arrays(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> ChurnShare:
        """The share a model record carries; ValueError if it does not fit the churn model."""
        if list(meta.get("features") or ()) != list(CHURN_FEATURES):
            msg = f"churn share of features {meta.get('features')}, not {list(CHURN_FEATURES)}"
            raise ValueError(msg)
        values = {name: arrays[name] for name in ("weights", "g2", "count", "mean", "var")}
        if any(v.shape != (_FEATURES,) or not np.isfinite(v).all() for v in values.values()):
            msg = f"churn share arrays must be {_FEATURES} finite numbers each"
            raise ValueError(msg)
        if (values["count"] < 0).any() or (values["var"] < 0).any() or (values["g2"] < 0).any():
            msg = "churn share has negative counts, variances or squared gradients"
            raise ValueError(msg)
        return cls(
            intercept=float(meta["intercept"]),
            labels=int(meta["labels"]),
            **{name: value.astype(float) for name, value in values.items()},
        )


def merge_churn(a: ChurnShare, b: ChurnShare) -> ChurnShare:
    """``a`` and ``b`` together: steps and label counts add; the scaler statistics merge as
    if one scaler had seen both streams.

    >>> a = replace(ChurnShare.zero(), count=np.full(14, 2.0), mean=np.full(14, 1.0))
    >>> b = replace(ChurnShare.zero(), count=np.full(14, 2.0), mean=np.full(14, 3.0))
    >>> merged = merge_churn(a, b)
    >>> float(merged.mean[0]), float(merged.var[0])
    (2.0, 1.0)
    """
    count = a.count + b.count
    share_a = np.divide(a.count, count, out=np.zeros(_FEATURES), where=count > 0)
    share_b = np.divide(b.count, count, out=np.zeros(_FEATURES), where=count > 0)
    delta = b.mean - a.mean
    return ChurnShare(
        weights=a.weights + b.weights,
        intercept=a.intercept + b.intercept,
        g2=a.g2 + b.g2,
        count=count,
        mean=share_a * a.mean + share_b * b.mean,
        var=share_a * a.var + share_b * b.var + share_a * share_b * delta * delta,
        labels=a.labels + b.labels,
    )


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties counted half); NaN unless both labels occur.

    >>> float(roc_auc(np.array([0.9, 0.2, 0.8, 0.3]), np.array([True, False, True, False])))
    1.0
    """
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if not positives or not negatives:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks of ties.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _zeros(n: int) -> list[np.ndarray]:
    return [np.zeros(_FEATURES) for _ in range(n)]


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
        # What the group has not got yet: the steps since ``_sent`` was taken (the live
        # weights, intercept and squared gradients minus it), the examples' scaler statistics
        # and the labels since the last delta.
        self._sent = ChurnShare.zero()
        self._unsent_scaler = preprocessing.StandardScaler()
        self._unsent_labels = 0

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
        self._unsent_scaler.learn_one(x)
        self._classifier.learn_one(self._scaler.transform_one(x), y)
        self._labels_learned += 1
        self._unsent_labels += 1

    def delta(self) -> ChurnShare:
        """What this model learned since its last delta (the shared part of it)."""
        delta = self._unsent()
        self._sent = self._additive()
        self._unsent_scaler = preprocessing.StandardScaler()
        self._unsent_labels = 0
        return delta

    def apply(self, group: ChurnShare, pending: Sequence[ChurnShare] = ()) -> None:
        """Score with the group's model plus what the group has not merged yet of this
        model's: its ``pending`` deltas and what it learned since the last one.

        A Hoeffding tree is not shared (trees do not merge): only the scaler and the label
        count are; the tree goes on learning from this worker's labels.
        """
        base = group
        for share in pending:
            base = merge_churn(base, share)
        live = merge_churn(base, self._unsent())
        self._sent = replace(base, weights=base.weights.copy(), g2=base.g2.copy())
        self._labels_learned = live.labels
        scaler = self._scaler
        scaler.counts = Counter(dict(zip(CHURN_FEATURES, live.count.tolist(), strict=True)))
        scaler.means = defaultdict(float, zip(CHURN_FEATURES, live.mean.tolist(), strict=True))
        scaler.vars = defaultdict(float, zip(CHURN_FEATURES, live.var.tolist(), strict=True))
        if self.kind == "logistic":
            regression = self._regression
            regression._weights = utils.VectorDict(
                dict(zip(CHURN_FEATURES, live.weights.tolist(), strict=True))
            )
            regression.intercept = live.intercept
            regression.optimizer.g2 = defaultdict(
                float, zip(CHURN_FEATURES, live.g2.tolist(), strict=True)
            )

    def _additive(self) -> ChurnShare:
        """The live regression's weights, intercept and squared gradients (scaler left out)."""
        zero = ChurnShare.zero()
        if self.kind != "logistic":
            return zero
        weights = self._regression.weights
        g2 = self._regression.optimizer.g2
        return replace(
            zero,
            weights=np.array([weights.get(name, 0.0) for name in CHURN_FEATURES]),
            intercept=float(self._regression.intercept),
            g2=np.array([g2.get(name, 0.0) for name in CHURN_FEATURES]),
        )

    def _unsent(self) -> ChurnShare:
        live, sent, scaler = self._additive(), self._sent, self._unsent_scaler
        return ChurnShare(
            weights=live.weights - sent.weights,
            intercept=live.intercept - sent.intercept,
            g2=live.g2 - sent.g2,
            count=np.array([float(scaler.counts.get(name, 0)) for name in CHURN_FEATURES]),
            mean=np.array([scaler.means.get(name, 0.0) for name in CHURN_FEATURES]),
            var=np.array([scaler.vars.get(name, 0.0) for name in CHURN_FEATURES]),
            labels=self._unsent_labels,
        )

    def contributions(self, x: dict[str, float]) -> dict[str, float]:
        """Each feature's term of the risk's log-odds: its weight times its scaled value
        (logistic kind only; the tree gives none). They sum, with the intercept, to the
        log-odds of :meth:`risk`."""
        if self.kind != "logistic":
            return {}
        scaled = self._scaler.transform_one(x)
        weights = self._regression.weights
        return {name: weights.get(name, 0.0) * value for name, value in scaled.items()}

    def risk_and_contributions(self, x: dict[str, float]) -> tuple[float, dict[str, float]]:
        """:meth:`risk` and :meth:`contributions` from one scaling of ``x`` (a score needs
        both: the risk it serves and the terms its reasons are made of)."""
        if self.kind != "logistic":
            return self.risk(x), {}
        regression = self._regression
        weights = regression.weights
        terms = {
            name: weights.get(name, 0.0) * value
            for name, value in self._scaler.transform_one(x).items()
        }
        logit = sum(terms.values()) + regression.intercept
        return float(regression.loss.mean_func(logit)), terms

    def risk_and_contributions_many(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`risk_and_contributions` of many customers at once: ``features`` is one row
        per customer in ``CHURN_FEATURES`` order; the risks and the matrix of terms come from
        one scaling and one product (logistic kind; the tree's risks come row by row, with
        zero terms).

        >>> model = ChurnModel()
        >>> model.learn_one(dict.fromkeys(CHURN_FEATURES, 1.0), True)
        >>> risk, terms = model.risk_and_contributions_many(np.ones((2, 14)))
        >>> risk.tolist() == [model.risk(dict.fromkeys(CHURN_FEATURES, 1.0))] * 2, terms.shape
        (True, (2, 14))
        """
        if self.kind != "logistic":
            risks = [self.risk(dict(zip(CHURN_FEATURES, row, strict=True))) for row in features]
            return np.array(risks, dtype=float), np.zeros(features.shape)
        live = self._additive()
        _, mean, var = self._scaler_arrays(self._scaler)
        scaled = np.divide(
            features - mean, np.sqrt(var), out=np.zeros(features.shape), where=var != 0
        )
        terms = scaled * live.weights
        logit = terms.sum(axis=1) + live.intercept
        # River's sigmoid: 0 and 1 beyond +-30.
        with np.errstate(over="ignore"):
            risk = np.where(logit < -30, 0.0, np.where(logit > 30, 1.0, 1 / (1 + np.exp(-logit))))
        return risk, terms

    def learn_many(self, xs: Sequence[dict[str, float]], ys: Sequence[bool]) -> None:
        """Learn labelled examples in order: the same steps as :meth:`learn_one` on each in
        turn (the scaler's running statistics, then one AdaGrad step on the example scaled
        by them), taken over arrays instead of River's dictionaries.

        Examples missing a churn feature, and the tree, are learned one by one by River.

        >>> one, many = ChurnModel(), ChurnModel()
        >>> xs = [{**dict.fromkeys(CHURN_FEATURES, 0.0), "log_orders": v} for v in (1.0, 3.0)]
        >>> for x, y in zip(xs, (False, True)):
        ...     one.learn_one(x, y)
        >>> many.learn_many(xs, [False, True])
        >>> abs(one.weights()["log_orders"] - many.weights()["log_orders"]) < 1e-12
        True
        """
        if not xs:
            return
        if self.kind != "logistic" or any(len(x) != _FEATURES for x in xs):
            for x, y in zip(xs, ys, strict=True):
                self.learn_one(x, y)
            return
        features = np.array([[x[name] for name in CHURN_FEATURES] for x in xs], dtype=float)
        churned = np.asarray(ys, dtype=bool)
        self._learn_scaled(self._learn_scaler(self._scaler, features), churned)
        self._learn_scaler(self._unsent_scaler, features)
        self._labels_learned += len(churned)
        self._unsent_labels += len(churned)

    def _learn_scaled(self, scaled: np.ndarray, churned: np.ndarray) -> None:
        """River's ``LogisticRegression.learn_one`` (log loss, L2, AdaGrad, constant intercept
        rate) on each row of ``scaled`` in turn."""
        regression = self._regression
        optimizer = regression.optimizer
        live = self._additive()
        weights, intercept, g2 = live.weights, live.intercept, live.g2
        rate = optimizer.learning_rate
        intercept_rate = regression.intercept_lr.get(optimizer.n_iterations)
        l2, eps, clip = regression.l2, optimizer.eps, regression.clip_gradient
        for row, label in zip(scaled, churned.tolist(), strict=True):
            loss_gradient = regression.loss.gradient(label, float(row @ weights) + intercept)
            loss_gradient = min(max(loss_gradient, -clip), clip)
            gradient = loss_gradient * row + l2 * weights if l2 else loss_gradient * row
            intercept -= intercept_rate * loss_gradient
            g2 = g2 + gradient * gradient
            weights = weights - rate / np.sqrt(g2 + eps) * gradient
        optimizer.n_iterations += len(churned)
        regression._weights = utils.VectorDict(
            dict(zip(CHURN_FEATURES, weights.tolist(), strict=True))
        )
        regression.intercept = intercept
        optimizer.g2 = defaultdict(float, zip(CHURN_FEATURES, g2.tolist(), strict=True))

    @staticmethod
    def _scaler_arrays(scaler: preprocessing.StandardScaler) -> list[np.ndarray]:
        """A scaler's counts, means and variances in ``CHURN_FEATURES`` order."""
        return [
            np.array([float(stat.get(name, 0)) for name in CHURN_FEATURES])
            for stat in (scaler.counts, scaler.means, scaler.vars)
        ]

    @classmethod
    def _learn_scaler(
        cls, scaler: preprocessing.StandardScaler, features: np.ndarray
    ) -> np.ndarray:
        """River's ``StandardScaler.learn_one`` on each row in turn; each row scaled by the
        statistics just after learning it (what :meth:`learn_one` feeds the regression)."""
        count, mean, var = cls._scaler_arrays(scaler)
        scaled = np.empty(features.shape)
        for i, x in enumerate(features):
            count = count + 1
            old = mean
            mean = old + (x - old) / count
            var = var + ((x - old) * (x - mean) - var) / count
            scaled[i] = np.divide(x - mean, np.sqrt(var), out=np.zeros(len(x)), where=var != 0)
        scaler.counts = Counter(dict(zip(CHURN_FEATURES, count.astype(int).tolist(), strict=True)))
        scaler.means = defaultdict(float, zip(CHURN_FEATURES, mean.tolist(), strict=True))
        scaler.vars = defaultdict(float, zip(CHURN_FEATURES, var.tolist(), strict=True))
        return scaled

    def explain_one(self, x: dict[str, float], top: int = 3) -> list[str]:
        """The features pushing the risk up the most, strongest first (logistic kind only)."""
        ranked = sorted(self.contributions(x).items(), key=lambda kv: kv[1], reverse=True)
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
    """Quality of the churn scores actually served, on their delayed labels.

    >>> quality = ChurnQuality(window=100)
    >>> for risk, churned in [(0.9, True), (0.2, False), (0.8, True), (0.3, False)]:
    ...     quality.update(risk, churned)
    >>> quality.roc_auc, quality.labels, quality.churn_rate, quality.drifts
    (1.0, 4, 0.5, 0)

    A rolling ROC AUC compares risks served at different ages: a "churned" label is a horizon
    old when it arrives, a "stayed" one often days, so the window mixes scores of different
    times and misleads (it read 0.38 where the cross-sectional AUC was 0.73). The
    :attr:`cohort_roc_auc` judges risks served on the same event-time days against each other,
    once every one of them has its label: the ``cohort_days`` latest days whose horizon has
    closed, as a backtest judges all customers scored at one moment.

    An ADWIN detector watches the absolute error of the served risks: a change in it (the
    customers or the model shifted) is counted in :attr:`drifts`.
    """

    # Class defaults: a quality window from before cohorts counts none.
    horizon_days = 90.0
    cohort_days = 7

    def __init__(
        self,
        window: int = 1000,
        drift_delta: float = 0.002,
        horizon_days: float = 90.0,
        cohort_days: int = 7,
    ) -> None:
        self.window = window
        self.drift_delta = drift_delta
        self.horizon_days = horizon_days
        self.cohort_days = cohort_days
        # Event-time day -> the risks served that day and their labels, once labelled.
        self._cohorts: dict[int, tuple[array[float], array[int]]] = {}
        self._now = -math.inf
        self._drift = drift.ADWIN(delta=drift_delta)
        self._drifts = 0
        self._roc_auc = metrics.RollingROCAUC(window_size=window)
        self._log_loss: Any = utils.Rolling(metrics.LogLoss, window_size=window)
        self._positives: Any = utils.Rolling(stats.Mean, window_size=window)
        self._labels = 0

    def update(
        self, risk: float, churned: bool, served_at: float | None = None, now: float | None = None
    ) -> None:
        """Count one served score against its label; ``served_at`` is when it was served and
        ``now`` the event time of the label (for the cohorts)."""
        if served_at is not None:
            day = int(served_at // DAY)
            cohort = self._cohorts.get(day)
            if cohort is None:
                cohort = self._cohorts[day] = (array("d"), array("b"))
            cohort[0].append(risk)
            cohort[1].append(1 if churned else 0)
            if now is not None and now > self._now:
                self._now = now
                self._forget_old_cohorts()
        self._roc_auc.update(churned, risk)
        self._log_loss.update(churned, min(max(risk, 1e-6), 1 - 1e-6))
        self._positives.update(1.0 if churned else 0.0)
        self._labels += 1
        self._drift.update(abs((1.0 if churned else 0.0) - risk))
        if self._drift.drift_detected:
            self._drifts += 1

    @property
    def cohort_roc_auc(self) -> float:
        """ROC AUC of the risks served on the ``cohort_days`` latest event-time days whose
        churn horizon has closed (every risk of those days has its label); NaN before."""
        closed = self._closed_day()
        risks: list[float] = []
        labels: list[int] = []
        for day in range(closed - self.cohort_days + 1, closed + 1):
            cohort = self._cohorts.get(day)
            if cohort is not None:
                risks.extend(cohort[0])
                labels.extend(cohort[1])
        return roc_auc(np.array(risks), np.array(labels, dtype=bool))

    def _closed_day(self) -> int:
        """The latest event-time day whose served risks all have their label by now."""
        if not math.isfinite(self._now):
            return -(2**62)
        return int((self._now - self.horizon_days * DAY) // DAY) - 1

    def _forget_old_cohorts(self) -> None:
        oldest = self._closed_day() - self.cohort_days
        for day in [d for d in self._cohorts if d <= oldest]:
            del self._cohorts[day]

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
