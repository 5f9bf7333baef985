"""The Faust app: events topic in, customer table, scores to Redis, alerts and dead letters out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, NamedTuple

import faust
from aiokafka.errors import ConsumerStoppedError
from faust.types import Message
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from online_models.customer.activity import Activity
from online_models.scoring.engine import Scored, ScoringEngine
from online_models.scoring.scorer import CustomerScore, CustomerScorer
from online_models.scoring.state import CustomerState
from schemas.audit import ErasureRecord
from schemas.event_batch import EventBatch, EventColumns, decode_events
from streams.batch_loop import handle_one, run_end, run_limit, score_run
from streams.batching import BatchingApp, leave_event
from streams.catalogue import CatalogueCheck, CatalogueFeed
from streams.convert import activities_of, alert_of, score_fields
from streams.customer_table import CachedStates
from streams.dead_lettering import DeadLetters
from streams.dead_lettering import position as _position
from streams.kafka_security import faust_credentials
from streams.lag import LAG_SECONDS, LagProbe
from streams.metrics import ScorerMetrics
from streams.model_sync import ModelSync
from streams.producing import BatchProducer, RecordsLost
from streams.pseudonyms import pseudonymiser
from streams.redis_sink import ScoreWriter
from streams.settings import Settings
from streams.topics import MODEL_RECORD_BYTES
from streams.web import FAUST_VIEW_SETTINGS, Readiness, install_routes, redis_check, web_ssl_context

__all__ = ["ScorerService"]

logger = logging.getLogger(__name__)

# A score queued for Redis, rendered at the flush: customer, state, model score.
_Unrendered = tuple[str, CustomerState, CustomerScore]

CUSTOMER_TABLE = "customers"
RESCHEDULE_CHUNK = 5_000
# How often the worker asks Redis whether it is still the same server (run_id).
REDIS_WATCH_SECONDS = 5.0
# The longest a batch of events holds the event loop before letting other tasks run.
YIELD_SECONDS = 0.02
# The longest a long batch's changed states wait for the changelog (Faust commits every 2.8 s).
PERSIST_SECONDS = 1.0
# How often a group with no model version yet syncs (then every CRM_MODEL_SYNC_SECONDS).
FIRST_SYNC_SECONDS = 1.0
# The longest a stopping worker spends handing its last delta to the group.
SHUTDOWN_SYNC_SECONDS = 10.0
# A restarted Redis is refilled in pipelines of about this many scores.
REWRITE_CHUNK = 2_000
# A fetch is decoded this many messages at a time (about 2 ms), so a long one holds the event
# loop no longer than the scoring between two yields does.
DECODE_CHUNK = 1_000


@dataclass(frozen=True, slots=True)
class _Decoded:
    """Messages ``start``.. of a fetch decoded in one call: the events as columns, each row's
    activity, and the decode's share of each message's processing time."""

    start: int
    batch: EventBatch
    activities: list[Activity | None]
    seconds_each: float

    @property
    def end(self) -> int:
        return self.start + len(self.batch.rows)


class _Erasure(NamedTuple):
    """An erasure request carried out in memory, waiting for Redis and its audit record."""

    message: Message
    request_id: str
    requested_by: str
    requested_at: datetime
    customer_id: str
    removed: dict[str, bool | int]


class ScorerService:
    """Builds the Faust app for ``settings`` and holds what its agent needs.

    Nothing connects here: Faust connects when the worker starts, and the Redis client
    connects on its first write.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = ScorerMetrics(self.registry)
        self.scorer = CustomerScorer(settings.scorer_config())
        #: The id the scorer keeps for a customer: raw, or pseudonymised (CRM_PSEUDONYM_KEY).
        self._customer_id = pseudonymiser(settings)
        #: Erasure requests handled, waiting for Redis and the audit record.
        self._erasures: list[_Erasure] = []
        self._erasures_waiting = False  # Redis refused one: retried once per batch
        self._erasure_lock = asyncio.Lock()
        self._clock = clock
        self._active_partitions: set[int] = set()
        self._assignments = 0  # rebalances this worker completed (readiness)
        self._rebuild_schedule = False
        self.redis = Redis.from_url(
            settings.redis_url.get_secret_value(), socket_timeout=5.0, socket_connect_timeout=5.0
        )
        self.writer = ScoreWriter(
            self.redis,
            prefix=settings.redis_prefix,
            metrics=self.metrics,
            batch_size=settings.redis_batch_size,
            ttl_seconds=int(settings.score_ttl_days * 86_400),
            clock=clock,
            render_many=self._render_many,
        )
        # Latest offset handled per partition owned now, and the lag last measured from it.
        self._handled_offsets: dict[int, int] = {}
        self._lag: dict[int, int] = {}
        # What the latest run of events cost per message: the next run is sized to it.
        self._seconds_each = 0.0
        self._lag_probe = LagProbe(settings)
        # Events handled but not yet acknowledged (their scores may still be buffered).
        self._handled: list[Message] = []
        self._rewriting = False
        self.model_sync = ModelSync(
            settings, self.scorer, self.metrics, send=self._send, ack=self._ack, clock=clock
        )
        self.catalogue = CatalogueFeed(settings, self.scorer, self.metrics)
        self.app = self._build_app()
        # Alerts and dead letters, then changelog records, sent in batches on Faust's producer.
        kafka = lambda: self.app.producer._ensure_producer()  # type: ignore[attr-defined]  # noqa: E731
        self.outbox, self.changelog = BatchProducer(kafka), BatchProducer(kafka)
        self._persisting = asyncio.Lock()
        self.states = CachedStates(self.customers, capacity=settings.state_cache_customers)
        self.dead_letters = DeadLetters(settings.dlq_topic, self.outbox, self.metrics, clock)
        self.engine = ScoringEngine(
            self.scorer, self.states, event_id_window=settings.event_id_window
        )
        # Read at every scrape, so never stale.
        self.metrics.track(
            customers=lambda: len(self.customers),
            roc_auc=lambda: self.scorer.quality.cohort_roc_auc,
            log_loss=lambda: self.scorer.quality.log_loss,
            pending_labels=lambda: self.scorer.pending_labels,
            events_learned=lambda: self.scorer.model_version_events,
            hit_rate=lambda: self.scorer.recommendation_quality.hit_rate,
            rescores_scheduled=self.engine.scheduled,
            producer_pending=lambda: self.app.producer.buffer.size + self._records_pending(),
            value_rank_correlation=lambda: self.scorer.value_quality.cohort_rank_correlation,
            value_labels=lambda: self.scorer.spend_model.labels_learned,
            arm_hit_rates=lambda: self.scorer.recommender.arm_hit_rates,
            arm_served=lambda: self.scorer.recommender.arms[self.scorer.recommender.arm].name,
            ease_items=lambda: self.scorer.recommender.ease_items,
        )

    def _build_app(self) -> faust.App:
        s = self.settings
        app = BatchingApp(
            s.app_id,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            broker=s.broker,
            broker_credentials=faust_credentials(s),
            store=s.store,
            datadir=str(s.data_dir),
            autodiscover=False,
            web_enabled=True,
            web_port=s.web_port,
            web_bind=s.web_bind,
            web_host="localhost",
            web_ssl_context=web_ssl_context(s),
            **FAUST_VIEW_SETTINGS,
            topic_partitions=s.topic_partitions,
            topic_replication_factor=s.topic_replication,
            key_serializer="raw",
            value_serializer="raw",
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=s.session_timeout,
            broker_rebalance_timeout=s.rebalance_timeout,
            broker_heartbeat_interval=min(3.0, s.session_timeout / 3),
            broker_request_timeout=max(40.0, s.session_timeout + 10),
            table_cleanup_interval=60.0,
            producer_max_batch_size=s.producer_batch_bytes,
            # A part of the group model is one record (see CRM_MODEL_ITEM_BUCKETS).
            producer_max_request_size=MODEL_RECORD_BYTES + 65_536,
            # Acks are manual (after the Redis write) and redelivery is idempotent: Faust must
            # not wait for them on a rebalance or at shutdown, when the flush timers stop.
            stream_wait_empty=False,
        )
        self.events_topic = app.topic(s.events_topic, partitions=s.topic_partitions)
        self.alerts_topic = app.topic(s.alerts_topic, partitions=s.topic_partitions)
        self.dlq_topic = app.topic(s.dlq_topic, partitions=s.topic_partitions)
        self.audit_topic = app.topic(s.audit_topic, partitions=s.topic_partitions)
        # One partition each: the group's assignment of the updates topic elects the merger.
        self.updates_topic = app.topic(s.model_updates_topic, partitions=1)
        self.models_topic = app.topic(s.models_topic, partitions=1, compacting=True)
        self.items_topic = app.topic(s.items_topic, compacting=True)
        # bytes values make the changelog raw: what recovery hands back is what was stored.
        self.customers = app.Table(
            CUSTOMER_TABLE,
            default=None,
            key_type=str,
            value_type=bytes,
            partitions=s.topic_partitions,
            help="Per-customer features, pending churn label, segment and alert memory.",
        )

        async def flush_scores() -> None:
            await self._flush()

        async def watch_redis() -> None:
            if await self.writer.server_restarted():
                await self._rewrite_scores()
            if self._erasures:  # waiting for Redis, and maybe for no more events
                self._erasures_waiting = False
                await self._carry_out_erasures()

        async def before_shutdown(sender: Any, **kwargs: Any) -> None:
            written = await self._flush(force=True)
            left = len(self.writer)
            if left:
                logger.error("Shutting down with %d scores Redis did not take", left)
            logger.info("Shutting down: flushed %d pending scores to Redis", written)
            await self.redis.aclose()
            await self._lag_probe.close()
            # What the models learned since the last sync goes to the group, not with us.
            try:
                await asyncio.wait_for(self.model_sync.tick(), SHUTDOWN_SYNC_SECONDS)
            except Exception as exc:
                logger.error("Could not hand the models' last delta to the group: %s", exc)
            else:
                logger.info("Handed the models' last delta to the group")
            await self.model_sync.feed.stop()
            await self.catalogue.stop()

        async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
            self.model_sync.on_revoked()
            await self._persist()  # before the partitions' next owner reads their changelog
            self.states.drop({tp.partition for tp in revoked if tp.topic == s.events_topic})
            await self._flush(force=True)
            # Not acknowledged: the partitions' next owner carries them out again.
            self._erasures.clear()
            # What this worker reports about partitions it may no longer own.
            self.engine.segment_sizes.clear()
            self._handled_offsets.clear()
            self._lag.clear()

        async def measure_lag() -> None:
            try:
                self._lag = await self._lag_probe.measure(
                    self._active_partitions, self._handled_offsets
                )
            except Exception as exc:  # the broker is unreachable: the next round tries again
                logger.debug("Cannot measure the consumer lag: %s", exc)

        async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
            # Deadlines live in memory: rebuild them from the table once it is recovered,
            # which is before the agent sees the next event.
            self._active_partitions = {
                tp.partition for tp in assigned if tp.topic == self.settings.events_topic
            }
            self._assignments += 1
            updates = self.settings.model_updates_topic
            self.model_sync.on_assigned(any(tp.topic == updates for tp in assigned))
            self._rebuild_schedule = True
            self.metrics.last_rebalance.set(self._clock())

        async def follow_models() -> None:
            await self.writer.server_restarted()  # which Redis server holds the scores
            await self._follow_models()

        async def sync_models() -> None:
            await self.model_sync.tick(force=False)

        app.batch_agent(self.events_topic, self.handle_batch, name="score-events")
        app.batch_agent(self.updates_topic, self.model_sync.merge, name="merge-models")
        checked = CatalogueCheck(self._dead_letter_now, self._ack)
        app.batch_agent(self.items_topic, checked.check, name="check-items")
        app.task(follow_models)
        app.task(self.catalogue.run)
        app.timer(min(s.model_sync_seconds, FIRST_SYNC_SECONDS), name="sync-models")(sync_models)
        app.timer(s.redis_flush_ms / 1000.0, name="flush-scores")(flush_scores)
        app.timer(REDIS_WATCH_SECONDS, name="watch-redis")(watch_redis)
        app.timer(LAG_SECONDS, name="measure-lag")(measure_lag)
        install_routes(
            app,
            s,
            registry=self.registry,
            before_scrape=lambda: self.metrics.partitions_and_segments(
                self._lag, self.engine.segment_counts()
            ),
            readiness=Readiness(
                {
                    "partitions_assigned": self._assigned,
                    "tables_recovered": self._recovered,
                    "models_loaded": self._models_loaded,
                    "catalogue_loaded": self._catalogue_loaded,
                    "redis_reachable": redis_check(self.redis.ping),
                }
            ),
        )
        app.on_before_shutdown.connect(before_shutdown)  # type: ignore[arg-type]
        app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]
        app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]
        return app

    async def handle_batch(self, messages: list[Message]) -> None:
        """Decode, score and emit the events of one fetch, then write their scores to Redis.

        Bad input never raises: it is dead-lettered. What a bug might raise is logged and the
        event acknowledged all the same, rather than blocking its partition's commits. Offsets
        are acknowledged once the batch's alerts, dead letters and changed customer states are
        in Kafka and the events' scores in Redis (see :meth:`_persist`, :meth:`_flush`), so a
        committed offset never runs ahead of what a crash could lose. A long batch does both
        as it goes: the changelog every ``PERSIST_SECONDS`` of scoring (or when changed states
        or queued records reach their bounds), Redis every ``CRM_REDIS_FLUSH_MS``. A message
        of an older consumer generation (a rebalance began) ends the batch: the rest are
        fetched again by whoever owns their partition next.
        """
        for ready in (self.model_sync.feed.ready, self.catalogue.ready):
            if not ready.is_set():  # the group model and the catalogue, then the first event
                await ready.wait()
        if self._rebuild_schedule:
            await self._reschedule_pending()
        app = self.app
        handled: list[Message] = []
        flow_active = app.flow_control.is_active
        not_after = datetime.fromtimestamp(self._clock() + self.settings.max_future_seconds, UTC)
        observe, clock = self.metrics.processing_seconds.observe, time.perf_counter
        settings, states = self.settings, self.states
        flush_seconds, producer_limit = settings.redis_flush_ms / 1e3, settings.producer_max_pending
        slice_started = flushed = persisted = clock()
        decoded: _Decoded | None = None
        index = 0
        while index < len(messages):
            if decoded is None or index == decoded.end:
                decoded = self._decode(messages, index, not_after)
            started = clock()
            if started - slice_started >= YIELD_SECONDS:
                if started - persisted >= PERSIST_SECONDS:  # a long batch commits as it goes
                    await self._persist(handled)
                    persisted = clock()
                if started - flushed >= flush_seconds:  # what is scored so far to Redis
                    await self._flush()
                    flushed = clock()
                await asyncio.sleep(0)  # /metrics, timers and the Redis flush get their turn
                started = slice_started = clock()
            message = messages[index]
            generation = app.consumer_generation_id
            if message.generation_id != generation or not flow_active():
                break
            limit = run_limit(self._seconds_each, YIELD_SECONDS)
            stop = run_end(messages, decoded, index, generation, limit)
            if stop > index:  # a run of events scored together
                outcomes = score_run(self, messages, decoded, index, stop)
            else:  # an erasure request, alone
                outcomes = [handle_one(self, message, decoded, index)]
                stop = index + 1
            if self._erasures and not self._erasures_waiting:  # acked once carried out
                await self._carry_out_erasures()
            each = (clock() - started) / (stop - index) + decoded.seconds_each
            self._seconds_each = each  # the next run's size follows what this one cost
            for done, outcome in zip(messages[index:stop], outcomes, strict=True):
                self._handled_offsets[done.partition] = done.offset
                if outcome != "erased":
                    handled.append(done)
                observe(each)
            index = stop
            if states.unwritten >= states.capacity or self._records_pending() > producer_limit:
                await self._persist(handled)
                slice_started = persisted = clock()
        leave_event()
        self.metrics.mirror_totals(
            churn_drifts=self.scorer.quality.drifts, rescore_errors=self.engine.rescore_errors
        )
        await self._persist(handled)
        if self._erasures:  # once per batch while Redis refuses them
            self._erasures_waiting = False
            await self._carry_out_erasures()
        await self._flush()
        limit = self.settings.redis_max_pending
        if len(self.writer) >= limit or len(self._handled) >= limit:
            await self._wait_for_redis()

    async def _persist(self, handled: list[Message] | None = None) -> None:
        """Send the queued alerts and dead letters, then the changelog records of every
        changed customer state, each once the broker acknowledged the ones before; then
        the events ``handled`` (emptied) may be acknowledged once their scores are in Redis.

        Alerts go first: after a crash between the two, the redelivered event is applied and
        its alert sent again (same ``alert_id``), rather than found applied and its alert lost.
        A changelog record the broker refused crashes the worker: the state it carried exists
        only here, and its events must be redelivered to whoever owns them next.
        """
        async with self._persisting:
            try:
                await self.outbox.send()
                limit = self.settings.producer_max_pending  # records waiting for the broker
                while self.states.write_back(self.changelog, limit):
                    await self.outbox.send()  # alerts of events handled while the last send ran
                    await self.changelog.send()
                if handled:
                    self._handled.extend(handled)
                    handled.clear()
            except RecordsLost as exc:
                logger.critical("Customer states did not reach the changelog: %s", exc)
                await self.app.crash(exc)
                raise

    async def _dead_letter_now(
        self,
        message: Message,
        reason: str,
        error: str,
        field: str | None,
        event_type: str | None,
    ) -> None:
        """Dead-letter a record of another topic than the events' (a catalogue record): sent
        and acknowledged by the broker before the caller acknowledges the record."""
        self.dead_letters.add(message, reason, error, field, event_type)
        await self.outbox.send()

    def _records_pending(self) -> int:
        return self.outbox.pending + self.changelog.pending

    async def _follow_models(self) -> None:
        """Load the newest version of the group model, then apply each new one; a broker
        that does not answer is asked again."""
        feed = self.model_sync.feed
        while not feed.ready.is_set():
            try:
                await feed.start()
            except Exception as exc:
                logger.warning("Cannot read %s yet: %s", self.settings.models_topic, exc)
                await feed.stop()
                await asyncio.sleep(1.0)
        while True:
            try:
                await feed.follow()
            except asyncio.CancelledError:
                raise
            except ConsumerStoppedError:
                return  # the worker stops
            except Exception:
                logger.exception("Reading %s failed; reading on", self.settings.models_topic)
                await asyncio.sleep(1.0)

    async def _send(self, topic: str, key: bytes, value: bytes) -> int:
        """Produce one record of the model topics; its offset once the broker has it."""
        target = self.updates_topic if topic == self.settings.model_updates_topic else None
        target = target or self.models_topic
        metadata = await (await target.send(key=key, value=value))
        return int(metadata.offset)

    def _ack(self, message: Message) -> None:
        self.app.consumer.ack(message)

    async def _assigned(self) -> bool | str:
        """Readiness: the consumer group gave this worker its partitions (maybe none)."""
        if not self._assignments:
            return "waiting for the consumer group to assign partitions"
        return "rebalancing" if self.app.rebalancing else True

    async def _recovered(self) -> bool | str:
        """Readiness: the customer table is rebuilt from its changelog."""
        tables: Any = self.app.tables
        return tables.recovery.completed.is_set() or "recovering the customer table"

    async def _models_loaded(self) -> bool | str:
        """Readiness: the newest version of the group model is loaded."""
        ready = self.model_sync.feed.ready.is_set()
        return ready or "loading the newest version of the group model"

    async def _catalogue_loaded(self) -> bool | str:
        """Readiness: the whole catalogue is read."""
        return self.catalogue.ready.is_set() or "reading the catalogue"

    async def _flush(self, *, force: bool = False) -> int:
        """Write the buffered scores; then acknowledge the events handled before, so Faust
        may commit their offsets. After a failed write nothing is acknowledged."""
        # Taken before the write: these events' scores are all in this flush's batch (or in a
        # flush already under way), whatever the agent handles while it runs.
        handled, self._handled = self._handled, []
        was_failing = self.writer.failing
        try:
            written = await self.writer.flush(force=force)
        except BaseException:  # cancelled (the worker stops): acknowledged by no one yet
            self._handled = handled + self._handled
            raise
        if self.writer.failing:
            self._handled = handled + self._handled
            return written
        ack = self.app.consumer.ack
        for message in handled:
            ack(message)
        if was_failing and not self._rewriting and await self.writer.server_restarted():
            await self._rewrite_scores()  # back after an outage, and empty
        return written

    async def _carry_out_erasures(self) -> None:
        """Delete the forgotten customers' scores from Redis, publish an audit record for
        each, then acknowledge their requests. The state, schedule and user factors went
        when the request was handled; if Redis fails, they wait for the next batch or the
        Redis watch, whichever comes first."""
        async with self._erasure_lock:
            while self._erasures:
                message, request_id, requested_by, requested_at, customer_id, removed = (
                    self._erasures[0]
                )
                try:
                    had_score = await self.writer.delete(customer_id)
                except Exception as exc:  # RedisError, OSError: retried, never dropped
                    self.metrics.redis_errors.inc()
                    logger.error("Erasure %s waits for Redis: %s", request_id, exc)
                    self._erasures_waiting = True
                    return
                record = ErasureRecord(
                    request_id=request_id,
                    customer_id=customer_id,
                    requested_by=requested_by,
                    requested_at=requested_at,
                    erased_at=datetime.fromtimestamp(self._clock(), UTC),
                    worker=self.settings.app_id,
                    partition=message.partition,
                    offset=message.offset,
                    removed={**removed, "redis_score": had_score},
                )
                key, value = customer_id.encode(), record.to_bytes()
                await (await self.audit_topic.send(key=key, value=value))
                await self._persist()  # the customer's tombstone is in the changelog
                self.app.consumer.ack(message)
                self._erasures.pop(0)
                logger.info("Carried out erasure request %s", request_id)

    async def _wait_for_redis(self) -> None:
        """Stop consuming until Redis takes the scores it missed (Kafka keeps the events).

        Bounds the worker's memory during an outage: the scores waiting (one per customer)
        and the events waiting for them (one per event). Gives up when the worker stops.
        """
        limit = self.settings.redis_max_pending
        logger.warning(
            "Redis has not taken %d scores of %d events (CRM_REDIS_MAX_PENDING=%d): consuming "
            "paused until it does",
            len(self.writer),
            len(self._handled),
            limit,
        )
        self.metrics.redis_paused.set(1)
        while len(self.writer) >= limit or len(self._handled) >= limit:
            if self.app.should_stop:
                return
            await self._flush()
            if self.writer.failing:
                await asyncio.sleep(0.5)
        self.metrics.redis_paused.set(0)
        logger.info("Redis takes scores again: consuming resumed")

    async def _rewrite_scores(self) -> None:
        """Write every score of this worker's partitions again: Redis came back empty.

        Each customer's state is read and their score queued in one step, so a newer score
        the agent queues afterwards still wins.
        """
        logger.warning("Redis restarted (new run_id): writing every customer's score again")
        self.metrics.redis_resyncs.inc()
        self._rewriting = True
        try:
            queued = await self._queue_every_score()
        except Exception:
            logger.exception("Rewriting the scores for the restarted Redis failed")
            return
        finally:
            self._rewriting = False
        logger.info("Queued %d customers' scores for the restarted Redis", queued)

    async def _queue_every_score(self) -> int:
        queued = 0
        async for customer_id, state in self._owned_states("rewrite the score of"):
            if state is None:
                continue
            try:
                self._republish(customer_id, state)
                queued += 1
            except Exception:
                logger.exception("Cannot rewrite the score of customer %s", customer_id)
            if len(self.writer) >= REWRITE_CHUNK:
                await self._flush(force=True)
        await self._flush(force=True)
        return queued

    async def _owned_states(self, purpose: str) -> AsyncIterator[tuple[str, CustomerState | None]]:
        """Every stored customer of this worker's partitions, decoded (None when unreadable).

        The keys are listed first, since the agent may write while this runs. An unreadable
        record is logged (the first 10 of a pass, saying what it was read to ``purpose``).
        Yields to the event loop every few thousand records so /metrics and the Redis
        flushes keep running.
        """
        unreadable = 0
        for count, customer_id in enumerate(list(self.customers.keys()), start=1):
            try:  # the live state, when the customer changed since the last write-back
                state: CustomerState | None = self.states[customer_id]
            except KeyError:
                continue  # erased meanwhile
            except Exception:
                state = None
                unreadable += 1
                if unreadable <= 10:
                    logger.exception("Cannot %s customer %s", purpose, customer_id)
            if state is None or state.shard in self._active_partitions:
                yield customer_id, state
            if count % RESCHEDULE_CHUNK == 0:
                await asyncio.sleep(0)

    def _republish(self, customer_id: str, state: CustomerState) -> None:
        """Queue the stored score of a customer, as of their shard's current event time."""
        now = state.last_scored_at()
        if state.shard is not None:
            now = max(now, self.engine.watermark(state.shard))
        score = self.scorer.score_as_of(state, now)
        self.writer.put(customer_id, (customer_id, state, score))

    def _decode(self, messages: list[Message], start: int, not_after: datetime) -> _Decoded:
        """Decode the next :data:`DECODE_CHUNK` messages of a fetch from ``start`` at once."""
        started = time.perf_counter()
        chunk = messages[start : start + DECODE_CHUNK]
        batch = decode_events([message.value for message in chunk], not_after=not_after)
        activities = activities_of(batch.columns)
        return _Decoded(start, batch, activities, (time.perf_counter() - started) / len(chunk))

    def _handle(self, message: Message, decoded: _Decoded, position: int) -> str:
        """Score one decoded event; bad input is queued for the dead-letter topic."""
        batch = decoded.batch
        row = batch.rows[position]
        if row < 0:
            if position in batch.failed:
                raise batch.failed[position]  # a bug: logged and acknowledged by the caller
            skipped = batch.skipped.get(position)
            if skipped is not None:
                self.metrics.event(None, "skipped")
                logger.debug("Skipped %s at %s", skipped, _position(message))
                return "skipped"
            rejected = batch.rejected[position]
            self.dead_letters.add(message, rejected.reason, rejected.message, rejected.field)
            return "dead_lettered"
        columns = batch.columns
        customer_id, event_type = columns.customer_ids[row], columns.types[row]
        key = message.key
        if key is None or key != customer_id.encode("utf-8"):
            shown = repr(key)[:100]
            error = f"key: message key {shown} must equal customer_id {customer_id!r}"
            self.dead_letters.add(message, "key_mismatch", error, "key", event_type)
            return "dead_lettered"
        activity = decoded.activities[row]
        if activity is None:  # an erasure request
            return self._erase(message, columns, row)
        try:
            outcome = self._score(customer_id, activity, columns.event_ids[row], message)
        except Exception as exc:
            logger.exception("Scoring failed at %s", _position(message))
            # Half-applied: the customer reverts to the state last written to the changelog.
            self.states.discard(self._customer_id(customer_id))
            error = f"{type(exc).__name__}: {exc}"
            self.dead_letters.add(message, "processing_error", error, None, event_type)
            return "dead_lettered"
        self.metrics.event(event_type, outcome)
        return outcome

    def _erase(self, message: Message, columns: EventColumns, row: int) -> str:
        """Forget the customer of an erasure request now; Redis and the audit record follow."""
        customer_id = self._customer_id(columns.customer_ids[row])
        removed = self.engine.forget(customer_id)
        requested_at = datetime.fromtimestamp(float(columns.times[row]), UTC)
        request_id, requested_by = columns.event_ids[row], columns.requested_by[row]
        assert requested_by is not None  # every erasure request names who asked
        self._erasures.append(
            _Erasure(message, request_id, requested_by, requested_at, customer_id, removed)
        )
        self.metrics.event(columns.types[row], "erased")
        return "erased"

    def _score(self, customer_id: str, activity: Activity, event_id: str, message: Any) -> str:
        """Score the event, then re-score the silent customers its event time made due.

        Runs while the event is still the agent's, so every table write goes to this
        partition's changelog, where all these customers live. An event applied before
        (redelivered after a crash, or sent twice) changes nothing; its customer's stored
        score is written to Redis again, in case the first write was lost with the crash.
        """
        scored = self.engine.process(
            self._customer_id(customer_id),
            activity,
            shard=message.partition,
            offset=message.offset,
            event_id=event_id,
        )
        if scored[0].duplicate:
            self._emit(scored[0], None, None)
            return "duplicate"
        self._emit(scored[0], message.timestamp, event_id)
        for rescored in scored[1:]:
            self._emit(rescored, None, None)
        if len(scored) > 1:
            self.metrics.rescores.inc(len(scored) - 1)
        return "scored"

    async def _reschedule_pending(self) -> None:
        """Schedule the re-scores of this worker's partitions' customers from the table."""
        self._rebuild_schedule = False
        self.engine.reset()
        scheduled = unreadable = 0
        async for customer_id, state in self._owned_states("schedule the re-scores of"):
            if state is None:
                unreadable += 1
                continue
            try:
                scheduled += self.engine.adopt(customer_id, state, self._active_partitions)
            except Exception:
                unreadable += 1
                logger.exception("Cannot schedule the re-scores of customer %s", customer_id)
        logger.info(
            "Scheduled %d customers' re-scores from the customer table (%d unreadable)",
            scheduled,
            unreadable,
        )

    def _emit(
        self,
        scored: Scored,
        produced_at: float | None,
        event_id: str | None,
        *,
        alert_event_ids: Sequence[str | None] | None = None,
    ) -> None:
        """Queue a score for Redis and its alerts for Kafka, each alert with ``event_id``
        (or the id of each alert's own event, ``alert_event_ids``)."""
        customer_id, outcome = scored.customer_id, scored.outcome
        score = outcome.score
        self.writer.put(customer_id, (customer_id, outcome.state, score), produced_at)
        self.metrics.churn_risk.observe(score.churn_risk)
        self.metrics.labels_learned(outcome.labels)
        key = customer_id.encode("utf-8")
        if alert_event_ids is None:
            alert_event_ids = [event_id] * len(outcome.alerts)
        for intent, alert_event_id in zip(outcome.alerts, alert_event_ids, strict=True):
            alert = alert_of(customer_id, intent, intent.time, alert_event_id)
            self.outbox.add(
                self.settings.alerts_topic,
                key,
                alert.to_bytes(),
                on_sent=partial(self._alert_sent, intent.type),
            )

    def _render_many(self, queued: Sequence[_Unrendered]) -> list[dict[str, str]]:
        """The Redis hash fields of a flush's scores, their recommendations ranked together
        now; straight from the scores' values (no pydantic object per score)."""
        recommendations = self.scorer.recommend_many(
            [(c, state) for c, state, _ in queued], as_of=[score.as_of for _, _, score in queued]
        )
        now = datetime.fromtimestamp(self._clock(), tz=UTC).isoformat()
        return [
            score_fields(customer_id, score, ranked, now)
            for (customer_id, _, score), ranked in zip(queued, recommendations, strict=True)
        ]

    def _alert_sent(self, alert_type: str, _: int, __: int, error: BaseException | None) -> None:
        if error is None:  # counted once Kafka has it
            self.metrics.alert(alert_type)
