"""What a score is made of and from: the scorer's hyperparameters, the score a CRM reads,
a score's outcome, and what learning one event told."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from online_models.customer.profile import CustomerProfile
from online_models.scoring.alert_policy import AlertIntent, AlertThresholds
from online_models.scoring.reasons import ChurnReason
from online_models.scoring.state import CustomerState
from online_models.segments.density import DensitySegmenter
from online_models.segments.kmeans import Segmenter
from online_models.segments.outliers import Placement
from online_models.value.lifetime import LifetimeScore

__all__ = [
    "RESCORE_HORIZONS",
    "CustomerScore",
    "Learned",
    "Moved",
    "ScoreOutcome",
    "ScorerConfig",
    "make_segmenter",
]

logger = logging.getLogger(__name__)

#: Silent customers are re-scored until this many horizons of silence: long enough for their
#: last examples to be labelled and for the segments to learn where lapsed customers sit.
RESCORE_HORIZONS = 3.0


@dataclass(frozen=True, slots=True)
class ScorerConfig:
    """Hyperparameters of every model and the alert thresholds."""

    churn_horizon_days: float = 90.0
    churn_sample_interval_days: float = 1.0
    churn_silent_sample_days: float = 15.0
    churn_learning_rate: float = 0.1
    churn_l2: float = 1e-4
    churn_model: str = "logistic"
    rescore_interval_days: float = 1.0
    quality_window: int = 1000
    #: Segmentation: ``kmeans`` (online k-means, the default) or ``density`` (DBSTREAM).
    segment_model: str = "kmeans"
    segments: int = 6
    segment_halflife_days: float = 1.0
    segment_confirmations: int = 3
    #: density: how far a micro-cluster reaches, on the segment features' scales (DBSTREAM's
    #: clustering threshold).
    density_radius: float = 0.2
    #: density: the share of all the weight a micro-cluster needs to be dense.
    density_min_share: float = 0.002
    #: k-means: a customer whose distance to their segment (in units of its spread) is this
    #: many robust standard deviations (MAD x 1.4826) of the learned points' log distances
    #: above their median is an outlier (``segment_outlier``).
    outlier_mads: float = 2.5
    #: k-means: the share of the recent points' weight that outliers alike must hold in one
    #: place for the group's model to make them a segment of their own (0: never; 0.005,
    #: the default, is what was measured on Online Retail, README).
    segment_group_share: float = 0.005
    #: k-means: who may found a group segment: customers beyond this many robust standard
    #: deviations of the log distances above their median (nearer than ``outlier_mads``).
    segment_group_mads: float = 1.5
    #: k-means: how tight a group must be: its standard deviation at most this share of its
    #: nearest segment's robust one (root mean square over the features).
    segment_group_tightness: float = 0.5
    top_k: int = 10
    allow_repurchase: bool = False
    recommender_factors: int = 16
    item_buckets: int = 64
    co_purchase_neighbors: int = 50
    #: Weight of the catalogue's content similarity in the recommendations' blend (the
    #: factor, popularity and co-purchase weights are 2.0, 0.3 and 4.0; see the README).
    content_weight: float = 4.0
    #: Places at the end of each list for the catalogue's new items (nobody interacted with
    #: them yet) that match the customer's recent items best.
    new_item_slots: int = 1
    #: With a catalogue, recommend only the items it holds (False: also items it never named,
    #: but never one it marks unavailable or removed).
    recommend_catalogue_only: bool = True
    #: A silent customer's re-score serves the list ranked at their latest event or ranking
    #: for this many event-time days (0: rank at every score); see ``recommend_many``.
    rerank_silent_days: float = 7.0
    hit_rate_sample_every: int = 4
    #: EASE, fitted by the group's model from the ownership counts (``recommend.ease``): over
    #: the ``ease_items`` most owned items (0: no EASE), L2 strength ``ease_strength`` (in
    #: customers), each item keeping its ``ease_neighbors`` strongest weights, refitted every
    #: ``ease_refit_days`` of event time.
    ease_items: int = 4000
    ease_strength: float = 500.0
    ease_neighbors: int = 50
    ease_refit_days: float = 1.0
    value_recency_halflife_days: float = 30.0
    clv_horizon_days: float = 365.0
    lifetime_sample: int = 5_000
    lifetime_refit_days: float = 1.0
    #: The value regression (``online_models.value.spend``), labelled over the churn horizon:
    #: a customer who ordered leaves a value example at most every ``value_sample_days``;
    #: labels lose half their weight every ``value_halflife_days`` (0: never); ``value_ridge``
    #: shrinks the standardised weights, in labels; ``predicted_clv`` is the regression's once
    #: it has learned ``value_warmup_labels`` labels, BG/NBD + Gamma-Gamma's before.
    value_sample_days: float = 7.0
    value_halflife_days: float = 180.0
    value_ridge: float = 1.0
    value_warmup_labels: int = 500
    #: The churn risk served: this weight on the logistic model, the rest on BG/NBD's chance
    #: of no order within the horizon (customers who ever ordered; the quality benchmark's
    #: winner: 0.742 and 0.752 AUC on Online Retail against 0.730 and 0.745 for either alone).
    churn_logistic_weight: float = 0.5
    alerts: AlertThresholds = field(default_factory=AlertThresholds)


class CustomerScore(NamedTuple):
    """What the CRM reads about a customer, as of event time ``as_of``.

    Recommendations are not part of it: they are ranked when the score is published
    (:meth:`CustomerScorer.recommend`), once however many events a customer sent meanwhile.
    A named tuple: a batch of re-scores builds thousands of them from its columns at once.
    ``churn_reasons`` of a re-score are phrased when first read (:class:`LazyReasons`).
    """

    churn_risk: float
    segment: int
    segment_name: str
    value: float
    monetary: float
    orders: int
    sentiment: float | None
    event_time: float
    as_of: float
    model_version: str
    p_alive: float = 1.0
    expected_orders: float = 0.0
    predicted_clv: float = 0.0
    next_order_expected: float | None = None
    churn_reasons: Sequence[ChurnReason] = ()
    #: Whether the customer fits no segment (far from every centre, or in no dense region).
    segment_outlier: bool = False
    #: Percentile rank of the customer's distance to the segments among everyone's, 0..1;
    #: None (unknown) while their segment is too young to tell.
    outlier_score: float | None = 0.0
    #: The factors behind ``predicted_clv``, strongest first (the value reasons' shape is the
    #: churn reasons'); phrased when first read in a batch.
    value_reasons: Sequence[ChurnReason] = ()

    @classmethod
    def of_profile(
        cls,
        profile: CustomerProfile,
        *,
        churn_risk: float,
        segment: int,
        segment_name: str,
        value: float,
        as_of: float,
        model_version: str,
        outlook: LifetimeScore | None,
        churn_reasons: tuple[ChurnReason, ...],
        placement: Placement | None = None,
        value_reasons: Sequence[ChurnReason] = (),
    ) -> CustomerScore:
        """The score of a customer with ``profile``: risk and value clipped to 0..1, no
        lifetime outlook (None) for a cancelled customer, and the outlier fields of the
        ``placement`` of their segment features."""
        return cls(
            churn_risk=min(max(churn_risk, 0.0), 1.0),
            segment=segment,
            segment_name=segment_name,
            value=min(max(value, 0.0), 1.0),
            monetary=profile.net_monetary,
            orders=profile.orders,
            sentiment=profile.sentiment,
            event_time=profile.last_seen,
            as_of=as_of,
            model_version=model_version,
            p_alive=0.0 if outlook is None else outlook.p_alive,
            expected_orders=0.0 if outlook is None else outlook.expected_orders,
            predicted_clv=0.0 if outlook is None else outlook.predicted_clv,
            next_order_expected=None if outlook is None else outlook.next_order_expected,
            churn_reasons=churn_reasons,
            segment_outlier=placement is not None and placement.outlier,
            outlier_score=None if placement is None else known_score(placement.outlier_score),
            value_reasons=value_reasons,
        )

    @property
    def value_at_risk(self) -> float:
        """What the CRM stands to lose: churn risk times predicted spend (CLV)."""
        return self.churn_risk * self.predicted_clv


def known_score(outlier_score: float) -> float | None:
    """A placement's ``outlier_score`` as a score serves it: None (unknown) for NaN."""
    return None if math.isnan(outlier_score) else outlier_score


