"""Re-scores of many silent customers at once: the models' numbers as arrays, one batch a call.

:meth:`CustomerScorer.refresh_many` does what :meth:`CustomerScorer.refresh` does for each
customer of a batch, all at one event time, as array work over the batch: the states are read
into columns once (profiles, votes, alert flags, the pending examples' times), the churn
features become a matrix, the logistic risk and its per-feature terms come from one scaling
and one product, BG/NBD's outlook and chance of no order from arrays (``hyp2f1`` is a ufunc),
the value ranks from one cumulative sum, every customer's distance to every segment centre at
once with its outlier score from one cumulative sum of the distance histogram; the segment
votes and outlier streaks are counted over arrays
(:mod:`online_models.scoring.batch_votes`), and the scores are built from the columns.

What is one customer's is done only for the customers it concerns, which on a day are few:
labelling the examples whose horizon passed, taking a new example, writing votes that changed,
and the alert policy where it may act (:meth:`AlertPolicy.churn_may_act`, a segment left, a
new outlier). A state no re-score changed is not written to. The reasons' phrases wait until
a score's reasons are read (:class:`~online_models.scoring.reasons.LazyReasons`).

Within a batch the models learn as a mini-batch:

- the churn labels that fell due are learned first, in the batch's order
  (:meth:`ChurnModel.learn_many`: the same steps as one ``learn_one`` each), and every customer
  of the batch is then scored with the model that learned them all; one by one, a customer is
  scored with the labels of the customers before them and their own;
- the segment centres learn the batch's points after assigning them all
  (:meth:`Segmenter.learn_place_many`), and each point's outlier score is ranked against the
  distances learned before the batch; one by one, each point is assigned and ranked with the
  centres and distances the points before it moved;
- the lifetime sample takes every customer's totals in order and refits when due after the
  first whose time makes it due, exactly as one by one.

A batch of fewer than :data:`MIN_BATCH` customers is re-scored one by one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from itertools import chain
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import numpy as np

from online_models.customer.activity import DAY
from online_models.customer.profile import CHURN_FEATURES
from online_models.scoring.alert_policy import AlertIntent, AlertState
from online_models.scoring.batch_features import (
    ProfileColumns,
    ProfileFields,
    churn_feature_matrix,
    segment_feature_matrix,
)
from online_models.scoring.batch_votes import NO_SEGMENT, Votes
from online_models.scoring.reasons import CANCELLED_REASONS, TOP_REASONS, LazyReasons, ReasonBook
from online_models.scoring.score_types import CustomerScore, Moved, ScoreOutcome, known_score
from online_models.scoring.state import CustomerState
from online_models.segments.density import UNUSUAL
from online_models.segments.outliers import Placements

if TYPE_CHECKING:
    from online_models.churn.labels import PendingExample
    from online_models.scoring.reasons import ChurnReason
    from online_models.scoring.scorer import CustomerScorer
__all__ = ["MIN_BATCH", "rescore_many"]

logger = logging.getLogger(__name__)

#: Reasons a re-score can give: the churn features' terms, then BG/NBD's shift of the log-odds.
_FACTORS = (*CHURN_FEATURES, "expected_orders")

OnError = Callable[[str, Exception], None]
P = ParamSpec("P")
T = TypeVar("T")
#: Smaller batches are re-scored one by one (:meth:`CustomerScorer.refresh`): on this
#: project's machine, with benchmarks/rescore.py's population, a re-score in a batch of 4 cost
#: 230 us, in a batch of 8 130, of 12 90, of 16 70; one by one, 140.
MIN_BATCH = 8


class _Empty(list[Any]):
    """An empty list that stays empty: the outcomes with no alert or label (most of a
    batch's) share it, where a list each was two more objects per re-score for the garbage
    collector to follow."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        msg = "the alerts and labels of re-scores that have none share this list: copy it"
        raise TypeError(msg)

    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse


_NONE: list[Any] = _Empty()
_PROFILE = attrgetter("profile")
_PENDING = attrgetter("pending")
_FLAGS = (attrgetter("cancelled"), attrgetter("alerts.churn_armed"))
_NO_EXAMPLE = (np.inf, np.nan)
_VALUE_PENDING = attrgetter("value_pending")
_NO_VALUE = (np.inf, -np.inf)


def _value_times(pending: list[list[float]]) -> tuple[float, float]:
    """The times of the oldest and the latest value example (inf and -inf for none)."""
    return (pending[0][0], pending[-1][0]) if pending else _NO_VALUE


def _pending_times(pending: list[PendingExample]) -> tuple[float, float]:
    """The times of the oldest and the latest pending example (inf and NaN for none)."""
    return (pending[0].time, pending[-1].time) if pending else _NO_EXAMPLE


def rescore_many(
    scorer: CustomerScorer,
    customers: Sequence[tuple[str, CustomerState]],
    now: float,
    on_error: OnError | None = None,
) -> list[ScoreOutcome]:
    """The body of :meth:`CustomerScorer.refresh_many`."""
    if len(customers) < MIN_BATCH or scorer.churn_model.kind != "logistic":
        # Arrays cost about a hundred numpy calls a batch, whatever its size: below
        # MIN_BATCH customers that is more than they save. The tree gives no terms to batch.
        return _one_by_one(scorer, customers, now, on_error)
    try:
        batch = _Batch(scorer, customers, now)
    except Exception:
        if on_error is None:
            raise
        # A state that does not read as numbers (a bug, an unreadable record): one by one,
        # so that it alone fails.
        logger.debug("A batch of %d states did not read: one by one", len(customers))
        return _one_by_one(scorer, customers, now, on_error)
    return batch.rescore(on_error)


def _guarded(
    on_error: OnError | None, customer_id: str, step: Callable[P, T], *args: P.args, **kw: P.kwargs
) -> T | None:
    """``step(*args)``; with ``on_error``, an exception goes to it instead (result None)."""
    if on_error is None:
        return step(*args, **kw)
    try:
        return step(*args, **kw)
    except Exception as error:
        on_error(customer_id, error)
        return None


def _one_by_one(
    scorer: CustomerScorer,
    customers: Sequence[tuple[str, CustomerState]],
    now: float,
    on_error: OnError | None,
) -> list[ScoreOutcome]:
    outcomes = []
    for customer_id, state in customers:
        outcome = _guarded(on_error, customer_id, scorer.refresh, customer_id, state, now)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


class _Batch:
    """One batch of re-scores: the states read as columns, the models' array work, and the
    few customers' bookkeeping that is theirs alone."""

    def __init__(
        self,
        scorer: CustomerScorer,
        customers: Sequence[tuple[str, CustomerState]],
        now: float | np.ndarray,
    ) -> None:
        """Read the states, to be scored at ``now`` (one time, or one per customer; never
        before a customer's latest event); changes nothing (raises for a state whose fields
        do not read)."""
        self.scorer = scorer
        self.now = float(np.max(now))  # a re-score's one time (its one-by-one fallback)
        self.horizon = scorer.config.churn_horizon_days * DAY
        self.customer_ids = [customer_id for customer_id, _ in customers]
        self.states = [state for _, state in customers]
        self.fields = ProfileFields.of(list(map(_PROFILE, self.states)))
        self.columns = self.fields.columns()
        count = len(self.states)
        self.cancelled, self.armed = np.array(
            [list(map(read, self.states)) for read in _FLAGS], dtype=bool
        ).reshape(2, count)
        self.votes = Votes.of(self.states)
        # The oldest example (due for a label first) and the latest example or event (when
        # to take another) of each customer.
        times = np.fromiter(
            chain.from_iterable(map(_pending_times, map(_PENDING, self.states))), float, 2 * count
        ).reshape(count, 2)
        self.oldest = times[:, 0]
        self.newest = np.where(np.isnan(times[:, 1]), self.columns.last_seen, times[:, 1])
        self.at = np.maximum(now, self.columns.last_seen)
        self.labels: list[list[bool]] = [_NONE] * count
        self.labelled = np.zeros(count, dtype=bool)
        times = np.fromiter(
            chain.from_iterable(map(_value_times, map(_VALUE_PENDING, self.states))),
            float, 2 * count,
        ).reshape(count, 2)  # fmt: skip
        self.value_oldest, self.value_newest = times[:, 0], times[:, 1]
        self.value_labelled = np.zeros(count, dtype=bool)
        self.examples: list[dict[str, float]] = []  # due for learning, in order

    def rescore(self, on_error: OnError | None) -> list[ScoreOutcome]:
        """Label, learn, score; the outcomes of the customers whose re-score did not fail."""
        failed = [
            i
            for i in np.flatnonzero(self.at - self.oldest >= self.horizon).tolist()
            if _guarded(on_error, self.customer_ids[i], self._label, i) is None
        ]
        failed += [  # not one that failed: its value labels would be learned, then again
            i
            for i in np.flatnonzero(self.at - self.value_oldest >= self.horizon).tolist()
            if i not in failed
            and _guarded(on_error, self.customer_ids[i], self._label_value, i) is None
        ]
        if failed:
            self._drop(failed)
        if not self.states:
            return []
        try:
            self._observe_lifetime()
            self.scorer.churn_model.learn_many(self.examples, [True] * len(self.examples))
            self._predict()
        except Exception:
            if on_error is None:
                raise
            # Whatever broke the arrays must not cost every customer of the batch their score.
            logger.exception("Re-scoring %d customers together failed", len(self.states))
            return self._one_by_one(on_error)
        return self._finish(on_error)

    def _label(self, i: int) -> bool:
        """Label "churned" the ``i``-th customer's examples whose horizon passed (what
        :meth:`CustomerScorer.refresh` does before scoring)."""
        scorer, state = self.scorer, self.states[i]
        now = float(self.at[i])
        labels: list[bool] = []
        waiting = []
        for example in state.pending:
            if now - example.time >= self.horizon:
                scorer.quality.update(example.risk, True, served_at=example.time, now=now)
                scorer.pending_labels = max(scorer.pending_labels - 1, 0)
                self.examples.append(example.features)
                labels.append(True)
            else:
                waiting.append(example)
        state.pending = waiting
        self.labels[i] = labels
        self.labelled[i] = bool(labels)
        self.newest[i] = waiting[-1].time if waiting else self.columns.last_seen[i]
        return True

    def _label_value(self, i: int) -> bool:
        """Label the ``i``-th customer's value examples whose horizon passed."""
        state = self.states[i]
        self.value_labelled[i] = self.scorer._resolve_value(state, float(self.at[i]), event=False)
        self.value_newest[i] = state.value_pending[-1][0] if state.value_pending else -np.inf
        return True

    def _drop(self, rows: list[int]) -> None:
        """Leave out the customers of ``rows`` (their re-score failed)."""
        keep = np.setdiff1d(np.arange(len(self.states)), sorted(set(rows)))
        kept = keep.tolist()
        for name in ("customer_ids", "states", "labels"):
            setattr(self, name, [getattr(self, name)[i] for i in kept])
        self.fields = ProfileFields(*([column[i] for i in kept] for column in self.fields))
        self.columns = ProfileColumns(*(column[keep] for column in self.columns))
        self.votes = Votes(*(column[keep] for column in self.votes))
        for name in ("cancelled", "armed", "oldest", "newest", "at", "labelled",
                     "value_oldest", "value_newest", "value_labelled"):  # fmt: skip
            setattr(self, name, getattr(self, name)[keep])

    def _one_by_one(self, on_error: OnError) -> list[ScoreOutcome]:
        """The batch's customers re-scored with :meth:`CustomerScorer.refresh` (the labels
        taken so far kept in their outcomes)."""
        outcomes = []
        for customer_id, state, labels in zip(
            self.customer_ids, self.states, self.labels, strict=True
        ):
            outcome = _guarded(
                on_error, customer_id, self.scorer.refresh, customer_id, state, self.now
            )
            if outcome is not None:
                outcome.labels[:0] = labels
                outcomes.append(outcome)
        return outcomes

    def _observe_lifetime(self) -> None:
        """Every customer's totals to the lifetime sample, in order, and a refit after the
        first whose time makes it due (as one by one)."""
        lifetime, columns, at = self.scorer.lifetime_model, self.columns, self.at
        start, count = 0, len(self.states)
        while start < count:
            due = np.flatnonzero(lifetime.fits_due(at[start:]))
            stop = count if not len(due) else start + int(due[0]) + 1
            part = slice(start, stop)
            lifetime.observe_many(
                self.customer_ids[part], first=columns.first_order_at[part],
                last=columns.last_order_at[part], orders=columns.orders[part],
                spend=columns.net_monetary[part], now=at[part],
            )  # fmt: skip
            if len(due):
                lifetime.fit(float(at[stop - 1]))
            start = stop

    def _predict(self) -> None:
        """Every model's numbers for every customer, with the batch's labels learned."""
        scorer, columns, at, cancelled = self.scorer, self.columns, self.at, self.cancelled
        cfg = scorer.config
        self.features = churn_feature_matrix(columns, at)
        logistic, terms = scorer.churn_model.risk_and_contributions_many(self.features)
        outlook = scorer.lifetime_model.predict_many(
            first=columns.first_order_at, last=columns.last_order_at, orders=columns.orders,
            spend=columns.net_monetary, now=at, horizon_days=cfg.churn_horizon_days,
            clv_days=cfg.clv_horizon_days,
        )  # fmt: skip
        scorer._learn_value_labels(self.now)
        self.outlook, self.value_x, self.value_forecast = scorer._value_outlooks(
            columns.net_monetary, outlook, columns.orders >= 1
        )
        weight = cfg.churn_logistic_weight
        bought = ~np.isnan(outlook.no_order)
        blended = np.where(bought, weight * logistic + (1.0 - weight) * outlook.no_order, logistic)
        self.risk = np.where(cancelled, 1.0, blended)
        # BG/NBD's half, in the terms' units: how far it moved the log-odds (a reason if up).
        shift = _logit(self.risk) - _logit(logistic)
        terms = np.column_stack([terms, np.where(shift > 0, shift, 0.0)])
        self.take = self._takes()
        self.placements = self._place(segment_feature_matrix(columns, at))
        self.value = scorer.value_model.value_many(
            columns.net_monetary, columns.orders, columns.days_since_order(at)
        )
        top = np.argsort(-terms, axis=1, kind="stable")[:, :TOP_REASONS]
        contributions = np.take_along_axis(terms, top, axis=1)
        self.reasons = ReasonBook(
            _FACTORS, np.where(contributions > 0, top, -1), contributions, profiles=self.fields,
            now=at, expected_orders=outlook.expected_orders, no_order=outlook.no_order,
            horizon_days=cfg.churn_horizon_days,
        )  # fmt: skip
        self.has_reasons = contributions[:, 0] > 0

    def _takes(self) -> np.ndarray:
        """Who takes a new pending example: a silent customer every
        ``churn_silent_sample_days`` within the horizon."""
        at, silent_days = self.at, self.scorer.config.churn_silent_sample_days
        return (
            ~self.cancelled
            & (at - self.columns.last_seen < self.horizon)
            & (at - self.newest >= silent_days * DAY)
        )

    def _place(self, points: np.ndarray) -> Placements:
        """Every customer's placement, each point learned (a re-score always counts)."""
        return self.scorer.segmenter.learn_place_many(points, self.at)

    def _counted(self) -> np.ndarray | None:
        """Which scores count as a step of an outlier streak (None: all)."""
        return None

    def _changed(self) -> np.ndarray:
        """Whose state changed before examples, votes and alerts: those labelled."""
        return self.labelled.copy()

    def _finish(self, on_error: OnError | None) -> list[ScoreOutcome]:
        """Examples, votes, scores and alerts; the outcomes, failed customers left out."""
        changed = self._changed()
        failed: set[int] = set()
        for i in np.flatnonzero(self.take).tolist():
            if _guarded(on_error, self.customer_ids[i], self._take_example, i) is None:
                failed.add(i)
        changed |= self.take | self.value_labelled | self._take_values()
        confirmed = self.votes.confirm(
            self.placements.segments, self.placements.outliers,
            self.scorer.config.segment_confirmations, self.scorer.segmenter.current,
            generation=self.scorer.segmenter.generation, counts=self._counted(),
        )  # fmt: skip
        voted = confirmed.votes.changed(self.votes)
        confirmed.votes.write(self.states, voted)
        changed[voted] = True
        placed = self.placements.segments
        served = np.where(placed == UNUSUAL, UNUSUAL, confirmed.votes.segment)
        scores = self._scores(np.where(served == NO_SEGMENT, 0, served))
        alerts: list[list[AlertIntent]] = [_NONE] * len(scores)
        outlook, risk = self.outlook, np.minimum(np.maximum(self.risk, 0.0), 1.0)
        clv = np.where(self.cancelled, 0.0, outlook.predicted_clv)
        acting = (
            self.scorer._policy.churn_may_act(
                risk, self.armed, risk * clv, self.scorer.churn_model.labels_learned
            )
            & ~self.cancelled
        )
        acting |= (confirmed.left != NO_SEGMENT) | confirmed.became_outlier
        for i in np.flatnonzero(acting).tolist():
            left = int(confirmed.left[i])
            raised = _guarded(
                on_error, self.customer_ids[i], self._alerts, i, scores[i],
                None if left == NO_SEGMENT else left, bool(confirmed.became_outlier[i]),
            )  # fmt: skip
            if raised is None:
                failed.add(i)
                continue
            alerts[i], changed[i] = raised[0], changed[i] or raised[1]
        outcomes: Iterable[tuple[CustomerState, CustomerScore, list[AlertIntent], list[bool], bool]]
        outcomes = zip(self.states, scores, alerts, self.labels, changed.tolist(), strict=True)
        if failed:
            outcomes = (outcome for i, outcome in enumerate(outcomes) if i not in failed)
        return list(map(partial(tuple.__new__, ScoreOutcome), outcomes))

    def _take_values(self) -> np.ndarray:
        """Value examples of those due one (see ``ValueLearning._takes_value``)."""
        spacing, at = self.scorer.config.value_sample_days * DAY, self.at
        take = ~self.cancelled & (self.columns.orders >= 1) & (at - self.value_newest >= spacing)
        take &= at - self.columns.last_seen <= self.scorer._last_value_silence()
        rows, at, forecast = np.flatnonzero(take), self.at.tolist(), self.value_forecast.tolist()
        for i, x in zip(rows.tolist(), self.value_x[rows].tolist(), strict=True):
            self.scorer._take_value(self.states[i], at[i], x, forecast[i])
        return take

    def _take_example(self, i: int) -> bool:
        """A new pending example of the ``i``-th customer: their features as scored now."""
        features = dict(zip(CHURN_FEATURES, self.features[i].tolist(), strict=True))
        self.scorer._take_example(self.states[i], float(self.at[i]), features, float(self.risk[i]))
        return True

    def _scores(self, served: np.ndarray) -> list[CustomerScore]:
        """Every customer's score, from the columns (what ``CustomerScore.of_profile``
        makes of each)."""
        describe = self.scorer.segmenter.describe
        names = {segment: describe(segment) for segment in np.unique(served).tolist()}
        outlook, cancelled, columns = self.outlook, self.cancelled, self.columns
        lifetime = [
            np.where(cancelled, 0.0, column).tolist()
            for column in (outlook.p_alive, outlook.expected_orders, outlook.predicted_clv)
        ]
        next_order: list[float | None] = np.where(
            cancelled, np.nan, outlook.next_order_expected
        ).tolist()
        for i in np.flatnonzero(np.isnan(outlook.next_order_expected) | cancelled).tolist():
            next_order[i] = None
        columns_of_scores = (
            np.minimum(np.maximum(self.risk, 0.0), 1.0).tolist(),
            served.tolist(),
            list(map(names.__getitem__, served.tolist())),
            np.minimum(np.maximum(self.value, 0.0), 1.0).tolist(),
            columns.net_monetary.tolist(),
            self.fields.orders,
            self.fields.sentiment,
            self.fields.last_seen,
            self.at.tolist(),
            [self.scorer.model_version] * len(served),
            *lifetime,
            next_order,
            self._reasons(),
            self.placements.outliers.tolist(),
            list(map(known_score, self.placements.outlier_scores.tolist())),
            self.scorer._value_reasons_many(columns, outlook, self.value_x, cancelled),
        )
        # One column per field, in order: each score is a tuple of the columns' values, made
        # without the check of CustomerScore._make (a Python call per score).
        assert len(columns_of_scores) == len(CustomerScore._fields)
        fields = zip(*columns_of_scores, strict=True)
        return list(map(partial(tuple.__new__, CustomerScore), fields))

    def _reasons(self) -> list[Sequence[ChurnReason]]:
        """Each score's churn reasons, phrased when read."""
        book = self.reasons
        reasons: list[Sequence[ChurnReason]] = [
            LazyReasons(book, i) if has else () for i, has in enumerate(self.has_reasons.tolist())
        ]
        for i in np.flatnonzero(self.cancelled).tolist():
            reasons[i] = CANCELLED_REASONS
        return reasons

    def _alerts(
        self, i: int, score: CustomerScore, left: int | None, became_outlier: bool
    ) -> tuple[list[AlertIntent], bool]:
        """The ``i``-th customer's alerts, and whether their alert state changed."""
        state = self.states[i]
        before = state.alerts
        state.alerts = AlertState(before.churn_armed, dict(before.last_alert_at))
        alerts = self.scorer._alerts(
            state, score, Moved(left, became_outlier), float(self.at[i]), None, self._kind(i)
        )
        return alerts, state.alerts != before

    def _kind(self, i: int) -> str:
        """What the ``i``-th score is for, as the alert policy reads it (``silence``: a
        re-score)."""
        return "silence"


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1.0 - 1e-9)
    return np.log(p / (1.0 - p))
