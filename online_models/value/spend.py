"""What a customer will spend next: a ridge regression learned from what customers went on to spend.

The stream makes its own labels: a customer scored at event time ``t`` leaves a pending value
example, and once the horizon has passed in event time the net spend they made in
``(t, t + horizon]`` becomes its label (see :mod:`online_models.scoring.value_learning`).

The regression fits ``log1p(spend)`` on a log scale in the *residual* form over BG/NBD +
Gamma-Gamma: its target is ``log1p(spend) - log1p(BG/NBD's forecast)``, so with no labels, or
weights shrunk to zero, it forecasts what BG/NBD does. Its features (:data:`SPEND_FEATURES`)
are the customer's net spend to date and BG/NBD + Gamma-Gamma's forecast over the horizon, both
log1p: on Online Retail the other candidates (p_alive, spend per order, spend rate, recency,
frequency, tenure, basket size, recent trend) ranked worse out of sample, as tenure-like
features extrapolate from the young customers of the first labels.

It is kept as sufficient statistics: the weighted Gram matrix of the features with a constant,
their moments with the target, and two sums for the retransformation to spend (see
:class:`SpendShare`). Every sum is of the labels' own terms, so the statistics of many
workers, or of one learning in mini-batches of any size, merge into one learner's but for
float rounding; the weights are solved for when read. A fit on the log scale forecasts a
typical spend, not the mean; the forecast is scaled by ``c = sum(w y p) / sum(w p^2)``, the
least-squares factor from the log model's forecasts ``p`` to the spend that followed, each ``p``
the one served when the label's example was taken (before the scale; kept in the example, 0
if the model did not serve yet), not one made again when the label is learned.

Labels decay with forward decay (Cormode et al. 2009): a label served at ``t`` weighs
``2 ** (t / half_life)``, so the sums of every worker share one scale and still add.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from online_models.customer.activity import DAY

__all__ = [
    "MIN_VALUE_HALFLIFE_DAYS",
    "SPEND_FEATURES",
    "SpendModel",
    "SpendShare",
    "merge_spend",
    "spend_features",
]

logger = logging.getLogger(__name__)

#: The regression's features, in the order of its arrays: log1p of the net spend to date and
#: log1p of BG/NBD + Gamma-Gamma's forecast of spend over the horizon.
SPEND_FEATURES = ("log_spend_to_date", "log_bgnbd_value")
_FEATURES = len(SPEND_FEATURES)
_BASE = SPEND_FEATURES.index("log_bgnbd_value")
_ARRAYS = ("gram", "moment", "calibration")
_MAX_LOG_SPEND = 30.0
#: The shortest half-life whose forward-decay weights stay finite in float64 to the year 2100
#: (2 ** (4.1e9 s / half-life) times sums of forecasts up to e**30 squared).
MIN_VALUE_HALFLIFE_DAYS = 60.0


def spend_features(net_spend: np.ndarray, bgnbd_value: np.ndarray) -> np.ndarray:
    """The regression's feature matrix, one row per customer.

    >>> spend_features(np.array([0.0, np.e - 1]), np.array([0.0, 0.0])).tolist()
    [[0.0, 0.0], [1.0, 0.0]]
    """
    return np.column_stack(
        [np.log1p(np.maximum(net_spend, 0.0)), np.log1p(np.maximum(bgnbd_value, 0.0))]
    )


@dataclass(frozen=True, slots=True)
class SpendShare:
    """The regression's shared part, or what one worker learned since its last delta.

    With ``z = (features, 1)``, ``r = log1p(spend) - log_bgnbd_value`` and each label's
    forward-decay weight ``w``: ``gram`` is ``sum(w z z')``, ``moment`` ``sum(w z r)``,
    ``calibration`` ``(sum(w y p), sum(w p^2))`` and ``labels`` the labels learned. Every one
    is a sum: two shares merge by adding them.
    """

    gram: np.ndarray
    moment: np.ndarray
    calibration: np.ndarray
    labels: int

    @classmethod
    def zero(cls) -> SpendShare:
        """Nothing learned."""
        size = _FEATURES + 1
        return cls(np.zeros((size, size)), np.zeros(size), np.zeros(2), 0)

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Metadata and arrays for a model record."""
        meta = {"labels": self.labels, "features": SPEND_FEATURES}
        return meta, {name: getattr(self, name) for name in _ARRAYS}

    @classmethod
    def from_arrays(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> SpendShare:
        """The share a model record carries; ValueError if it does not fit the regression."""
        if list(meta.get("features") or ()) != list(SPEND_FEATURES):
            msg = f"spend share of features {meta.get('features')}, not {list(SPEND_FEATURES)}"
            raise ValueError(msg)
        size = _FEATURES + 1
        shapes = {"gram": (size, size), "moment": (size,), "calibration": (2,)}
        values = {name: np.asarray(arrays[name], dtype=float) for name in _ARRAYS}
        if any(v.shape != shapes[n] or not np.isfinite(v).all() for n, v in values.items()):
            msg = f"spend share arrays must be finite, of shapes {shapes}"
            raise ValueError(msg)
        if int(meta["labels"]) < 0 or (np.diag(values["gram"]) < 0).any():
            msg = "spend share has a negative label count or weight"
            raise ValueError(msg)
        return cls(labels=int(meta["labels"]), **values)


def merge_spend(a: SpendShare, b: SpendShare) -> SpendShare:
    """``a`` and ``b`` together: every statistic is a sum, so they add (exactly as one
    learner that saw both workers' labels, but for float rounding).

    >>> one = SpendShare(np.eye(3), np.ones(3), np.ones(2), 1)
    >>> merge_spend(one, one).labels, float(merge_spend(one, one).gram[0, 0])
    (2, 2.0)
    """
    return SpendShare(
        a.gram + b.gram, a.moment + b.moment, a.calibration + b.calibration, a.labels + b.labels
    )


class SpendModel:
    """Ridge regression of ``log1p`` spend over the horizon, residual to BG/NBD + Gamma-Gamma.

    ``ridge`` penalises the weights of the standardised features, in units of labels (as if
    that many labels said the weights were zero); the intercept is not penalised.
    ``half_life_days`` is the forward decay of old labels (0: none). ``warmup_labels`` is how
    many labels the model needs before :attr:`ready` (before it, the scorer serves BG/NBD +
    Gamma-Gamma's forecast).

    >>> model = SpendModel(warmup_labels=2)
    >>> x = spend_features(np.array([100.0, 10_000.0]), np.array([50.0, 50.0]))
    >>> model.learn_many(x, np.array([20.0, 4_000.0]), np.zeros(2), model.unscaled_many(x))
    >>> model.ready, bool(np.diff(model.predict_many(x))[0] > 0)
    (True, True)
    """

    def __init__(
        self, half_life_days: float = 180.0, ridge: float = 1.0, warmup_labels: int = 500
    ) -> None:
        if 0 < half_life_days < MIN_VALUE_HALFLIFE_DAYS:
            msg = f"half_life_days must be 0 or at least {MIN_VALUE_HALFLIFE_DAYS:g}"
            raise ValueError(msg)
        self.half_life_days = half_life_days
        self.ridge = ridge
        self.warmup_labels = warmup_labels
        self._base = SpendShare.zero()  # the group's share and this worker's sent deltas
        self._unsent = SpendShare.zero()
        # The weights, intercept and calibration scale the statistics solve to (None: stale).
        self._solved: tuple[np.ndarray, float, float] | None = None
        # Each feature's weight on the log scale (the residual's own plus 1 for BG/NBD's) and
        # the labels' weighted mean of it: what :meth:`terms_one` centres on.
        self._centre = (np.eye(_FEATURES)[_BASE].tolist(), [0.0] * _FEATURES)

    @property
    def labels_learned(self) -> int:
        """How many labels the model (with the group's) has learned from."""
        return self._base.labels + self._unsent.labels

    @property
    def ready(self) -> bool:
        """Whether the forecast is served: at least ``warmup_labels`` labels learned."""
        return self.labels_learned >= self.warmup_labels

    def share(self) -> SpendShare:
        """The statistics the model forecasts with."""
        return merge_spend(self._base, self._unsent)

    def weight(self, times: np.ndarray) -> np.ndarray:
        """Forward-decay weights of labels served at event ``times``."""
        if self.half_life_days <= 0:
            return np.ones(np.shape(times))
        return np.exp2(np.asarray(times, dtype=float) / (self.half_life_days * DAY))

    def learn_one(self, x: Mapping[str, float], y: float, time: float, unscaled: float) -> None:
        """Learn one label: spend ``y`` over the horizon after a score with features ``x`` at
        event ``time``, whose forecast was ``unscaled`` (:meth:`unscaled_one` then)."""
        row = np.array([[x.get(name, 0.0) for name in SPEND_FEATURES]])
        self.learn_many(row, np.array([y]), np.array([time]), np.array([unscaled]))

    def learn_many(
        self, features: np.ndarray, spend: np.ndarray, times: np.ndarray, unscaled: np.ndarray
    ) -> None:
        """Learn labels: one row of ``features`` per label, the ``spend`` that followed, the
        event ``times`` they were served at and the forecasts served then before the
        calibration's scale (:meth:`unscaled_many` then: 0 before :attr:`ready`, which leaves
        the label out of the calibration, as the first labels' weights are loose and one wild
        forecast would outweigh every other). Every statistic is a sum of the labels' own
        terms, so it does not matter how they are split into batches or between workers."""
        if not len(spend):
            return
        x = np.asarray(features, dtype=float).reshape(-1, _FEATURES)
        y = np.maximum(np.asarray(spend, dtype=float), 0.0)
        w = self.weight(times)
        p = np.maximum(np.asarray(unscaled, dtype=float).reshape(-1), 0.0)
        z = np.column_stack([x, np.ones(len(x))])
        target = np.log1p(y) - x[:, _BASE]
        wz = z * w[:, None]
        delta = SpendShare(
            wz.T @ z, wz.T @ target, np.array([(w * y * p).sum(), (w * p * p).sum()]), len(y)
        )
        self._unsent = merge_spend(self._unsent, delta)
        self._solved = None

    def predict_one(self, x: Mapping[str, float]) -> float:
        """The forecast of spend over the horizon of one customer, in plain floats (a score
        at a time pays no array calls).

        >>> model = SpendModel()
        >>> x = {"log_spend_to_date": 5.0, "log_bgnbd_value": 4.0}
        >>> model.predict_one(x) == float(model.predict_many(np.array([[5.0, 4.0]]))[0])
        True
        """
        return self._solve()[2] * self._log_forecast_one(x)

    def predict_many(self, features: np.ndarray) -> np.ndarray:
        """The forecast of spend over the horizon, one per row of ``features``."""
        return self._solve()[2] * self._log_forecast(np.asarray(features, dtype=float))

    def unscaled_one(self, x: Mapping[str, float]) -> float:
        """What a value example keeps for the calibration: the forecast served, before the
        calibration's scale, once :attr:`ready` (0 before: served by BG/NBD, left out).

        >>> SpendModel(warmup_labels=1).unscaled_one({"log_bgnbd_value": 2.0})
        0.0
        """
        return self._log_forecast_one(x) if self.ready else 0.0

    def unscaled_many(self, features: np.ndarray) -> np.ndarray:
        """:meth:`unscaled_one` of every row of ``features``."""
        x = np.asarray(features, dtype=float).reshape(-1, _FEATURES)
        return self._log_forecast(x) if self.ready else np.zeros(len(x))

    def terms_one(self, x: Mapping[str, float]) -> list[float]:
        """Each feature's term of the log-scale forecast, relative to an average labelled
        customer: its weight (BG/NBD's plus 1, the residual's base) times how far the feature
        is from the labels' weighted mean of it. The terms add up to the forecast's
        ``log1p`` (before the calibration's scale and the clip at 0) minus an average
        customer's; in plain floats, as :meth:`predict_one`.

        >>> model = SpendModel()
        >>> model.terms_one({"log_spend_to_date": 5.0, "log_bgnbd_value": 4.0})
        [0.0, 4.0]
        """
        self._solve()
        weights, mean = self._centre
        return [
            weight * (x.get(name, 0.0) - centre)
            for name, weight, centre in zip(SPEND_FEATURES, weights, mean, strict=True)
        ]

    def terms_many(self, features: np.ndarray) -> np.ndarray:
        """:meth:`terms_one` of every row of ``features``, one column per feature."""
        self._solve()
        weights, mean = self._centre
        return (np.asarray(features, dtype=float) - mean) * np.asarray(weights)

    def delta(self) -> SpendShare:
        """What this model learned since its last delta."""
        delta = self._unsent
        self._base = merge_spend(self._base, delta)
        self._unsent = SpendShare.zero()
        return delta

    def apply(self, group: SpendShare, pending: Sequence[SpendShare] = ()) -> None:
        """Forecast with the group's statistics plus this model's not merged yet: its
        ``pending`` deltas and what it learned since the last one."""
        base = group
        for share in pending:
            base = merge_spend(base, share)
        self._base = base
        self._solved = None

    def _solve(self) -> tuple[np.ndarray, float, float]:
        """The weights and intercept: ridge on standardised features, solved in the raw
        features' units (a penalty of ``ridge * sd_j^2`` on raw weight ``j``); and the
        calibration's scale."""
        if self._solved is not None:
            return self._solved
        share = self.share()
        gram, total = share.gram, share.gram[-1, -1]
        yp, pp = share.calibration.tolist()
        scale = yp / pp if pp > 0 and yp > 0 else 1.0
        if total <= 0 or share.labels == 0:
            self._solved = (np.zeros(_FEATURES), 0.0, scale)
            self._centre = (np.eye(_FEATURES)[_BASE].tolist(), [0.0] * _FEATURES)
            return self._solved
        mean = gram[-1, :-1] / total
        var = np.maximum(np.diag(gram)[:-1] / total - mean * mean, 0.0)
        per_label = total / share.labels  # the ridge counts in labels of average weight
        penalty = np.r_[self.ridge * per_label * var, 0.0]
        # A feature that never varied (the first labels) gets a small penalty of its own.
        penalty += 1e-9 * total
        beta = np.linalg.solve(gram + np.diag(penalty), share.moment)
        self._solved = (beta[:-1], float(beta[-1]), scale)
        self._centre = ((beta[:-1] + np.eye(_FEATURES)[_BASE]).tolist(), mean.tolist())
        return self._solved

    def _log_forecast_one(self, x: Mapping[str, float]) -> float:
        """:meth:`_log_forecast` of one customer, in plain floats."""
        weights, intercept, _ = self._solve()
        log_spend = intercept
        for name, weight in zip(SPEND_FEATURES, weights.tolist(), strict=True):
            log_spend += weight * x.get(name, 0.0)
        log_spend += x.get(SPEND_FEATURES[_BASE], 0.0)
        return math.expm1(min(max(log_spend, 0.0), _MAX_LOG_SPEND))

    def _log_forecast(self, x: np.ndarray) -> np.ndarray:
        """expm1 of the log-scale forecast (before the calibration's scale), never below 0."""
        weights, intercept, _ = self._solve()
        log_spend = x[:, _BASE] + x @ weights + intercept
        # Far beyond any label (e**30 is 1e13): a wild input must not read as infinite.
        return np.expm1(np.clip(log_spend, 0.0, _MAX_LOG_SPEND))
