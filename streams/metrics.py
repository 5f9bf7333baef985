"""Every Prometheus metric of the worker, built against a registry it is given."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schemas.alerts import AlertType
from schemas.events import DEAD_LETTER_REASONS, EventType
from schemas.model_records import REFUSAL_REASONS

__all__ = ["CATALOGUE_OUTCOMES", "EVENT_OUTCOMES", "ScorerMetrics"]

logger = logging.getLogger(__name__)

EVENT_OUTCOMES = ("scored", "duplicate", "dead_lettered", "skipped", "erased")
#: What became of a catalogue record this worker read.
CATALOGUE_OUTCOMES = ("applied", "removed", "refused")
# Label values for event types are this fixed set; anything else is "other".
_EVENT_TYPE_LABELS = (*(t.value for t in EventType), "other")
_ALERT_TYPE_LABELS = frozenset(t.value for t in AlertType)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BYTE_BUCKETS = tuple(float(4**n) for n in range(5, 14))  # 1 KiB .. 64 MiB


class ScorerMetrics:
    """The worker's metrics, all prefixed ``crm_scorer_``; no customer id is ever a label.

    >>> registry = CollectorRegistry()
    >>> metrics = ScorerMetrics(registry)
    >>> metrics.event("purchase", "scored")
    >>> labels = {"type": "purchase", "outcome": "scored"}
    >>> registry.get_sample_value("crm_scorer_events_total", labels)
    1.0
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events = Counter(
            "crm_scorer_events",
            "Events consumed, by type and outcome.",
            ["type", "outcome"],
            registry=registry,
        )
        self.processing_seconds = Histogram(
            "crm_scorer_processing_seconds",
            "Time to decode, learn from and score one event.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.event_to_redis_seconds = Histogram(
            "crm_scorer_event_to_redis_seconds",
            "Wall time from the event's Kafka timestamp to its score written in Redis.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=registry,
        )
        self.alerts = Counter(
            "crm_scorer_alerts", "Alerts published, by type.", ["type"], registry=registry
        )
        self.dead_letters = Counter(
            "crm_scorer_dead_letters",
            "Events sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.dead_letter_failures = Counter(
            "crm_scorer_dead_letter_failures",
            "Rejected events that could not be published to the dead-letter topic.",
            registry=registry,
        )
        self.redis_write_seconds = Histogram(
            "crm_scorer_redis_write_seconds",
            "Time of one Redis pipeline of score writes.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.redis_errors = Counter(
            "crm_scorer_redis_errors", "Failed Redis pipeline attempts.", registry=registry
        )
        self.redis_scores_written = Counter(
            "crm_scorer_redis_scores_written", "Score hashes written to Redis.", registry=registry
        )
        self.score_render_errors = Counter(
            "crm_scorer_score_render_errors",
            "Scores that failed to render at a flush and were dropped (a bug: see the log).",
            registry=registry,
        )
        self.redis_pending_scores = Gauge(
            "crm_scorer_redis_pending_scores",
            "Scores waiting to be written to Redis.",
            registry=registry,
        )
        self.redis_resyncs = Counter(
            "crm_scorer_redis_resyncs",
            "Times a restarted (emptied) Redis got every score of this worker written again.",
            registry=registry,
        )
        self.producer_pending = Gauge(
            "crm_scorer_producer_pending",
            "Changelog, alert and dead-letter records waiting for the Kafka producer.",
            registry=registry,
        )
        self.redis_paused = Gauge(
            "crm_scorer_redis_paused",
            "1 while consuming waits for Redis to take the scores buffered during an outage.",
            registry=registry,
        )
        self.churn_labels = Counter(
            "crm_scorer_churn_labels",
            "Delayed churn labels learned, by label.",
            ["label"],
            registry=registry,
        )
        self.churn_risk = Histogram(
            "crm_scorer_churn_risk",
            "Churn risk of the scores served.",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=registry,
        )
        self.churn_roc_auc = Gauge(
            "crm_scorer_churn_roc_auc",
            "ROC AUC of the churn risks served on the 7 latest event-time days whose horizon has "
            "closed, against their labels (NaN before).",
            registry=registry,
        )
        self.value_rank_correlation = Gauge(
            "crm_scorer_value_rank_correlation",
            "Spearman rank correlation of the value forecasts served on the 7 latest event-time "
            "days whose horizon has closed with the net spend that followed them (NaN before).",
            registry=registry,
        )
        self.value_labels = Gauge(
            "crm_scorer_value_labels",
            "Labels the value regression has learned (with the group's); predicted_clv is its "
            "forecast from CRM_VALUE_WARMUP_LABELS on.",
            registry=registry,
        )
        self.churn_log_loss = Gauge(
            "crm_scorer_churn_log_loss",
            "Rolling log loss of served churn scores on their delayed labels.",
            registry=registry,
        )
        self.churn_pending_labels = Gauge(
            "crm_scorer_churn_pending_labels",
            "Churn examples waiting for their label.",
            registry=registry,
        )
        self.churn_drifts = Counter(
            "crm_scorer_churn_drifts",
            "Changes in the churn model's error found by its ADWIN drift detector.",
            registry=registry,
        )
        self.recommendation_hit_rate = Gauge(
            "crm_scorer_recommendation_hit_rate",
            "Rolling share of new baskets whose first item was in the customer's top-K before.",
            registry=registry,
        )
        self.recommendation_arm_hit_rate = Gauge(
            "crm_scorer_recommendation_arm_hit_rate",
            "Each blend arm's recent hit rate on the baskets judged, as the group's model had "
            "it at its last EASE fit (the arm served is the best once enough were judged).",
            ["arm"],
            registry=registry,
        )
        self.recommendation_arm_served = Gauge(
            "crm_scorer_recommendation_arm_served",
            "1 for the blend arm this worker serves, 0 for the others.",
            ["arm"],
            registry=registry,
        )
        self.recommendation_ease_items = Gauge(
            "crm_scorer_recommendation_ease_items",
            "Items the group's EASE fit gave weights (0 before the first fit).",
            registry=registry,
        )
        self.rescores = Counter(
            "crm_scorer_rescores",
            "Scores of silent customers refreshed as event time moved on.",
            registry=registry,
        )
        self.rescore_errors = Counter(
            "crm_scorer_rescore_errors",
            "Re-scores of silent customers that failed (a bug or an unreadable state; see the "
            "log).",
            registry=registry,
        )
        self.rescores_scheduled = Gauge(
            "crm_scorer_rescores_scheduled",
            "Customers of this worker waiting for their next re-score.",
            registry=registry,
        )
        self.model_events_learned = Gauge(
            "crm_scorer_model_events_learned",
            "Events the models of this worker learned from.",
            registry=registry,
        )
        self.model_version = Gauge(
            "crm_scorer_model_version",
            "Version of the group model this worker scores with (0: none published yet).",
            registry=registry,
        )
        self.model_loaded = Gauge(
            "crm_scorer_model_loaded_timestamp_seconds",
            "Wall time this worker last applied a version of the group model (0 before).",
            registry=registry,
        )
        self.model_deltas_sent = Counter(
            "crm_scorer_model_deltas_sent",
            "Delta records (one per model part) this worker sent to the model-updates topic.",
            registry=registry,
        )
        self.model_deltas_merged = Counter(
            "crm_scorer_model_deltas_merged",
            "Delta records this worker merged into the group model, as its merger.",
            registry=registry,
        )
        self.model_versions_published = Counter(
            "crm_scorer_model_versions_published",
            "Versions of the group model this worker published, as its merger.",
            registry=registry,
        )
        self.model_records_refused = Counter(
            "crm_scorer_model_records_refused",
            "Records of the model topics refused (unsigned, another format, wrong shapes...).",
            ["reason"],
            registry=registry,
        )
        self.model_delta_bytes = Histogram(
            "crm_scorer_model_delta_bytes",
            "Bytes of one sync's delta records.",
            buckets=_BYTE_BUCKETS,
            registry=registry,
        )
        self.model_version_bytes = Histogram(
            "crm_scorer_model_version_bytes",
            "Bytes of one published version (its changed parts and manifest).",
            buckets=_BYTE_BUCKETS,
            registry=registry,
        )
        self.model_apply_seconds = Histogram(
            "crm_scorer_model_apply_seconds",
            "Time the event loop is held applying a version of the group model.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.model_delta_seconds = Histogram(
            "crm_scorer_model_delta_seconds",
            "Time the event loop is held taking and encoding a delta.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.model_pending_deltas = Gauge(
            "crm_scorer_model_pending_deltas",
            "Deltas of this worker the group model does not include yet.",
            registry=registry,
        )
        self.model_merger = Gauge(
            "crm_scorer_model_merger",
            "1 while this worker merges the group model's deltas (owns the updates topic).",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "crm_scorer_consumer_lag",
            "Events of each partition this worker owns that it has not handled yet.",
            ["partition"],
            registry=registry,
        )
        self.segment_customers = Gauge(
            "crm_scorer_segment_customers",
            "Customers of this worker's partitions in each segment, by segment name.",
            ["segment"],
            registry=registry,
        )
        self.customers = Gauge(
            "crm_scorer_customers", "Customers in this worker's state table.", registry=registry
        )
        self.last_rebalance = Gauge(
            "crm_scorer_last_rebalance_timestamp_seconds",
            "Wall time this worker was last assigned its partitions (0 before the first).",
            registry=registry,
        )
        self.catalogue_records = Counter(
            "crm_scorer_catalogue_records",
            "Records of CRM_ITEMS_TOPIC this worker read, by outcome (refused: failed its checks; "
            "the worker owning its partition dead-letters it).",
            ["outcome"],
            registry=registry,
        )
        self.catalogue_items = Gauge(
            "crm_scorer_catalogue_items",
            "Items of the catalogue this worker holds, by availability.",
            ["available"],
            registry=registry,
        )
        self.catalogue_loaded = Gauge(
            "crm_scorer_catalogue_loaded",
            "1 once this worker read the whole catalogue (it scores no event before).",
            registry=registry,
        )
        for outcome in CATALOGUE_OUTCOMES:
            self.catalogue_records.labels(outcome=outcome)
        self._event_children = {
            (t, o): self.events.labels(type=t, outcome=o)
            for t in _EVENT_TYPE_LABELS
            for o in EVENT_OUTCOMES
        }
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason=reason)
        for alert_type in AlertType:
            self.alerts.labels(type=alert_type.value)
        for reason in REFUSAL_REASONS:
            self.model_records_refused.labels(reason=reason)
        self._mirrored: dict[Counter, int] = {}
        self._label_children = {
            True: self.churn_labels.labels(label="churned"),
            False: self.churn_labels.labels(label="stayed"),
        }

    def event(self, event_type: str | None, outcome: str) -> None:
        """Count one consumed event."""
        key = (event_type if event_type in _EVENT_TYPE_LABELS else "other", outcome)
        self._event_children[key].inc()

    def dead_letter(self, reason: str) -> None:
        """Count one dead letter."""
        self.dead_letters.labels(reason=reason if reason in DEAD_LETTER_REASONS else "other").inc()

    def alert(self, alert_type: str) -> None:
        """Count one published alert."""
        known = alert_type in _ALERT_TYPE_LABELS
        self.alerts.labels(type=alert_type if known else "other").inc()

    def model_record_refused(self, reason: str) -> None:
        """Count one refused record of the model topics."""
        self.model_records_refused.labels(reason=reason).inc()

    def labels_learned(self, labels: list[bool]) -> None:
        """Count delayed churn labels."""
        for label in labels:
            self._label_children[label].inc()

    def partitions_and_segments(self, lag: dict[int, int], segments: dict[str, int]) -> None:
        """Set the per-partition lag and the segment sizes; labels no longer current go."""
        for gauge, values in ((self.consumer_lag, lag), (self.segment_customers, segments)):
            gauge.clear()
            for label, value in values.items():
                gauge.labels(str(label)).set(value)

    def mirror_totals(self, *, churn_drifts: int, rescore_errors: int) -> None:
        """Bring the counters of running totals kept by the models up to those totals."""
        for counter, total in (
            (self.churn_drifts, churn_drifts),
            (self.rescore_errors, rescore_errors),
        ):
            seen = self._mirrored.get(counter, 0)
            if total > seen:
                counter.inc(total - seen)
                self._mirrored[counter] = total

    def track(
        self,
        *,
        customers: Callable[[], float],
        roc_auc: Callable[[], float],
        log_loss: Callable[[], float],
        pending_labels: Callable[[], float],
        events_learned: Callable[[], float],
        hit_rate: Callable[[], float],
        rescores_scheduled: Callable[[], float],
        producer_pending: Callable[[], float],
        value_rank_correlation: Callable[[], float],
        value_labels: Callable[[], float],
        arm_hit_rates: Callable[[], dict[str, float]],
        arm_served: Callable[[], str],
        ease_items: Callable[[], float],
    ) -> None:
        """Read the live gauges from these callables at every scrape, so they are never stale."""
        self.customers.set_function(customers)
        self.churn_roc_auc.set_function(roc_auc)
        self.churn_log_loss.set_function(log_loss)
        self.churn_pending_labels.set_function(pending_labels)
        self.model_events_learned.set_function(events_learned)
        self.recommendation_hit_rate.set_function(hit_rate)
        self.rescores_scheduled.set_function(rescores_scheduled)
        self.producer_pending.set_function(producer_pending)
        self.value_rank_correlation.set_function(value_rank_correlation)
        self.value_labels.set_function(value_labels)
        for arm in arm_hit_rates():  # the arms are the recommender's, fixed
            self.recommendation_arm_hit_rate.labels(arm=arm).set_function(
                partial(_arm_rate, arm_hit_rates, arm)
            )
            self.recommendation_arm_served.labels(arm=arm).set_function(
                partial(_arm_is_served, arm_served, arm)
            )
        self.recommendation_ease_items.set_function(ease_items)


def _arm_rate(rates: Callable[[], dict[str, float]], arm: str) -> float:
    return rates().get(arm, math.nan)


def _arm_is_served(served: Callable[[], str], arm: str) -> float:
    return float(served() == arm)
