"""Unit tests of ``streams.metrics``: what an operator's Prometheus scrapes from a worker.

Counts land on the documented names and labels, every name carries the ``crm_scorer_`` prefix,
and label values come from fixed sets, so no customer id and no producer's typo can blow up
the number of time series.
"""

from __future__ import annotations

import random
import re
import uuid
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from schemas import DEAD_LETTER_REASONS, AlertType, EventType
from streams.metrics import EVENT_OUTCOMES, ScorerMetrics

README = Path(__file__).resolve().parents[2] / "README.md"
CUSTOMER_LIKE_LABELS = {"customer", "customer_id", "id", "user", "user_id", "event_id"}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> ScorerMetrics:
    return ScorerMetrics(registry)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def sample_count(registry: CollectorRegistry) -> int:
    return sum(len(family.samples) for family in registry.collect())


def test_events_are_counted_by_type_and_outcome(
    metrics: ScorerMetrics, registry: CollectorRegistry
) -> None:
    metrics.event("purchase", "scored")
    metrics.event("purchase", "scored")
    metrics.event("view", "dead_lettered")
    metrics.event("feedback", "skipped")

    assert value(registry, "crm_scorer_events_total", type="purchase", outcome="scored") == 2.0
    assert value(registry, "crm_scorer_events_total", type="view", outcome="dead_lettered") == 1
    assert value(registry, "crm_scorer_events_total", type="feedback", outcome="skipped") == 1
    assert value(registry, "crm_scorer_events_total", type="view", outcome="scored") == 0.0


def test_an_unknown_or_missing_type_counts_as_other(
    metrics: ScorerMetrics, registry: CollectorRegistry
) -> None:
    metrics.event("wishlist_add", "skipped")
    metrics.event("loyalty_points", "skipped")
    metrics.event(None, "dead_lettered")

    assert value(registry, "crm_scorer_events_total", type="other", outcome="skipped") == 2.0
    assert value(registry, "crm_scorer_events_total", type="other", outcome="dead_lettered") == 1
    assert (
        value(registry, "crm_scorer_events_total", type="wishlist_add", outcome="skipped") is None
    )


def test_every_type_and_outcome_is_exported_at_zero_before_the_first_event(
    registry: CollectorRegistry, metrics: ScorerMetrics
) -> None:
    for event_type in [*(t.value for t in EventType), "other"]:
        for outcome in EVENT_OUTCOMES:
            labels = {"type": event_type, "outcome": outcome}
            assert registry.get_sample_value("crm_scorer_events_total", labels) == 0.0
    for reason in DEAD_LETTER_REASONS:
        assert value(registry, "crm_scorer_dead_letters_total", reason=reason) == 0.0
    for alert_type in AlertType:
        assert value(registry, "crm_scorer_alerts_total", type=alert_type.value) == 0.0


def test_dead_letters_are_counted_by_reason(
    metrics: ScorerMetrics, registry: CollectorRegistry
) -> None:
    metrics.dead_letter("not_json")
    metrics.dead_letter("not_json")
    metrics.dead_letter("bad_timestamp")

    assert value(registry, "crm_scorer_dead_letters_total", reason="not_json") == 2.0
    assert value(registry, "crm_scorer_dead_letters_total", reason="bad_timestamp") == 1.0
    assert value(registry, "crm_scorer_dead_letters_total", reason="oversized") == 0.0


def test_alerts_are_counted_by_type(metrics: ScorerMetrics, registry: CollectorRegistry) -> None:
    metrics.alert("churn_risk")
    metrics.alert(AlertType.NEGATIVE_FEEDBACK)
    metrics.alert("churn_risk")

    assert value(registry, "crm_scorer_alerts_total", type="churn_risk") == 2.0
    assert value(registry, "crm_scorer_alerts_total", type="negative_feedback") == 1.0
    assert value(registry, "crm_scorer_alerts_total", type="segment_change") == 0.0


def test_churn_labels_are_counted_as_churned_and_stayed(
    metrics: ScorerMetrics, registry: CollectorRegistry
) -> None:
    metrics.labels_learned([True, False, False, True, False])
    metrics.labels_learned([])

    assert value(registry, "crm_scorer_churn_labels_total", label="churned") == 2.0
    assert value(registry, "crm_scorer_churn_labels_total", label="stayed") == 3.0