def make_segmenter(config: ScorerConfig) -> Segmenter | DensitySegmenter:
    """The segmentation model ``config.segment_model`` names."""
    if config.segment_model == "density":
        return DensitySegmenter(
            clustering_threshold=config.density_radius,
            halflife_days=config.segment_halflife_days,
            minimum_weight_share=config.density_min_share,
        )
    if config.segment_model == "kmeans":
        return Segmenter(
            n_segments=config.segments,
            halflife_days=config.segment_halflife_days,
            outlier_mads=config.outlier_mads,
            group_share=config.segment_group_share,
            group_mads=config.segment_group_mads,
            group_tightness=config.segment_group_tightness,
        )
    msg = f"segment_model must be kmeans or density, got {config.segment_model!r}"
    raise ValueError(msg)


class ScoreOutcome(NamedTuple):
    """A score: the customer's state and score, alerts raised and churn labels learned.

    ``changed`` says whether ``state`` differs from what was stored before (an event always
    changes it; a re-score of a silent customer only sometimes).
    """

    state: CustomerState
    score: CustomerScore
    alerts: list[AlertIntent]
    labels: list[bool]
    changed: bool = True


class Moved(NamedTuple):
    """What a score's placement changed for the customer: the segment they left (None when
    they stayed), and whether they just became an outlier (for as many scores in a row as a
    segment change needs)."""

    left: int | None
    became_outlier: bool


class Learned(NamedTuple):
    """What learning one event told (:meth:`CustomerScorer.learn_event`): the churn labels it
    gave the customer's pending examples, its text's sentiment (None: no text), whether it
    cancelled a subscription that was not, and whether it is the customer's first event of
    an event-time day (a segment point is learned for it)."""

    labels: list[bool]
    tone: float | None
    newly_cancelled: bool
    new_day: bool
