"""A silent customer's re-scores serve their kept recommendations for a while, and rank anew
after ``rerank_silent_days``, after any event of theirs and when an item is withdrawn."""

from __future__ import annotations

import orjson
import pytest

from online_models.customer.activity import DAY, Activity
from online_models.recommend.content import ContentModel
from online_models.recommend.recommender import Recommender
from online_models.scoring.scorer import CustomerScorer, ScorerConfig
from online_models.scoring.state import CustomerState

ITEMS = [f"sku-{n}" for n in range(12)]


def trained(config: ScorerConfig) -> tuple[CustomerScorer, CustomerState]:
    """A scorer that saw 40 customers buy and view the items, and ``ann``'s state."""
    scorer = CustomerScorer(config)
    states: dict[str, CustomerState] = {}
    time = 0.0
    for n in range(200):
        customer = f"c{n % 40}"
        item = ITEMS[(n * 7) % len(ITEMS)]
        kind = "purchase" if n % 3 == 0 else "view"
        activity = Activity(kind, time, item_id=item, amount=5.0, quantity=1)
        state = states.get(customer) or CustomerState.new(time)
        states[customer] = scorer.score(customer, state, activity).state
        time += 600.0
    ann = scorer.score("ann", CustomerState.new(time), Activity("view", time, item_id="sku-3"))
    return scorer, ann.state


@pytest.fixture
def ranking_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many customers each call of Recommender.rank_many ranked."""
    calls: list[int] = []
    original = Recommender.rank_many

    def counted(self: Recommender, requests, k):  # type: ignore[no-untyped-def]
        calls.append(len(requests))
        return original(self, requests, k)

    monkeypatch.setattr(Recommender, "rank_many", counted)
    return calls


def test_re_scores_serve_the_kept_list_until_it_is_a_week_old(ranking_calls: list[int]) -> None:
    scorer, state = trained(ScorerConfig(top_k=3))
    ranking_calls.clear()  # the live hit rate ranks while training
    seen = state.profile.last_seen
    first = scorer.recommend_many([("ann", state)], as_of=[seen])[0]
    assert len(first) == 3 and ranking_calls == [1]

    for day in range(1, 7):  # the daily re-scores of a silent week
        assert scorer.recommend_many([("ann", state)], as_of=[seen + day * DAY]) == [first]
    assert ranking_calls == [1]
    assert state.ranked_at == seen

    scorer.recommend_many([("ann", state)], as_of=[seen + 7 * DAY])
    assert ranking_calls == [1, 1]
    assert state.ranked_at == seen + 7 * DAY


def test_an_event_since_the_ranking_ranks_again(ranking_calls: list[int]) -> None:
    scorer, state = trained(ScorerConfig(top_k=3))
    ranking_calls.clear()  # the live hit rate ranks while training
    seen = state.profile.last_seen
    scorer.recommend_many([("ann", state)], as_of=[seen])
    state = scorer.score("ann", state, Activity("view", seen + DAY, item_id="sku-5")).state
    scorer.recommend_many([("ann", state)], as_of=[seen + DAY])

    assert ranking_calls == [1, 1]
    assert state.ranked_at == seen + DAY


def test_an_event_older_than_the_ranking_still_ranks_again(ranking_calls: list[int]) -> None:
    """A late purchase (its time before the kept list's) must not leave the bought item in
    the list: any event, whatever its time, drops the kept list."""
    scorer, state = trained(ScorerConfig(top_k=3))
    ranking_calls.clear()  # the live hit rate ranks while training
    seen = state.profile.last_seen
    (kept,) = scorer.recommend_many([("ann", state)], as_of=[seen + 3 * DAY])
    late = Activity("purchase", seen + DAY, item_id=kept[0], amount=5.0, quantity=1)
    state = scorer.score("ann", state, late).state
    ranking_calls.clear()
    (again,) = scorer.recommend_many([("ann", state)], as_of=[seen + 3 * DAY])

    assert ranking_calls == [1]
    assert kept[0] not in again


def test_a_withdrawn_item_is_never_served_from_the_kept_list(ranking_calls: list[int]) -> None:
    scorer, state = trained(ScorerConfig(top_k=3))
    ranking_calls.clear()  # the live hit rate ranks while training
    catalogue = ContentModel()
    for item in ITEMS:
        catalogue.upsert(item, {"name": f"blue mug {item}"})
    scorer.use_catalogue(catalogue)
    seen = state.profile.last_seen
    (first,) = scorer.recommend_many([("ann", state)], as_of=[seen])

    catalogue.upsert(first[0], {"name": f"blue mug {first[0]}", "available": False})
    (again,) = scorer.recommend_many([("ann", state)], as_of=[seen + DAY])

    assert first[0] not in again and len(again) == 3
    assert ranking_calls == [1, 1]


def test_with_zero_days_every_score_is_ranked(ranking_calls: list[int]) -> None:
    scorer, state = trained(ScorerConfig(top_k=3, rerank_silent_days=0))
    ranking_calls.clear()  # the live hit rate ranks while training
    seen = state.profile.last_seen
    for day in range(3):
        scorer.recommend_many([("ann", state)], as_of=[seen + day * DAY])

    assert ranking_calls == [1, 1, 1]


def test_a_flush_ranks_only_the_customers_whose_list_is_due(ranking_calls: list[int]) -> None:
    scorer, ann = trained(ScorerConfig(top_k=3))
    ranking_calls.clear()  # the live hit rate ranks while training
    seen = ann.profile.last_seen
    bob = CustomerState.new(seen)
    bob = scorer.score("bob", bob, Activity("view", seen, item_id="sku-1")).state
    scorer.recommend_many([("ann", ann)], as_of=[seen])

    lists = scorer.recommend_many([("ann", ann), ("bob", bob)], as_of=[seen + DAY, seen + DAY])

    assert ranking_calls == [1, 1]  # bob alone the second time
    assert lists[0] == ann.ranked and lists[1] == bob.ranked
    assert len(lists) == 2


def test_the_kept_list_survives_the_state_record_and_older_records_have_none() -> None:
    scorer, state = trained(ScorerConfig(top_k=3))
    scorer.recommend_many([("ann", state)], as_of=[state.profile.last_seen])

    decoded = CustomerState.decode(state.encode())
    assert decoded.ranked == state.ranked and decoded.ranked_at == state.ranked_at
    assert CustomerState.from_dict(orjson.loads(orjson.dumps(state.to_dict()))) == state

    # A record of a worker from before the kept list: the same format without its field (and
    # the pending value examples' and the segment's generation after it, which came later).
    older = orjson.loads(state.encode())[:-3]
    old = CustomerState.decode(orjson.dumps(older))
    assert old.ranked == [] and old.ranked_at is None