def test_tracked_gauges_show_the_live_value_at_every_scrape(
    metrics: ScorerMetrics, registry: CollectorRegistry
) -> None:
    live = {
        "customers": 3.0,
        "roc_auc": 0.7,
        "log_loss": 0.5,
        "pending": 10.0,
        "learned": 99.0,
        "hit_rate": 0.1,
        "scheduled": 3.0,
        "producer": 0.0,
        "value_rho": float("nan"),
        "value_labels": 0.0,
        "served": "hybrid",
        "ease_items": 0.0,
    }
    rates = {"popularity": float("nan"), "hybrid": float("nan"), "ease": float("nan")}
    metrics.track(
        customers=lambda: live["customers"],
        roc_auc=lambda: live["roc_auc"],
        log_loss=lambda: live["log_loss"],
        pending_labels=lambda: live["pending"],
        events_learned=lambda: live["learned"],
        hit_rate=lambda: live["hit_rate"],
        rescores_scheduled=lambda: live["scheduled"],
        producer_pending=lambda: live["producer"],
        value_rank_correlation=lambda: live["value_rho"],
        value_labels=lambda: live["value_labels"],
        arm_hit_rates=lambda: rates,
        arm_served=lambda: str(live["served"]),
        ease_items=lambda: float(live["ease_items"]),
    )
    assert value(registry, "crm_scorer_customers") == 3.0
    assert value(registry, "crm_scorer_recommendation_arm_served", arm="hybrid") == 1.0

    live.update(
        customers=4000.0,
        roc_auc=0.83,
        log_loss=0.41,
        pending=12.0,
        learned=20_000.0,
        hit_rate=0.25,
        scheduled=3_900.0,
        producer=250.0,
        value_rho=0.56,
        value_labels=1_200.0,
        served="ease",
        ease_items=3_500.0,
    )
    rates.update(popularity=0.03, hybrid=0.05, ease=0.06)

    assert value(registry, "crm_scorer_customers") == 4000.0
    assert value(registry, "crm_scorer_churn_roc_auc") == 0.83
    assert value(registry, "crm_scorer_churn_log_loss") == 0.41
    assert value(registry, "crm_scorer_churn_pending_labels") == 12.0
    assert value(registry, "crm_scorer_model_events_learned") == 20_000.0
    assert value(registry, "crm_scorer_recommendation_hit_rate") == 0.25
    assert value(registry, "crm_scorer_rescores_scheduled") == 3_900.0
    assert value(registry, "crm_scorer_producer_pending") == 250.0
    assert value(registry, "crm_scorer_value_rank_correlation") == 0.56
    assert value(registry, "crm_scorer_value_labels") == 1_200.0
    assert value(registry, "crm_scorer_recommendation_arm_hit_rate", arm="ease") == 0.06
    assert value(registry, "crm_scorer_recommendation_arm_served", arm="ease") == 1.0
    assert value(registry, "crm_scorer_recommendation_arm_served", arm="hybrid") == 0.0
    assert value(registry, "crm_scorer_recommendation_ease_items") == 3_500.0


def test_every_metric_name_starts_with_crm_scorer(
    metrics: ScorerMetrics, registry: CollectorRegistry
) -> None:
    families = list(registry.collect())

    assert families
    for family in families:
        assert family.name.startswith("crm_scorer_"), family.name
        for sample in family.samples:
            assert sample.name.startswith("crm_scorer_"), sample.name


def test_every_metric_the_readme_names_is_exported(
    metrics: ScorerMetrics, registry: CollectorRegistry
) -> None:
    section = README.read_text(encoding="utf-8").split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(crm_scorer_[a-z_]+)", section))
    exported = {sample.name for family in registry.collect() for sample in family.samples}
    exported |= {family.name for family in registry.collect()}

    assert documented
    assert documented - exported == set()


def test_no_metric_has_a_label_that_could_hold_a_customer(
    metrics: ScorerMetrics, registry: CollectorRegistry
) -> None:
    for family in registry.collect():
        for sample in family.samples:
            for label in sample.labels:
                assert label.lower() not in CUSTOMER_LIKE_LABELS, (sample.name, label)
                assert "customer" not in label.lower(), (sample.name, label)


def test_label_values_stay_bounded_whatever_the_producers_send(
    metrics: ScorerMetrics, registry: CollectorRegistry
) -> None:
    rng = random.Random(7)
    customers = [f"cust-{uuid.UUID(int=rng.getrandbits(128))}" for _ in range(1000)]
    metrics.dead_letter("not_json")
    metrics.dead_letter("some_future_reason")
    metrics.alert("some_future_alert")
    before = sample_count(registry)

    for customer_id in customers:
        known = rng.random() < 0.5
        event_type = rng.choice(list(EventType)).value if known else f"type-{rng.getrandbits(32)}"
        metrics.event(event_type, rng.choice(EVENT_OUTCOMES))
        metrics.dead_letter(f"reason-{customer_id}")
        metrics.alert(f"alert-{customer_id}")

    assert sample_count(registry) == before
    scraped = generate_latest(registry).decode()
    assert not any(customer_id in scraped for customer_id in customers)
    assert "type-" not in scraped
    assert "reason-" not in scraped
    assert "alert-" not in scraped
    total = sum(
        value(registry, "crm_scorer_events_total", type=t, outcome=o) or 0.0
        for t in [*(e.value for e in EventType), "other"]
        for o in EVENT_OUTCOMES
    )
    assert total == len(customers)


def test_two_workers_in_one_process_do_not_share_counts() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    ScorerMetrics(first).event("view", "scored")
    ScorerMetrics(second)

    assert value(first, "crm_scorer_events_total", type="view", outcome="scored") == 1.0
    assert value(second, "crm_scorer_events_total", type="view", outcome="scored") == 0.0
