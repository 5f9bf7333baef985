"""A worker's reader of the models topic: the newest version of the group model, then each new one.

At start-up it reads the newest manifest and the parts it names, before the worker scores a
single event, then each new version as it comes. A record that is not a model record, is of
another format, is unsigned while ``CRM_CHECKPOINT_KEY`` is set, or does not fit this worker's
model shapes is refused, logged and counted; the worker keeps the model it has.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from online_models.group.parts import GroupPart
from online_models.group.worker import WorkerSync
from schemas.model_records import (
    ManifestHeader,
    ModelRecordRefused,
    PartRef,
)
from streams.kafka_security import aiokafka_options
from streams.metrics import ScorerMetrics
from streams.model_codec import MANIFEST_KEY, decode_manifest, decode_part
from streams.settings import Settings
from streams.topics import MODEL_RECORD_BYTES

__all__ = ["ModelFeed"]

logger = logging.getLogger(__name__)


# How long one read of the models topic waits for records before it counts as caught up.
_POLL_MS = 500
# Records between two wanted parts of a manifest beyond which the reader seeks instead.
_SEEK_GAP = 256
# Empty reads in a row after which a part a manifest names counts as missing (for now).
_EMPTY_POLLS = 10
# Parts of a version applied between two turns of the event loop.
_APPLY_SLICE = 4


class ModelFeed:
    """This worker's reader of the models topic: the newest version first, then each new one.

    Applies every version to ``sync`` (the worker's models) on the event loop, between two
    batches of events or while they yield.
    """

    def __init__(
        self,
        settings: Settings,
        sync: WorkerSync,
        metrics: ScorerMetrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._config = settings.scorer_config()
        self._key = settings.signing_key
        self._sync = sync
        self._metrics = metrics
        self._clock = clock
        self._tp = TopicPartition(settings.models_topic, 0)
        self._consumer: AIOKafkaConsumer | None = None
        self._buffer: dict[str, tuple[int, GroupPart]] = {}  # key -> (offset, newest record)
        self._applying = asyncio.Lock()
        #: Set once the newest version at start-up is applied.
        self.ready = asyncio.Event()
        #: The newest manifest applied, and the highest part version ever read.
        self.manifest: ManifestHeader | None = None
        #: Parts of the applied manifests that could not be read yet, by key.
        self.missing: dict[str, PartRef] = {}
        self.highest_version = 0
        self._position = 0

    async def start(self) -> None:
        """Load the newest version of the group's model (none yet: fresh models)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.broker_hosts,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=MODEL_RECORD_BYTES + 1024,
            fetch_max_bytes=4 * MODEL_RECORD_BYTES,
            request_timeout_ms=30_000,
            **aiokafka_options(self._settings),
        )
        await consumer.start()
        consumer.assign([self._tp])
        self._consumer = consumer
        end = await self._end()
        found = await self._newest_manifest(end)
        if found is None:
            logger.info("No version of the group model yet: starting from fresh models")
            self._position = 0
        else:
            offset, manifest = found
            async with self._applying:
                parts = await self._parts_at(manifest.parts)
                await self._apply(manifest, parts, manifest.parts)
                self._position = offset + 1
        consumer.seek(self._tp, self._position)
        self.ready.set()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def follow(self) -> None:
        """Apply each new version as the merger publishes it (runs until cancelled)."""
        await self.ready.wait()
        while True:
            await self.read_new()

    async def read_new(self, timeout_ms: int = _POLL_MS) -> int:
        """Read what was published since the last read; returns the records read."""
        assert self._consumer is not None
        batches = await self._consumer.getmany(self._tp, timeout_ms=timeout_ms)
        count = 0
        for message in batches.get(self._tp, []):
            count += 1
            if message.key == MANIFEST_KEY:
                async with self._applying:  # the merger never reads a version half applied
                    await self._on_manifest(message.offset, message.value)
                    self._position = message.offset + 1
            else:
                self._on_part(message.offset, message.value)
                self._position = message.offset + 1
        return count

    async def caught_up(self) -> None:
        """Return once every version published before the call is applied."""
        end = await self._end()
        while self._position < end:
            await asyncio.sleep(0.05)
        async with self._applying:  # a version read is applied whole first
            pass

    def _on_part(self, offset: int, raw: bytes | None) -> None:
        try:
            part = decode_part(raw, self._config, key=self._key)
        except ModelRecordRefused as exc:
            self._refused(exc, offset)
            return
        self.highest_version = max(self.highest_version, part.version)
        self._buffer[part.key] = (offset, part)

    async def _on_manifest(self, offset: int, raw: bytes | None) -> None:
        try:
            manifest = decode_manifest(raw, self._config, key=self._key)
        except ModelRecordRefused as exc:
            self._refused(exc, offset)
            return
        if self.manifest is not None and manifest.version <= self.manifest.version:
            return
        applied = self._sync.parts
        changed = {
            key: ref
            for key, ref in manifest.parts.items()
            if key not in applied or applied[key].version < ref.version
        }
        # Parts missing from an earlier version (refused, or not read in time) come again.
        changed.update({k: r for k, r in self.missing.items() if k not in manifest.parts})
        parts = {}
        missing = {}
        for key, ref in changed.items():
            buffered = self._buffer.get(key)
            if buffered is not None and buffered[1].version >= ref.version:
                parts[key] = buffered[1]
            else:
                missing[key] = ref
        if missing:  # a record refused or read before this worker started: fetch it
            parts.update(await self._parts_at(missing, resume=self._position))
        await self._apply(manifest, parts, changed)
        for key in parts:
            self._buffer.pop(key, None)

    async def _apply(
        self,
        manifest: ManifestHeader,
        parts: Mapping[str, GroupPart],
        wanted: Mapping[str, PartRef],
    ) -> None:
        """Apply a version a few parts at a time, letting the worker's other tasks (scoring,
        heartbeats, /metrics) run in between: a big version never holds the event loop for
        longer than a slice. Parts ``wanted`` but not read are remembered as missing: they
        are fetched again with the next version, and this worker will not merge meanwhile."""
        self.missing = {key: ref for key, ref in wanted.items() if key not in parts}
        started = time.perf_counter()
        longest = 0.0
        for held in self._sync.apply_slices(manifest.version, parts, _APPLY_SLICE):
            longest = max(longest, held)
            self._metrics.model_apply_seconds.observe(held)
            await asyncio.sleep(0)
        self.manifest = manifest
        self.highest_version = max(self.highest_version, manifest.version)
        self._metrics.model_loaded.set(self._clock())
        logger.info(
            "Scoring with version %d of the group model (%d parts changed, applied in "
            "%.0f ms, the event loop held %.0f ms at most)",
            manifest.version,
            len(parts),
            (time.perf_counter() - started) * 1000,
            longest * 1000,
        )

    def _refused(self, exc: ModelRecordRefused, offset: int) -> None:
        self._metrics.model_record_refused(exc.reason)
        logger.error(
            "Refused the record at %s[0]@%d: %s (%s); keeping the model",
            self._settings.models_topic,
            offset,
            exc.message,
            exc.reason,
        )

    async def _end(self) -> int:
        assert self._consumer is not None
        ends = await self._consumer.end_offsets([self._tp])
        return int(ends[self._tp])

    async def _read_range(self, start: int, end: int) -> list[Any]:
        """The records from ``start`` up to (at least) ``end - 1``, or as far as there are."""
        assert self._consumer is not None
        self._consumer.seek(self._tp, start)
        records: list[Any] = []
        while not records or records[-1].offset < end - 1:
            batch = await self._consumer.getmany(self._tp, timeout_ms=_POLL_MS)
            if not batch.get(self._tp):
                break
            records += batch[self._tp]
        return records

    async def _newest_manifest(self, end: int) -> tuple[int, ManifestHeader] | None:
        """The newest readable manifest, searching back from the end (it is nearly always the
        last record: the merger writes it after the parts)."""
        window = 1
        while end > 0:
            start = max(0, end - window)
            for message in reversed(await self._read_range(start, end)):
                if message.key != MANIFEST_KEY:
                    continue
                try:
                    return message.offset, decode_manifest(
                        message.value, self._config, key=self._key
                    )
                except ModelRecordRefused as exc:
                    self._refused(exc, message.offset)
            if start == 0:
                return None
            end, window = start, window * 16
        return None

    async def _parts_at(
        self, refs: Mapping[str, PartRef], resume: int | None = None
    ) -> dict[str, GroupPart]:
        """The parts a manifest names, read at their offsets (or later: compaction keeps only
        the newest record of a part, and a newer one is as good)."""
        assert self._consumer is not None
        wanted = dict(sorted(refs.items(), key=lambda kv: kv[1].offset))
        found: dict[str, GroupPart] = {}
        position: int | None = None  # offset of the last record read
        for key, ref in wanted.items():
            if key in found or (position is not None and ref.offset <= position):
                continue  # found, or read past without finding it: missing
            if position is None or ref.offset > position + _SEEK_GAP:
                self._consumer.seek(self._tp, ref.offset)
            empty = 0
            while key not in found and empty < _EMPTY_POLLS:
                batch = await self._consumer.getmany(self._tp, timeout_ms=_POLL_MS)
                messages = batch.get(self._tp, [])
                if not messages:
                    empty += 1  # a slow broker or a big record: ask again before giving up
                    continue
                empty = 0
                for message in messages:
                    position = message.offset
                    name = (message.key or b"").decode("utf-8", "replace")
                    wanted_ref = wanted.get(name)
                    if wanted_ref is None or name in found or message.offset < wanted_ref.offset:
                        continue
                    try:
                        found[name] = decode_part(message.value, self._config, key=self._key)
                    except ModelRecordRefused as exc:
                        self._refused(exc, message.offset)
        for key in wanted.keys() - found.keys():
            self._metrics.model_record_refused("missing_part")
            logger.error(
                "Part %s of the group model is missing from %s (tried again with the next "
                "version; this worker does not merge until it has it)",
                key,
                self._tp.topic,
            )
        if resume is not None:
            self._consumer.seek(self._tp, resume)
        return found
