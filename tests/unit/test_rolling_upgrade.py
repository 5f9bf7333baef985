"""A rolling upgrade: today's worker reads what the previous release's workers left in Kafka.

For minutes two releases run in one consumer group. The records of
``tests/fixtures/records/<release>/<segment model>/`` were written by that release's code
(``tests/fixtures/records/make_records.py``): the compacted models topic (parts and manifest),
deltas not merged yet, the customers table's changelog and the catalogue. Today's worker must
load that model, take over those customers and score them with it, and, as the new merger,
merge the old workers' deltas into a version every worker applies.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from online_models.customer.activity import DAY, Activity
from online_models.group.model import GroupModel
from online_models.group.parts import EASE
from online_models.group.worker import WorkerSync
from online_models.recommend.content import ContentModel
from online_models.scoring.engine import ScoringEngine
from online_models.scoring.scorer import CustomerScorer, ScorerConfig
from online_models.scoring.state import CustomerState
from schemas.items import decode_item
from streams.model_codec import MANIFEST_KEY, decode_delta, decode_manifest, decode_part
from streams.settings import Settings

RECORDS = Path(__file__).resolve().parents[1] / "fixtures" / "records"
#: Each release's records, by segment model: ``0.1.0/kmeans``, ``0.1.0/density``, ...
RECORDED = sorted(str(made.parent.relative_to(RECORDS)) for made in RECORDS.glob("*/*/made.json"))


def records(recorded: str, name: str) -> list[tuple[bytes | None, bytes | None]]:
    """The Kafka records of one fixture file: (key, value), a tombstone's value None."""
    rows = [json.loads(line) for line in (RECORDS / recorded / name).read_text().splitlines()]

    def raw(text: str | None) -> bytes | None:
        return None if text is None else base64.b64decode(text)

    return [(raw(row["key"]), raw(row["value"])) for row in rows]


class Upgraded:
    """Today's worker after reading a release's topics, as a worker does at start-up."""

    def __init__(self, recorded: str) -> None:
        self.recorded = recorded
        self.made = json.loads((RECORDS / recorded / "made.json").read_text())
        self.key = self.made["signing_key"].encode()
        # Today's defaults, with the segment model the release's group ran.
        settings = Settings(segment_model=self.made["segment_model"])
        self.config: ScorerConfig = settings.scorer_config()
        self.scorer = CustomerScorer(self.config)
        self.sync = WorkerSync(self.scorer, "today-0")
        self.manifest, self.parts = self._model()
        for _ in self.sync.apply_slices(self.manifest.version, self.parts):
            pass
        self.catalogue = self._catalogue()
        self.scorer.use_catalogue(self.catalogue)
        self.states = {
            key.decode(): CustomerState.decode(value)
            for key, value in records(recorded, "customers-changelog.jsonl")
            if key is not None and value is not None
        }
        self.engine = ScoringEngine(self.scorer, dict(self.states))
        self.deltas = [
            decode_delta(value, self.config, key=self.key)
            for _, value in records(recorded, "model-updates.jsonl")
        ]

    def _model(self) -> tuple[Any, dict[str, Any]]:
        topic = dict(records(self.recorded, "models.jsonl"))
        manifest = decode_manifest(topic.pop(MANIFEST_KEY), self.config, key=self.key)
        parts = {
            key.decode(): decode_part(value, self.config, key=self.key)
            for key, value in topic.items()
            if key is not None
        }
        return manifest, parts

    def _catalogue(self) -> ContentModel:
        catalogue = ContentModel(self.scorer.catalogue.dimensions)
        for key, value in records(self.recorded, "items.jsonl"):
            item = decode_item(key, value)
            if item is None:
                catalogue.remove((key or b"").decode())
            else:
                catalogue.upsert(item.item_id, item.model_dump(exclude_none=True))
        return catalogue


@pytest.fixture(scope="module", params=RECORDED)
def upgraded(request: pytest.FixtureRequest) -> Upgraded:
    return Upgraded(request.param)


def test_fixtures_of_the_release_before_this_one_are_kept():
    assert {"0.4.0/kmeans", "0.4.0/density"} <= set(RECORDED)  # and the older ones, kept


def test_today_s_worker_loads_the_previous_release_s_model_and_catalogue(upgraded):
    manifest = upgraded.manifest

    assert manifest.version == upgraded.made["model_version"]
    assert set(upgraded.parts) == set(manifest.parts)  # every part named is read, none refused
    segments = upgraded.made["segment_model"].replace("kmeans", "segments")
    assert {"churn", segments, "value", "lifetime"} <= set(upgraded.parts)
    assert upgraded.sync.version == manifest.version
    assert upgraded.scorer.model_version.endswith(f"+v{manifest.version}")
    assert len(upgraded.catalogue.available_items) == upgraded.made["records"]["items.jsonl"] - 2


def test_today_s_worker_scores_the_previous_release_s_customers_with_that_model(upgraded):
    then = max(state.last_scored_at() for state in upgraded.states.values())
    customers = sorted(upgraded.states)[:40]
    events = [
        (customer, Activity("purchase", then + DAY + n, item_id="sku-004", amount=30.0, quantity=1))
        for n, customer in enumerate(customers)
    ]
    orders_before = {customer: upgraded.states[customer].profile.orders for customer in customers}

    # Offsets unknown (None): the release's states hold their own partitions' offsets.
    batch = upgraded.engine.process_many(
        [
            (customer, activity, None, f"after-upgrade-{n}")
            for n, (customer, activity) in enumerate(events)
        ]
    )

    scored = {s.customer_id: s.outcome for s in batch.scored}
    assert set(scored) == set(customers)
    for customer, outcome in scored.items():
        score = outcome.score
        assert score.orders == orders_before[customer] + 1  # the release's history carried on
        assert score.model_version.endswith(f"+v{upgraded.manifest.version}")
        assert 0.0 <= score.churn_risk <= 1.0
        assert score.segment_name != "new customers"  # the release's segment centres
        assert score.predicted_clv > 0.0
    ranked = upgraded.scorer.recommend_many([(c, scored[c].state) for c in customers])
    available = set(upgraded.catalogue.available_items)
    assert all(items and set(items) <= available for items in ranked)


def test_today_s_merger_merges_the_previous_release_s_deltas_into_a_version(upgraded):
    merger = GroupModel(upgraded.config, upgraded.parts, version=upgraded.manifest.version)

    merged = [merger.merge(delta) for delta in upgraded.deltas]
    version, parts = merger.publish()
    for _ in upgraded.sync.apply_slices(version, {part.key: part for part in parts}):
        pass

    assert merged and all(merged)  # each old worker's delta counts, once
    assert {d.worker for d in upgraded.deltas} == {"worker-0", "worker-1"}
    assert version == upgraded.manifest.version + 1
    # EASE's counts (0.4.0 on) wait in the new merger's Gram for its first refit (a day of
    # event time away, and a takeover's Gram must first hold the last fit's pairs or span
    # EASE_TAKEOVER_DAYS): no ease part yet; the worker acknowledges them at that refit or
    # after EASE_HOLD_SECONDS (streams/model_sync.py).
    assert {part.key for part in parts} == {delta.key for delta in upgraded.deltas} - {EASE}
    assert all(merger.ease_awaits_fit(delta) for delta in upgraded.deltas if delta.key == EASE)
    assert upgraded.sync.version == version
    assert not any(merger.merge(delta) for delta in upgraded.deltas)  # a re-read counts none
