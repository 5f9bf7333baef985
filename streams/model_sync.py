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

Every worker reads the models topic (:class:`ModelFeed`): at start-up the newest manifest and
the parts it names, before it scores a single event, then each new version as it comes.
A record that is not a model record, is of another format, is unsigned while
``CRM_CHECKPOINT_KEY`` is set, or does not fit this worker's model shapes is refused, logged
and counted; the worker keeps the model it has.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import Message

from online_models.customer.profile import CHURN_FEATURES
from online_models.group.model import GroupModel
from online_models.group.parts import Delta, GroupPart, share_from_arrays, share_to_arrays
from online_models.group.worker import WorkerSync
from online_models.scoring.scorer import CustomerScorer, ScorerConfig
from online_models.value.lifetime_fit import fit_lifetime
from schemas.model_records import (
    DeltaHeader,
    ManifestHeader,
    ModelRecord,
    ModelRecordRefused,
    PartHeader,
    PartRef,
    decode_record,
    encode_record,
    read_header,
)
from streams.kafka_security import aiokafka_options
from streams.metrics import ScorerMetrics
from streams.settings import Settings
from streams.topics import MODEL_RECORD_BYTES

__all__ = [
    "ModelFeed",
    "ModelSync",
    "decode_delta",
    "decode_manifest",
    "decode_part",
    "encode_delta",
    "encode_manifest",
    "encode_part",
    "model_shapes",
]

logger = logging.getLogger(__name__)

MANIFEST_KEY = b"manifest"
# How long one read of the models topic waits for records before it counts as caught up.
_POLL_MS = 500
# Records between two wanted parts of a manifest beyond which the reader seeks instead.
_SEEK_GAP = 256
# Empty reads in a row after which a part a manifest names counts as missing (for now).
_EMPTY_POLLS = 10
# Parts of a version applied between two turns of the event loop.
_APPLY_SLICE = 4
# The longest the merger waits for its feed to reach the newest version (it waits in the fetch
# loop: the events wait as long), then leaves the deltas for the next fetch or sync.
_CATCH_UP_SECONDS = 0.5


def model_shapes(config: ScorerConfig) -> dict[str, int]:
    """The sizes a model record must fit to be used by models made with ``config`` (and,
    with density segments, that they are: k-means groups' shapes are as they always were)."""
    shapes = {
        "segments": config.segments,
        "factors": config.recommender_factors,
        "item_buckets": config.item_buckets,
        "churn_features": len(CHURN_FEATURES),
        "lifetime_sample": config.lifetime_sample,
    }
    if config.segment_model == "density":
        shapes["density_segments"] = 1
    return shapes


# --- records ----------------------------------------------------------------------------------


def encode_delta(delta: Delta, *, key: bytes | None, sent_at: float) -> bytes:
    """A worker's delta as a signed model record."""
    header = DeltaHeader(key=delta.key, worker=delta.worker, seq=delta.seq, sent_at=sent_at)
    meta, arrays = share_to_arrays(delta.share)
    return encode_record(
        ModelRecord("delta", {"header": header.model_dump(), "share": meta}, arrays), key=key
    )


def decode_delta(raw: bytes | None, config: ScorerConfig, *, key: bytes | None) -> Delta:
    """A delta from its record; :class:`ModelRecordRefused` for anything not to be merged."""
    record = _decoded(raw, "delta", key)
    header: DeltaHeader = read_header(record)
    share = _share(header.key, record, config)
    return Delta(header.key, header.worker, header.seq, share)


def encode_part(part: GroupPart, *, key: bytes | None) -> bytes:
    """A part of the group's model as a signed model record."""
    header = PartHeader(
        key=part.key, version=part.version, merged=dict(part.merged), since=part.since
    )
    meta, arrays = share_to_arrays(part.share)
    if part.changed is not None:
        arrays = {**arrays, "changed": part.changed}
    return encode_record(
        ModelRecord("part", {"header": header.model_dump(), "share": meta}, arrays), key=key
    )


def decode_part(raw: bytes | None, config: ScorerConfig, *, key: bytes | None) -> GroupPart:
    """A part from its record; :class:`ModelRecordRefused` for anything not to be trusted."""
    record = _decoded(raw, "part", key)
    header: PartHeader = read_header(record)
    share = _share(header.key, record, config)
    changed = record.arrays.get("changed")
    if changed is not None:
        size = len(getattr(share, "items", ()))
        if (
            changed.ndim != 1
            or changed.dtype.kind != "i"
            or (changed >= size).any()
            or (changed < 0).any()
        ):
            msg = f"part record of {header.key} names changed items it does not hold"
            raise ModelRecordRefused("shape", msg)
    return GroupPart(header.key, share, header.version, header.merged, header.since, changed)


def encode_manifest(header: ManifestHeader, *, key: bytes | None) -> bytes:
    """A version's manifest as a signed model record."""
    return encode_record(ModelRecord("manifest", {"header": header.model_dump()}), key=key)


def decode_manifest(
    raw: bytes | None, config: ScorerConfig, *, key: bytes | None
) -> ManifestHeader:
    """A manifest from its record; refused when made for other model shapes."""
    header: ManifestHeader = read_header(_decoded(raw, "manifest", key))
    expected = model_shapes(config)
    if header.shapes != expected:
        msg = f"the group model's version {header.version} has shapes {header.shapes}, this "
        msg += f"worker's models {expected} (CRM_SEGMENT_MODEL, CRM_SEGMENTS, "
        msg += "CRM_RECOMMENDER_FACTORS, CRM_MODEL_ITEM_BUCKETS must be the same on every worker)"
        raise ModelRecordRefused("shape", msg)
    return header


def _decoded(raw: bytes | None, kind: str, key: bytes | None) -> ModelRecord:
    if raw is None:
        raise ModelRecordRefused("not_a_model_record", f"an empty {kind} record")
    record = decode_record(raw, key=key)
    if record.kind != kind:
        msg = f"a {record.kind} record where a {kind} was expected"
        raise ModelRecordRefused("malformed", msg)
    return record


def _share(key: str, record: ModelRecord, config: ScorerConfig) -> Any:
    meta = record.meta.get("share")
    if not isinstance(meta, dict):
        raise ModelRecordRefused("malformed", f"{record.kind} record of {key} has no share")
    try:
        return share_from_arrays(key, meta, record.arrays, config)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelRecordRefused("shape", f"{record.kind} record of {key}: {exc}") from None


# --- reading the models topic -----------------------------------------------------------------


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


# --- the worker's side and the merger's ---------------------------------------------------------


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
                    return None
                due = group.lifetime_fit_due()
                if due is not None:
                    # Up to a second of scipy once a day of event time: not on the event loop.
                    fitted = await asyncio.to_thread(fit_lifetime, due[0], now=due[1])
                    if self._group is not group:
                        return None
                    group.take_lifetime_fit(fitted)
                held, self._held = self._held, []
                self._unpublished = (*group.publish(), held)
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
        return self._group

    def _stop_merging(self) -> None:
        self._merging = False
        self._group = None
        self._to_merge = []
        self._held = []
        self._unpublished = None
