"""The measures and baselines the report and the quality benchmark share, against
scikit-learn's and scipy's own (the ``bench`` extra) on the same data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import auc, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from online_models.evaluation.baselines import LogisticBaseline, item_item_lists
from online_models.evaluation.history import PurchaseHistory
from online_models.evaluation.measures import (
    calibration,
    cumulative_gains,
    roc_auc,
    roc_curve,
    spearman,
    top_share,
)
from online_models.evaluation.projection import principal_components


@pytest.fixture
def customers() -> tuple[np.ndarray, np.ndarray]:
    """RFM-like features and churn labels that depend on them, with tied scores."""
    rng = np.random.default_rng(3)
    x = np.c_[rng.exponential(60, 400), rng.poisson(4, 400), rng.lognormal(5, 1, 400)]
    x = np.log1p(x)
    churn = rng.random(400) < 1 / (1 + np.exp(-(x[:, 0] - 3.5 - 0.5 * x[:, 1])))
    return x, churn


def test_roc_auc_and_curve_agree_with_scikit_learn_with_ties(
    customers: tuple[np.ndarray, np.ndarray],
) -> None:
    x, churn = customers
    risk = np.round(x[:, 0], 1)  # many ties

    fpr, tpr = roc_curve(churn, risk)

    assert roc_auc(churn, risk) == pytest.approx(roc_auc_score(churn, risk), abs=1e-12)
    assert auc(fpr, tpr) == pytest.approx(roc_auc_score(churn, risk), abs=1e-12)
    assert np.isnan(roc_auc([True, True], [0.1, 0.2]))


def test_the_logistic_baseline_predicts_what_scikit_learns_pipeline_does(
    customers: tuple[np.ndarray, np.ndarray],
) -> None:
    x, churn = customers
    # Both fitted to convergence (scikit-learn's default tol stops within 5e-4 of it here).
    model = LogisticRegression(max_iter=10_000, tol=1e-10)
    reference = make_pipeline(StandardScaler(), model).fit(x, churn)

    ours = LogisticBaseline().fit(x, churn)

    assert np.abs(ours.predict_proba(x) - reference.predict_proba(x)).max() < 1e-5


def test_gains_top_share_and_spearman_tell_the_same_ranking() -> None:
    rng = np.random.default_rng(5)
    spend_after = rng.lognormal(4, 1.5, 1000)
    predicted = spend_after * rng.lognormal(0, 0.5, 1000)

    x, y = cumulative_gains(predicted, spend_after)

    assert (x[0], y[0], x[-1], y[-1]) == (0.0, 0.0, 1.0, pytest.approx(1.0))
    assert top_share(predicted, spend_after) == pytest.approx(y[100])
    assert top_share(spend_after, spend_after) >= top_share(predicted, spend_after)
    assert spearman(predicted, spend_after) == pytest.approx(
        stats.spearmanr(predicted, spend_after).statistic
    )


def test_calibration_bins_hold_every_customer_once(
    customers: tuple[np.ndarray, np.ndarray],
) -> None:
    x, churn = customers
    risk = LogisticBaseline().fit(x, churn).predict_proba(x)[:, 1]

    bins = calibration(churn, risk)

    assert bins.customers.sum() == len(churn)
    # A fitted logistic model is calibrated in total: its mean risk is the churn rate.
    weighted = (bins.predicted * bins.customers).sum() / len(churn)
    assert weighted == pytest.approx(churn.mean(), abs=1e-3)


def test_the_segment_map_is_scikit_learns_pca(customers: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = customers

    xy, explained = principal_components(x, 2)

    reference = PCA(n_components=2).fit(x)
    assert np.abs(np.abs(xy) - np.abs(reference.transform(x))).max() < 1e-9
    assert explained == pytest.approx(tuple(reference.explained_variance_ratio_))


def test_a_history_taken_in_chunks_out_of_order_is_the_history_of_them_all() -> None:
    rng = np.random.default_rng(9)
    purchases = [
        (f"c{rng.integers(5)}", float(rng.integers(0, 10**6)), f"i{rng.integers(7)}",
         float(rng.integers(1, 50)), bool(rng.random() < 0.1))
        for _ in range(300)
    ]  # fmt: skip
    whole = PurchaseHistory(sorted(purchases, key=lambda p: p[1]))

    chunked = PurchaseHistory()
    for start in (200, 0, 100):  # the middle of the file first
        chunked.add(purchases[start : start + 100])

    assert (chunked.first_event, chunked.last_event) == (whole.first_event, whole.last_event)
    for customer in whole.buys:
        assert [w for w, _, _ in chunked.buys[customer]] == [w for w, _, _ in whole.buys[customer]]
        assert chunked.rfm(customer, 5e5) == pytest.approx(whole.rfm(customer, 5e5))


def test_item_item_in_batches_ranks_as_the_whole_similarity_matrix_does() -> None:
    rng = np.random.default_rng(11)
    owned = {f"c{n}": {f"i{i}" for i in rng.choice(30, rng.integers(1, 8))} for n in range(90)}
    customers, items = list(owned), sorted({i for bought in owned.values() for i in bought})
    bought = np.array([[item in owned[c] for item in items] for c in customers], dtype=float)
    counts = bought.sum(axis=0)
    similarity = bought.T @ bought / np.sqrt(np.outer(counts, counts))
    np.fill_diagonal(similarity, 0.0)
    scores = {}
    for c, row in zip(customers, bought @ similarity + 1e-9 * counts, strict=True):
        row[[items.index(i) for i in owned[c]]] = -np.inf
        scores[c] = row

    for batch in (1, 7, 256):
        lists = item_item_lists(owned, 10, batch)
        for c in customers:
            # The same scores in the same order; items of equal score (to rounding) may swap.
            best = np.sort(scores[c])[::-1][:10]
            got = scores[c][[items.index(i) for i in lists[c]]]
            assert got == pytest.approx(best, rel=1e-12, abs=1e-15)
