"""The worker's per-record pipeline: decode → processor → write, emit, count.

Holds one ``tables.processor.PartitionProcessor`` per owned input partition
(the record rules), backed by the Faust tables of ``streams.app``; this shell
decodes each record, hands it to the processor, persists the partition
values it returns, publishes its outputs and keeps the metrics. The Faust
agent only feeds records in.
"""

from __future__ import annotations

import logging
import time
from base64 import b64encode
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from agents.worker.activation_cohorts import ActivationCohorts
from agents.worker.cohorts import CohortGauges, LiveCohorts, key_prefix, record_key
from agents.worker.erasure import Erasures
from agents.worker.metrics import Metrics
from agents.worker.stickiness import StageCounts, Stickiness
from streams.app import EngineApp
from streams.control import signer_for
from streams.decode import DecodeRules, Misrouted, decode_record, partition_for
from streams.inputs import control_input
from streams.model_settings import model_config, record_rules
from streams.records import DlqRecord, LifecycleTransition, Signal, Tick, encode
from streams.validate import Rejected
from tables.clock import NEVER
from tables.engine import PartitionEngine
from tables.inputs import ClockTick, EraseRequest, ThresholdUpdate
from tables.lifecycle import STAGES
from tables.model import APPLIED, DUPLICATE_OFFSET, PASSIVE, ModelEvent
from tables.processor import SUPPRESSED, ClockMark, EventsSeen, PartitionProcessor, RecordResult
from tables.state import UserState, pack_state, unpack_state
from tables.thresholds import decode_book, encode_book

log = logging.getLogger(__name__)
StateObserver = Callable[[str, UserState | None], None]


class SendOutput(Protocol):
    """Sends one output record to a Faust topic; returns the delivery future
    (``partition`` None: the producer's partitioner)."""

    def __call__(
        self,
        topic: Any,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]: ...


FORWARDED_HEADER = "engagement-forwarded-from"  # "partition:offset" of a repartitioned event


