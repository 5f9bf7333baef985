"""The group model over Kafka: deltas to the model-updates topic, versions on the models topic.

Every ``CRM_MODEL_SYNC_SECONDS`` a worker sends what it learned since its last delta
(:class:`~online_models.group.WorkerSync`) to ``CRM_MODEL_UPDATES_TOPIC``. That topic has one
partition, so the consumer group gives it to exactly one worker: the *merger*, which folds the
deltas into the group's model (:class:`~online_models.group.GroupModel`) and publishes each new
version on the compacted ``CRM_MODELS_TOPIC``: the parts that changed, then a manifest naming
every part's version and offset. When the merger dies, the partition and the role move to
another worker, which continues from the newest version on the models topic; the updates it
had not published are read again from the committed offset, and each part's record of merged
deltas keeps them from counting twice.

Every worker reads the models topic with a :class:`~streams.model_feed.ModelFeed`; the records
themselves are encoded and checked in :mod:`streams.model_codec`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from faust.types import Message

from online_models.group.model import EaseState, GroupModel
from online_models.group.parts import EASE, GroupPart
from online_models.group.worker import WorkerSync
from online_models.scoring.scorer import CustomerScorer
from online_models.value.lifetime_fit import fit_lifetime
from schemas.model_records import (
    ManifestHeader,
    ModelRecordRefused,
    PartRef,
)
from streams.metrics import ScorerMetrics
from streams.model_codec import (
    MANIFEST_KEY,
    decode_delta,
    encode_delta,
    encode_manifest,
    encode_part,
    model_shapes,
)
from streams.model_feed import ModelFeed
from streams.settings import Settings
from streams.topics import MODEL_RECORD_BYTES

__all__ = ["ModelSync"]

logger = logging.getLogger(__name__)


# The longest the merger waits for its feed to reach the newest version (it waits in the fetch
# loop: the events wait as long), then leaves the deltas for the next fetch or sync.
_CATCH_UP_SECONDS = 0.5
#: The longest an ``ease`` delta merged into the Gram stays unacknowledged waiting for a
#: refit (wall seconds): until then a merger that dies leaves it to the next to read again;
#: after, it is acknowledged, so the updates partition's commits never wait on a refit a
#: takeover can put off for weeks (the Gram is not on the models topic: a merger's death loses
#: the counts since the last refit beyond this hour).
EASE_HOLD_SECONDS = 3600.0


class ModelSync:
    """A worker's share in the group's model: its deltas out, the versions in and, while it
    owns the updates topic's partition, the merging.

    ``send`` and ``ack`` are the worker's Kafka: ``send(topic, key, value)`` awaits the
    broker's acknowledgement and returns the record's offset; ``ack(message)`` lets Faust
    commit a consumed update.
    """

    def __init__(
        self,
        settings: Settings,
        scorer: CustomerScorer,
        metrics: ScorerMetrics,
        *,
        send: Callable[[str, bytes, bytes], Any],
        ack: Callable[[Message], Any],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._config = scorer.config
        self._key = settings.signing_key
        self._metrics = metrics
        self._send = send
        self._ack = ack
        self._clock = clock
        self.sync = WorkerSync(scorer)
        self.feed = ModelFeed(settings, self.sync, metrics, clock=clock)
        self._unsent: list[tuple[bytes, bytes]] = []  # delta records not acknowledged yet
        self._merging = False
        self._group: GroupModel | None = None
        self._to_merge: list[Message] = []  # received updates, merged once caught up
        self._held: list[Message] = []  # merged updates, acknowledged once published
        # EASE's Gram of this worker's last merging, for when the partition comes back.
        self._ease_kept: EaseState | None = None
        # Merged EASE counts and when they were merged: acknowledged at a refit, or after
        # EASE_HOLD_SECONDS.
        self._ease_held: list[tuple[float, Message]] = []
        # A version published in part: its number, parts and updates (tried again).
        self._unpublished: tuple[int, list[GroupPart], list[Message]] | None = None
        self._offsets: dict[str, PartRef] = {}
        self._lock = asyncio.Lock()
        self._sending = asyncio.Lock()
        self._interval = settings.model_sync_seconds
        self._synced_at = time.monotonic()
        metrics.model_version.set_function(lambda: self.sync.version)
        metrics.model_pending_deltas.set_function(lambda: self.sync.pending + len(self._unsent))
        metrics.model_merger.set_function(lambda: 1.0 if self._merging else 0.0)

    @property
    def worker(self) -> str:
        """This worker's id in the group's model (new at every start)."""
        return self.sync.worker

    async def tick(self, *, force: bool = True) -> None:
        """Every ``CRM_MODEL_SYNC_SECONDS``: send this worker's delta; as the merger, publish
        the deltas merged since the last version. Unforced, a tick before the interval is up
        syncs only while the group has no version yet, so a new group forms its first model
        (its segment centres among others) within a second or two."""
        now = time.monotonic()
        if not (force or self.sync.version == 0 or now - self._synced_at >= self._interval):
            return
        self._synced_at = now
        await self.send_deltas()
        if self._merging:
            await self.publish()

    async def send_deltas(self) -> int:
        """Send what the models learned since the last delta; returns the records sent."""
        async with self._sending:  # the shutdown's last sync may meet the timer's
            return await self._send_deltas()

    async def _send_deltas(self) -> int:
        started = time.perf_counter()
        deltas = self.sync.deltas()
        now = self._clock()
        records = [
            (f"{d.worker}/{d.key}".encode(), encode_delta(d, key=self._key, sent_at=now))
            for d in deltas
        ]
        self._metrics.model_delta_seconds.observe(time.perf_counter() - started)
        self._unsent += records
        sent = 0
        size = 0
        while self._unsent:
            key, value = self._unsent[0]
            try:
                await self._send(self._settings.model_updates_topic, key, value)
            except Exception as exc:  # the broker is away: the same records go next time
                logger.warning("Could not send a model delta (%s); retrying at the next sync", exc)
                break
            self._unsent.pop(0)
            self._metrics.model_deltas_sent.inc()
            sent += 1
            size += len(value)
        if sent:
            self._metrics.model_delta_bytes.observe(size)
        return sent

    # --- merging ---------------------------------------------------------------------------

    def on_assigned(self, has_updates_partition: bool) -> None:
        """The group's assignment: whether this worker now merges."""
        if has_updates_partition and not self._merging:
            logger.info("This worker merges the group model's deltas (it owns the updates topic)")
        if not has_updates_partition:
            self._stop_merging()
        self._merging = has_updates_partition

    def on_revoked(self) -> None:
        """Partitions are taken away: deltas merged but not published are left to the next
        merger, which reads them again from the committed offset."""
        self._stop_merging()

    async def merge(self, messages: Sequence[Message]) -> None:
        """Merge a fetch of deltas (handler of the updates topic); acknowledged once a
        version holding them is published."""
        if not self._merging:
            return  # a rebalance took the partition away: the next owner reads them again
        async with self._lock:
            self._to_merge += messages
            await self._merge_waiting()

    async def _merge_waiting(self) -> None:
        """Merge the deltas received, once the group's newest version is loaded (never onto
        an older one: deltas merged into a newer version would be lost)."""
        group = await self._group_model()
        if group is None:
            return  # the feed is behind: the next fetch or sync merges them
        waiting, self._to_merge = self._to_merge, []
        for message in waiting:
            try:
                delta = decode_delta(message.value, self._config, key=self._key)
                merged = group.merge(delta)
            except Exception as exc:  # refused, or a record no merge can take: never again
                refused = isinstance(exc, ModelRecordRefused)
                reason = exc.reason if isinstance(exc, ModelRecordRefused) else "malformed"
                self._metrics.model_record_refused(reason)
                logger.error(
                    "Refused the delta at %s[%d]@%d: %s (%s)",
                    message.topic,
                    message.partition,
                    message.offset,
                    exc.message if isinstance(exc, ModelRecordRefused) else repr(exc),
                    reason,
                    exc_info=not refused,
                )
                self._ack(message)  # never mergeable: nothing to wait for
                continue
            if merged:
                self._metrics.model_deltas_merged.inc()
            # EASE's counts are in the group's model once a refit publishes the ease part:
            # acknowledged then, so a merger that dies before reads them again. A repeat too
            # whose counts are in a Gram kept over a rebalance (adopted) and in no fit yet.
            if group.ease_awaits_fit(delta):
                self._ease_held.append((time.monotonic(), message))
            else:  # no EASE counts here, or counts a published fit holds: nothing to wait for
                self._held.append(message)
            await asyncio.sleep(0)  # one delta record at a time: scoring goes on between
            if self._group is not group:
                return  # the partition was taken away meanwhile: its next owner merges them

    async def publish(self) -> int | None:
        """Publish the deltas merged since the last version; returns the new version.

        A version the broker did not take is published again at the next sync, with the
        deltas merged meanwhile in the version after it; its updates stay unacknowledged.
        """
        async with self._lock:
            if self._to_merge:
                await self._merge_waiting()
            group = self._group
            if group is None:
                return None
            if self._unpublished is None:
                if not group.dirty:
                    # Only repeats wait in _held here (a merged delta of any part but EASE
                    # makes the group dirty; merged EASE counts wait in _ease_held): no
                    # version will hold them, so an idle group's commits do not wait for
                    # some worker's next delta; nor do EASE deltas held over the hour.
                    held, self._held = self._held, []
                    for message in held + self._ease_held_too_long():
                        self._ack(message)
                    return None
                due = group.lifetime_fit_due()
                if due is not None:
                    # Up to a second of scipy once a day of event time: not on the event loop.
                    fitted = await asyncio.to_thread(fit_lifetime, due[0], now=due[1])
                    if self._group is not group:
                        return None
                    group.take_lifetime_fit(fitted)
                gram = group.ease_fit_due()
                if gram is not None:
                    # EASE's inverse: 2-3 s of a core at 4,000 items, once a day of event time.
                    weights = await asyncio.to_thread(group.fit_ease, gram)
                    if self._group is not group:
                        return None
                    group.take_ease_fit(weights)
                held, self._held = self._held, []
                version, parts = group.publish(fits=False)
                if any(part.key == EASE for part in parts):
                    held, self._ease_held = held + [m for _, m in self._ease_held], []
                else:
                    held += self._ease_held_too_long()
                self._unpublished = (version, parts, held)
            version, parts, held = self._unpublished
            try:
                size = await self._publish(version, parts, group)
            except Exception as exc:
                logger.error("Could not publish version %d of the group model: %s", version, exc)
                return None
            if self._group is not group:
                return None  # deposed while publishing: the next merger merges them again
            self._unpublished = None
            for message in held:
                self._ack(message)
            self._metrics.model_versions_published.inc()
            self._metrics.model_version_bytes.observe(size)
            return version

    def _ease_held_too_long(self) -> list[Message]:
        """The EASE deltas held for a refit longer than :data:`EASE_HOLD_SECONDS`, released."""
        due = time.monotonic() - EASE_HOLD_SECONDS
        stale = [message for merged_at, message in self._ease_held if merged_at <= due]
        if stale:
            self._ease_held = [(t, m) for t, m in self._ease_held if t > due]
            logger.info("Acknowledging %d EASE deltas held over %.0f s for a refit",
                        len(stale), EASE_HOLD_SECONDS)  # fmt: skip
        return stale

    async def _publish(self, version: int, parts: Sequence[GroupPart], group: GroupModel) -> int:
        topic = self._settings.models_topic
        size = 0
        for part in parts:
            if self._group is not group:  # deposed by a rebalance: stop writing at once
                msg = "this worker no longer merges (its partition was reassigned)"
                raise RuntimeError(msg)
            raw = encode_part(part, key=self._key)
            if len(raw) > MODEL_RECORD_BYTES:
                msg = (
                    f"part {part.key} of the group model is {len(raw)} bytes, over the "
                    f"{MODEL_RECORD_BYTES} a record may have: raise CRM_MODEL_ITEM_BUCKETS"
                )
                raise ValueError(msg)
            offset = await self._send(topic, part.key.encode(), raw)
            self._offsets[part.key] = PartRef(version=part.version, offset=offset)
            size += len(raw)
        manifest = ManifestHeader(
            version=version,
            parts=dict(self._offsets),
            shapes=model_shapes(self._config),
            merger=self.worker,
            published_at=self._clock(),
        )
        raw = encode_manifest(manifest, key=self._key)
        if self._group is not group:
            msg = "this worker no longer merges (its partition was reassigned)"
            raise RuntimeError(msg)
        await self._send(topic, MANIFEST_KEY, raw)
        return size + len(raw)

    async def _group_model(self) -> GroupModel | None:
        """The group's model to merge into: the newest version on the models topic (None
        while this worker has not read up to it yet)."""
        if self._group is None:
            feed = self.feed
            if not feed.ready.is_set():
                return None  # the newest version is not loaded yet
            try:
                await asyncio.wait_for(feed.caught_up(), _CATCH_UP_SECONDS)
            except Exception as exc:  # not caught up in time, or the broker does not answer
                logger.warning("Not merging yet: %s is not read up to its end (%r)",
                               self._settings.models_topic, exc)  # fmt: skip
                return None
            if feed.missing:
                logger.warning("Not merging yet: parts %s of the group model are missing",
                               ", ".join(sorted(feed.missing)))  # fmt: skip
                return None
            manifest = self.feed.manifest
            self._offsets = dict(manifest.parts) if manifest is not None else {}
            self._group = GroupModel(
                self._config, self.sync.parts, version=self.feed.highest_version
            )
            kept, self._ease_kept = self._ease_kept, None
            if kept is not None and not self._group.adopt_ease(kept):
                logger.warning("Another merger published EASE meanwhile: its counts start anew")
        return self._group

    def _stop_merging(self) -> None:
        self._merging = False
        if self._group is not None:
            # The Gram is not on the models topic: kept, should the partition come back.
            self._ease_kept = self._group.ease_state()
        self._group = None
        self._to_merge = []
        self._held = []
        self._ease_held = []
        self._unpublished = None
