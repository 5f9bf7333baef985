"""The drift detector of ChurnQuality: an operator learns when the churn error changes.

ADWIN watches the absolute error of the served risks against their delayed labels; a drift is
counted in ``crm_scorer_churn_drifts_total``.
"""

from __future__ import annotations

import random

from online_models.churn.quality import ChurnQuality


def served_risks(rng: random.Random, n: int, *, inverted: bool = False) -> list[tuple[float, bool]]:
    """Risks a decent model serves, with the labels that came back (or the opposite model's)."""
    served = []
    for _ in range(n):
        churned = rng.random() < 0.3
        risk = rng.uniform(0.6, 0.95) if churned else rng.uniform(0.05, 0.4)
        served.append((1.0 - risk if inverted else risk, churned))
    return served


def test_a_jump_in_the_churn_error_is_counted_as_a_drift():
    rng = random.Random(4)
    quality = ChurnQuality()
    for risk, churned in served_risks(rng, 2_000):
        quality.update(risk, churned)
    assert quality.drifts == 0

    found_after = None
    for n, (risk, churned) in enumerate(served_risks(rng, 300, inverted=True), start=1):
        quality.update(risk, churned)  # the customers changed: the served risks are now wrong
        if found_after is None and quality.drifts:
            found_after = n

    assert quality.drifts >= 1
    assert found_after is not None and found_after <= 100  # within 100 labels of the change


def test_a_steady_churn_error_is_mostly_not_a_drift():
    drifts = []
    for seed in range(5):
        quality = ChurnQuality()
        for risk, churned in served_risks(random.Random(seed), 3_000):
            quality.update(risk, churned)
        drifts.append(quality.drifts)

    assert sum(drifts) <= 1