async def send_through_topic(
    topic: Any,
    key: bytes | None,
    value: bytes,
    partition: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> Any:
    """Faust's ``Topic.send`` (the stream path)."""
    return await topic.send(key=key, value=value, partition=partition, headers=headers)


class TableStore:
    """``StateStore`` over the Faust users table (packed bytes, UTF-8 keys).

    Observers (the Redis mirror, the status topic) hear of every change:
    ``observer(user_id, state)`` with ``state=None`` for a deletion. They hear
    it *before* the table is written: what they send at once goes into the
    producer's queue ahead of the changelog record, so after a crash a saved
    state never lacks the output derived from it. While a batch of events is
    applied (``hold``) they hear once per changed user, of its newest state.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        self.observers: list[StateObserver] = []
        # While a batch is applied (``hold``): the newest state of each user it
        # changed, unpacked; observed, packed and written once (``write_held``).
        self._held: dict[str, UserState] | None = None
        # tells the batch's table writer the changelog partition of the next write
        self.write_partition: Callable[[int], None] | None = None

    def get(self, user_id: str) -> UserState | None:
        held = self._held
        if held is not None:
            state = held.get(user_id)
            if state is not None:
                return state
        blob = self.table.get(user_id.encode())
        return None if blob is None else unpack_state(blob)

    def put(self, user_id: str, state: UserState) -> None:
        if self._held is not None:
            self._held[user_id] = state  # observed when written (``write_held``)
            return
        for observer in self.observers:
            observer(user_id, state)
        self.table[user_id.encode()] = pack_state(state)

    def delete(self, user_id: str) -> None:
        for observer in self.observers:
            observer(user_id, None)
        if self._held is not None:
            self._held.pop(user_id, None)
        self.table.pop(user_id.encode(), None)

    def hold(self) -> None:
        """Keep states changed from now on until ``release`` (a batch of events):
        a user's state is observed, packed and written once per batch, not per
        event, and the observers see the newest state only."""
        if self._held is None:
            self._held = {}

    def write_held(self, restore_partition: int | None = None) -> None:
        """Write the held states to the table, each in its user's partition;
        then the write partition is ``restore_partition`` again."""
        held = self._held
        if not held:
            return
        at, table, observers = self.write_partition, self.table, self.observers
        for user_id, state in held.items():
            for observer in observers:
                observer(user_id, state)
            if at is not None:
                at(state.partition)
            table[user_id.encode()] = pack_state(state)
        held.clear()
        if at is not None and restore_partition is not None:
            at(restore_partition)

    def release(self) -> None:
        """Write the held states to the table and stop holding."""
        self.write_held()
        self._held = None

    def announce(self, user_id: str, state: UserState) -> None:
        """Tell the observers about a state already stored (nothing is written)."""
        for observer in self.observers:
            observer(user_id, state)


def config_key(partition: int) -> bytes:
    """Key of a partition's threshold versions in the clocks table (written in P)."""
    return f"{partition}:config".encode()


def pack_clock(mark: ClockMark) -> bytes:
    return mark.high_ms.to_bytes(8, "big", signed=True) + mark.events_seen_append_ms.to_bytes(
        8, "big", signed=True
    )


def _unpack_clock(blob: bytes | None) -> tuple[int, int]:
    if not blob or len(blob) != 16:
        return NEVER, 0
    return int.from_bytes(blob[:8], "big", signed=True), int.from_bytes(
        blob[8:], "big", signed=True
    )


class Runtime:
    """Everything a worker keeps between records."""

    def __init__(self, engine_app: EngineApp, metrics: Metrics) -> None:
        self.engine_app = engine_app
        self.settings = engine_app.settings
        self.metrics = metrics
        self.config = model_config(self.settings)
        self.record_rules = record_rules(self.settings)
        self.signer = signer_for(self.settings)
        self.rules = DecodeRules(
            topic=self.settings.topic_events,
            partitions=self.settings.partitions,
            event=self.settings.event_rules(),
            signer=self.signer,
            repartition=self.settings.repartition,
        )
        self.store = TableStore(engine_app.users)
        self.erasures = Erasures(engine_app.erased, self.settings, metrics)
        self._clocks: Any = engine_app.clocks  # where clock and config writes go
        self._tenants: set[str] | None = None  # config_tenants(), None when stale
        # the futures of sent signals, transitions and DLQ records (batch ingest)
        self.outputs: list[Any] | None = None
        self.send_output: SendOutput = send_through_topic
        self.processors: dict[int, PartitionProcessor] = {}
        self.engines: dict[int, PartitionEngine] = {}  # each processor's engine (its clock)
        self._seen = EventsSeen()
        self.signals_sent = 0
        self.transitions_sent = 0
        self.stages = StageCounts(metrics.users_by_stage)
        self.stickiness = Stickiness(
            metrics.active_users,
            metrics.dau_mau,
            metrics.streaks,
            self.settings.day_ms,
            self.config_tenants,
            ActivationCohorts(metrics.cohort_users, metrics.cohort_activated, self.settings.day_ms)
            if self.config.activation_types
            else None,
        )
        self.cohorts = LiveCohorts(
            self.config,
            self.settings.cohort_period_ms,
            self.settings.cohort_metric_periods,
            CohortGauges(metrics),
            self.config_tenants,
        )

    @property
    def events_seen_append_ms(self) -> int:
        """The newest event append time this worker has seen (its ticks carry it)."""
        return self._seen.append_ms

    @events_seen_append_ms.setter
    def events_seen_append_ms(self, append_ms: int) -> None:
        self._seen.append_ms = append_ms

    def write_tables_through(self, wrap: Callable[[Any], Any]) -> None:
        """Send every table write through ``wrap(table)`` (the batch ingest's writer)."""
        self.store.table = wrap(self.engine_app.users)
        self._clocks = wrap(self.engine_app.clocks)
        self.erasures.store.table = wrap(self.engine_app.erased)

    # -- processors ----------------------------------------------------
    def processor(self, partition: int) -> PartitionProcessor:
        processor = self.processors.get(partition)
        if processor is None:
            high_ms, seen_ms = _unpack_clock(self.engine_app.clocks.get(str(partition).encode()))
            processor = PartitionProcessor(
                partition,
                self.config,
                self.store,
                self.record_rules,
                seen=self._seen,
                high_ms=high_ms,
                users=lambda: self._partition_users(partition),
                book=decode_book(self.engine_app.clocks.get(config_key(partition))),
                suppressions=self.erasures.entries([partition])[partition],
            )
            self._seen.append_ms = max(self._seen.append_ms, seen_ms)
            self.processors[partition] = processor
            self.engines[partition] = processor.engine
            self.erasures.gauge(partition, len(processor.ledger))
            self._tenants = None
        return processor

    def rebuild(self, partitions: Iterable[int]) -> dict[int, int]:
        """Fresh processors for ``partitions``, indexes rebuilt from the user table."""
        wanted = set(partitions)
        for partition in list(self.processors):
            if partition not in wanted:
                del self.processors[partition]
                del self.engines[partition]
                self._tenants = None
                self.stages.forget(partition)
                self.stickiness.forget(partition)
                self.cohorts.forget(partition)
        started = time.perf_counter()
        fresh = {p: self.processor(p).engine for p in wanted}
        for partition, engine in fresh.items():
            engine.index.clear()
            self.stages.clear(partition)
            self.stickiness.clear(partition)
        counts = dict.fromkeys(wanted, 0)
        n = self.settings.partitions
        for key, blob in self.engine_app.users.items():
            partition = partition_for(key, n)
            target = fresh.get(partition)
            if target is None or blob is None:
                continue
            state = unpack_state(blob)
            target.index_user(key.decode(), state)
            self.stages.add(partition, state)
            self.stickiness.add(partition, state, target.high_ms)
            counts[partition] += 1
        cohort_cells = [(k, v) for k, v in self.engine_app.clocks.items() if b":cohort:" in k]
        for partition, engine in fresh.items():
            self.stages.publish(partition)
            self.stickiness.publish(partition, engine.high_ms)
            prefix = key_prefix(partition)
            mine = ((k, v) for k, v in cohort_cells if k.startswith(prefix))
            self.cohorts.load(partition, mine, engine.high_ms)
            self.cohorts.publish(partition, engine.high_ms)
        for partition, entries in self.erasures.entries(wanted).items():
            self.processors[partition].load_suppressions(entries)
            self.erasures.gauge(partition, len(entries))
        for partition, count in counts.items():
            fresh[partition].users_tracked = count
            self.metrics.users.labels(partition=str(partition)).set(count)
        self.metrics.index_rebuild.observe(time.perf_counter() - started)
        return counts

    # -- records -------------------------------------------------------
    async def handle_message(self, message: Any) -> None:
        """``handle`` for a Faust ``ConsumerMessage`` (both ingest paths)."""
        await self.handle(
            message.key,
            message.value,
            message.headers,
            message.partition,
            message.offset,
            round(message.timestamp * 1000),
        )

    async def handle(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        partition: int,
        offset: int,
        append_ms: int,
    ) -> None:
        started = time.perf_counter()
        header_list = list(headers.items()) if isinstance(headers, dict) else headers
        decoded = decode_record(key, value, header_list, partition, append_ms, offset, self.rules)
        if isinstance(decoded, Rejected):
            await self._dead_letter(decoded, key, value, partition, offset, append_ms)
            self.metrics.latency.observe(time.perf_counter() - started)
            return
        if isinstance(decoded, Misrouted):
            await self._forward(key, value, header_list, decoded.partition, partition, offset)
            self.metrics.latency.observe(time.perf_counter() - started)
            return
        processor = self.processor(partition)
        if not isinstance(decoded, ModelEvent):
            self.store.write_held(partition)  # control records may list the table's users
        if isinstance(decoded, ModelEvent):
            result = processor.on_event(decoded)  # process() without the type dispatch
            self._event_done(decoded, result, processor)
        else:
            record = control_input(decoded.record)
            if isinstance(record, ThresholdUpdate):
                tenants_before = self.config_tenants()
                result = processor.process(record, append_ms)
                self._config_done(result, processor, tenants_before)
            else:
                result = processor.process(record, append_ms)
                if isinstance(record, ClockTick):
                    self._tick_done(result, processor)
                    await self._publish_cohorts(partition)
                elif isinstance(record, EraseRequest):
                    self._erase_done(result, processor)
        await self._emit(result, partition)
        self._persist(result, partition)
        self.metrics.latency.observe(time.perf_counter() - started)

    def _event_done(
        self, event: ModelEvent, result: RecordResult, processor: PartitionProcessor
    ) -> None:
        outcome = result.outcome
        partition = processor.partition
        self.metrics.count_event(event.type, outcome)
        if outcome == APPLIED:
            if result.created:
                self.metrics.users.labels(partition=str(partition)).set(
                    processor.engine.users_tracked
                )
            if result.state is not None:
                self.stickiness.on_event(
                    partition, result.previous, result.state, processor.engine.high_ms
                )
                self.cohorts.on_event(
                    partition, event.user_id, result.previous, result.state, self._clocks
                )
        elif outcome != SUPPRESSED and outcome != PASSIVE:
            self.metrics.duplicates.labels(kind=outcome).inc()
            if outcome == DUPLICATE_OFFSET and result.state is not None:
                # Re-delivered after a crash: the state was saved, but what the
                # observers derived from it (status topic, Redis) may have been lost.
                self.store.announce(event.user_id, result.state)

    def _tick_done(self, result: RecordResult, processor: PartitionProcessor) -> None:
        partition = processor.partition
        engine = processor.engine
        self.metrics.ticks.labels(outcome=result.outcome).inc()
        clock_s = engine.clock_ms / 1000
        self.metrics.clock.labels(partition=str(partition)).set(clock_s)
        self.metrics.clock_lag.labels(partition=str(partition)).set(time.time() - clock_s)
        self.stickiness.publish(partition, engine.high_ms)
        self.cohorts.publish(partition, engine.high_ms)

    async def _publish_cohorts(self, partition: int) -> None:
        """The partition's cohort cells changed since its last tick, to the cohorts topic."""
        for record in self.cohorts.take_records(partition):
            self._keep(
                await self.send_output(self.engine_app.cohorts, record_key(record), encode(record))
            )

    def _erase_done(self, result: RecordResult, processor: PartitionProcessor) -> None:
        self.erasures.count(result.outcome)
        if result.outcome != APPLIED:
            return
        partition = processor.partition
        self.metrics.users.labels(partition=str(partition)).set(processor.engine.users_tracked)
        erased = result.previous
        if erased is not None:
            self.stages.move(partition, STAGES[erased.stage], None)
            self.stickiness.remove(partition, erased, processor.engine.high_ms)

    def _config_done(
        self, result: RecordResult, processor: PartitionProcessor, tenants_before: set[str]
    ) -> None:
        self._tenants = None
        self.metrics.configs.labels(outcome=result.outcome).inc()
        if result.book is not None and self.config_tenants() != tenants_before:
            # A new tenant label: recount the partition's gauges under it.
            partition = processor.partition
            self.stickiness.reset(
                partition,
                (state for _user, state in self._partition_users(partition)),
                processor.engine.high_ms,
            )

    def _persist(self, result: RecordResult, partition: int) -> None:
        """Write the partition values a record changed (inside stream iteration: they
        land in changelog partition P and recover with it)."""
        if result.clock is not None:
            self._clocks[str(partition).encode()] = pack_clock(result.clock)
        if result.book is not None:
            self._clocks[config_key(partition)] = encode_book(result.book)
        if result.ledger is not None:
            self.erasures.persist(result.ledger)
            self.erasures.gauge(partition, len(self.processors[partition].ledger))

    def config_tenants(self) -> set[str]:
        """Tenants present in the config topic (the allowed ``tenant`` metric labels).

        Asked per event (the stickiness label): kept until a processor or a
        threshold book changes."""
        if self._tenants is None:
            tenants: set[str] = set()
            for engine in self.engines.values():
                tenants |= engine.book.tenants()
            self._tenants = tenants
        return self._tenants

    def _partition_users(self, partition: int) -> Iterable[tuple[str, UserState]]:
        """The users of one owned partition, read from the table (rebuilds only)."""
        n = self.settings.partitions
        for key, blob in self.store.table.items():  # the batch's writes included
            if blob is not None and partition_for(key, n) == partition:
                yield key.decode(), unpack_state(blob)

    def _keep(self, sent: Any) -> None:
        """Keep a sent record's future while a batch collects them (batch ingest)."""
        if self.outputs is not None:
            self.outputs.append(sent)

    async def _emit(self, result: RecordResult, partition: int) -> None:
        """Publish a record's signals, then its lifecycle transitions (their own topic)."""
        for emission in result.emissions:
            signal = Signal.from_emission(emission)
            self._keep(
                await self.send_output(
                    self.engine_app.signals, emission.user_id.encode(), encode(signal)
                )
            )
            self.metrics.signals.labels(kind=emission.kind).inc()
            self.signals_sent += 1
        for transition in result.transitions:
            record = LifecycleTransition.from_transition(transition)
            self._keep(
                await self.send_output(
                    self.engine_app.lifecycle, transition.user_id.encode(), encode(record)
                )
            )
            self.stages.move(partition, transition.from_stage, transition.to_stage)
            self.metrics.transitions.labels(stage=transition.to_stage).inc()
            self.transitions_sent += 1

    async def _forward(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None,
        home: int,
        partition: int,
        offset: int,
    ) -> None:
        """Send a misrouted event on to its home partition, as it came plus where
        from; delivered before its offset is committed, like every output."""
        assert value is not None  # decoded as a valid event
        forwarded = [*(headers or ()), (FORWARDED_HEADER, f"{partition}:{offset}".encode())]
        self._keep(await self.send_output(self.engine_app.events, key, value, home, forwarded))
        self.metrics.repartitioned.inc()

    async def _dead_letter(
        self,
        rejected: Rejected,
        key: bytes | None,
        value: bytes | None,
        partition: int,
        offset: int,
        append_ms: int,
    ) -> None:
        record = DlqRecord(
            reason=rejected.reason,
            detail=rejected.detail,
            topic=self.settings.topic_events,
            partition=partition,
            offset=offset,
            record_ts=append_ms,
            key_b64=None if key is None else b64encode(key).decode(),
            value_b64=None if value is None else b64encode(value).decode(),
            seen_at=int(time.time() * 1000),
        )
        self._keep(await self.send_output(self.engine_app.dlq, key, encode(record)))
        self.metrics.dlq.labels(reason=rejected.reason).inc()

    # -- ticks ---------------------------------------------------------
    def tick_record(self, partition: int, wall_ms: int) -> tuple[bytes, list[tuple[str, bytes]]]:
        if self.signer is None:
            raise RuntimeError("no clock keys configured: cannot sign ticks")
        tick = Tick(wall_ms=wall_ms, events_seen_append_ms=self.events_seen_append_ms)
        return self.signer.sign(self.settings.topic_events, partition, tick)
