"""A consumer group of workers and their merger in one process (``backtest --workers``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from online_models.group.model import GroupModel
from online_models.group.worker import WorkerSync
from online_models.scoring.scorer import CustomerScorer, ScorerConfig

__all__ = []

logger = logging.getLogger(__name__)


class LocalGroup:
    """A consumer group of ``workers`` and their merger in one process: each worker scores
    its customers with its own scorer and engine, and every ``sync_seconds`` of event time
    they sync through the group's model, as the workers do through Kafka every
    ``CRM_MODEL_SYNC_SECONDS`` (what ``crm-scorer backtest --workers`` runs).

    A group of one worker syncs only its segments and lifetime parts, where the group's model
    does what the worker's does not (it seeds and names the segments, fits the lifetime
    parameters): its churn, value and item parts would come back as its own model (see
    :class:`WorkerSync` ``alone``), and taking, merging and publishing them was most of a sync
    and 40% of a one-worker backtest's time on a month of Online Retail. ``sync_all_parts``
    syncs them too, as a worker alone in a live group does through Kafka: the same scores,
    but for the order of some recommendations (the merger cuts a long co-purchase list to its
    strongest half where the worker alone cuts it as it counts).

    >>> from online_models.customer.activity import Activity
    >>> group = LocalGroup(ScorerConfig(), workers=2, sync_seconds=60.0)
    >>> for n in range(4):
    ...     _ = group.process(f"c{n}", Activity("view", 100.0 * n, item_id="a"), worker=n % 2)
    >>> group.version, [sync.version for sync in group.syncs]
    (3, [3, 3])
    """

    def __init__(
        self,
        config: ScorerConfig,
        *,
        workers: int = 1,
        sync_seconds: float = 15.0,
        sync_all_parts: bool = False,
    ) -> None:
        from online_models.scoring.engine import ScoringEngine

        if workers < 1 or not sync_seconds > 0:
            msg = f"workers must be >= 1 and sync_seconds > 0, got {workers}, {sync_seconds}"
            raise ValueError(msg)
        self.config = config
        self.sync_seconds = sync_seconds
        self.scorers = [CustomerScorer(config) for _ in range(workers)]
        self.states: list[dict[str, Any]] = [{} for _ in range(workers)]
        self.engines = [
            ScoringEngine(scorer, states)
            for scorer, states in zip(self.scorers, self.states, strict=True)
        ]
        alone = workers == 1 and not sync_all_parts
        self.syncs = [
            WorkerSync(scorer, f"worker-{n}", alone=alone) for n, scorer in enumerate(self.scorers)
        ]
        self.merger = GroupModel(config)
        self._next_sync: float | None = None

    @property
    def version(self) -> int:
        """The group model's newest version."""
        return self.merger.version

    def process(
        self,
        customer_id: str,
        activity: Any,
        *,
        worker: int = 0,
        shard: int = 0,
        event_id: str | None = None,
    ) -> list[Any]:
        """Score one event on ``worker`` (its partition ``shard``), syncing first when a sync
        interval of event time has passed; returns the engine's scores."""
        if self._next_sync is None:
            self._next_sync = activity.time + self.sync_seconds
        elif activity.time >= self._next_sync:
            self.sync()
            self._next_sync = activity.time + self.sync_seconds
        return list(self.engines[worker].process(customer_id, activity, shard, event_id=event_id))

    def process_many(
        self, events: Sequence[tuple[str, Any, str | None, int]], workers_of: Sequence[int]
    ) -> list[Any]:
        """Score a batch of events, each ``(customer_id, activity, event_id, shard)``, on the
        worker ``workers_of[shard]`` (syncing first when a sync interval of event time passed
        by the batch's first event): one ``ScoringEngine.process_many`` per shard, in the
        order of the shards' first events; returns their ``BatchScores``."""
        if not events:
            return []
        first = events[0][1].time
        if self._next_sync is None:
            self._next_sync = first + self.sync_seconds
        elif first >= self._next_sync:
            self.sync()
            self._next_sync = first + self.sync_seconds
        shards: dict[int, list[tuple[str, Any, None, str | None]]] = {}
        for customer_id, activity, event_id, shard in events:
            shards.setdefault(shard, []).append((customer_id, activity, None, event_id))
        return [
            self.engines[workers_of[shard]].process_many(batch, shard)
            for shard, batch in shards.items()
        ]

    def sync(self) -> int:
        """Every worker sends its delta, the merger publishes, every worker applies."""
        for worker_sync in self.syncs:
            for delta in worker_sync.deltas():
                self.merger.merge(delta)
        if not self.merger.dirty:
            return self.merger.version
        version, parts = self.merger.publish()
        changed = {part.key: part for part in parts}
        for worker_sync in self.syncs:
            for _ in worker_sync.apply_slices(version, changed):
                pass  # as a worker applies a version, slice by slice
        return version
