"""The worker's per-record pipeline: decode → model → table → emit.

Holds one ``PartitionEngine`` per owned input partition, backed by the Faust
tables of ``streams.app``; the Faust agent only feeds records in.
"""

from __future__ import annotations

import logging
import time
from base64 import b64encode
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from agents.worker.erasure import SUPPRESSED, Erasures
from agents.worker.metrics import Metrics
from agents.worker.stickiness import StageCounts, Stickiness
from streams.app import EngineApp
from streams.control import signer_for
from streams.decode import Control, DecodeRules, decode_record, partition_for
from streams.model_settings import model_config
from streams.records import (
    ConfigUpdate,
    DlqRecord,
    Erase,
    LifecycleTransition,
    Signal,
    Tick,
    encode,
)
from streams.validate import Rejected
from tables.clock import NEVER, event_contribution_ms, tick_contribution_ms
from tables.engine import PartitionEngine
from tables.lifecycle import STAGES
from tables.model import APPLIED, DUPLICATE_OFFSET, Emission, ModelEvent
from tables.state import UserState, pack_state, unpack_state
from tables.thresholds import decode_book, encode_book

log = logging.getLogger(__name__)
StateObserver = Callable[[str, UserState | None], None]
# Sends one output record: (Faust topic, key, value) -> the delivery future.
SendOutput = Callable[[Any, bytes | None, bytes], Awaitable[Any]]


async def send_through_topic(topic: Any, key: bytes | None, value: bytes) -> Any:
    """Faust's ``Topic.send`` (the stream path)."""
    return await topic.send(key=key, value=value)


class TableStore:
    """``StateStore`` over the Faust users table (packed bytes, UTF-8 keys).

    Observers (the Redis mirror, the status topic) hear of every change:
    ``observer(user_id, state)`` with ``state=None`` for a deletion. They hear
    it *before* the table is written: what they send at once goes into the
    producer's queue ahead of the changelog record, so after a crash a saved
    state never lacks the output derived from it.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        self.observers: list[StateObserver] = []

    def get(self, user_id: str) -> UserState | None:
        blob = self.table.get(user_id.encode())
        return None if blob is None else unpack_state(blob)

    def put(self, user_id: str, state: UserState) -> None:
        for observer in self.observers:
            observer(user_id, state)
        self.table[user_id.encode()] = pack_state(state)

    def delete(self, user_id: str) -> None:
        for observer in self.observers:
            observer(user_id, None)
        self.table.pop(user_id.encode(), None)

    def announce(self, user_id: str, state: UserState) -> None:
        """Tell the observers about a state already stored (nothing is written)."""
        for observer in self.observers:
            observer(user_id, state)


def _config_key(partition: int) -> bytes:
    """Key of a partition's threshold versions in the clocks table (written in P)."""
    return f"{partition}:config".encode()


def _pack_clock(high_ms: int, events_seen_ms: int) -> bytes:
    return high_ms.to_bytes(8, "big", signed=True) + events_seen_ms.to_bytes(8, "big", signed=True)


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
        self.signer = signer_for(self.settings)
        self.rules = DecodeRules(
            topic=self.settings.topic_events,
            partitions=self.settings.partitions,
            event=self.settings.event_rules(),
            signer=self.signer,
        )
        self.store = TableStore(engine_app.users)
        self.erasures = Erasures(engine_app.erased, self.settings, metrics)
        self._clocks: Any = engine_app.clocks  # where clock and config writes go
        self._tenants: set[str] | None = None  # config_tenants(), None when stale
        # the futures of sent signals, transitions and DLQ records (batch ingest)
        self.outputs: list[Any] | None = None
        self.send_output: SendOutput = send_through_topic
        self.engines: dict[int, PartitionEngine] = {}
        self.events_seen_append_ms = 0
        self._persisted_seen_ms: dict[int, int] = {}
        self.signals_sent = 0
        self.transitions_sent = 0
        self.stages = StageCounts(metrics.users_by_stage)
        self.stickiness = Stickiness(
            metrics.active_users,
            metrics.dau_mau,
            metrics.streaks,
            self.settings.day_ms,
            self.config_tenants,
        )

    def write_tables_through(self, wrap: Callable[[Any], Any]) -> None:
        """Send every table write through ``wrap(table)`` (the batch ingest's writer)."""
        self.store.table = wrap(self.engine_app.users)
        self._clocks = wrap(self.engine_app.clocks)
        self.erasures.store.table = wrap(self.engine_app.erased)

    # -- engines -------------------------------------------------------
    def engine(self, partition: int) -> PartitionEngine:
        engine = self.engines.get(partition)
        if engine is None:
            high_ms, seen_ms = _unpack_clock(self.engine_app.clocks.get(str(partition).encode()))
            engine = PartitionEngine(
                partition,
                self.config,
                self.store,
                high_ms=high_ms,
                users=lambda: self._partition_users(partition),
                book=decode_book(self.engine_app.clocks.get(_config_key(partition))),
            )
            self.events_seen_append_ms = max(self.events_seen_append_ms, seen_ms)
            self.engines[partition] = engine
            self._tenants = None
        return engine

    def rebuild(self, partitions: Iterable[int]) -> dict[int, int]:
        """Fresh engines for ``partitions``, indexes rebuilt from the user table."""
        wanted = set(partitions)
        for partition in list(self.engines):
            if partition not in wanted:
                del self.engines[partition]
                self._tenants = None
                self.stages.forget(partition)
                self.stickiness.forget(partition)
        started = time.perf_counter()
        fresh = {p: self.engine(p) for p in wanted}
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
        for partition, engine in fresh.items():
            self.stages.publish(partition)
            self.stickiness.publish(partition, engine.high_ms)
        self.erasures.rebuild(wanted)
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
        result = decode_record(key, value, header_list, partition, append_ms, offset, self.rules)
        if isinstance(result, Rejected):
            await self._dead_letter(result, key, value, partition, offset, append_ms)
        elif isinstance(result, Control):
            await self._control(result, partition, append_ms)
        else:
            self.events_seen_append_ms = max(self.events_seen_append_ms, append_ms)
            engine = self.engine(partition)
            if await self._drop_if_erased(engine, result):
                self.metrics.latency.observe(time.perf_counter() - started)
                return
            outcome = engine.on_event(result)
            self.metrics.count_event(result.type, outcome.outcome)
            if outcome.outcome != APPLIED:
                self.metrics.duplicates.labels(kind=outcome.outcome).inc()
                if outcome.outcome == DUPLICATE_OFFSET and outcome.state is not None:
                    # Re-delivered after a crash: the state was saved, but what the
                    # observers derived from it (status topic, Redis) may have been lost.
                    self.store.announce(result.user_id, outcome.state)
            else:
                if outcome.created:
                    self.metrics.users.labels(partition=str(partition)).set(engine.users_tracked)
                if outcome.state is not None:
                    self.stickiness.on_event(
                        partition, outcome.previous, outcome.state, engine.high_ms
                    )
            await self._emit(outcome.emissions)
            persisted_ms = self._persisted_seen_ms.get(partition, 0)
            if append_ms > persisted_ms + self.settings.tick_interval_ms:
                # Keep the restart value of events_seen within a tick of the truth, so a
                # worker restarted on a quiet topic does not hold every clock (stall guard).
                self._persist_clock(partition, engine)
        self.metrics.latency.observe(time.perf_counter() - started)

    def _persist_clock(self, partition: int, engine: PartitionEngine) -> None:
        """Write the partition's clock (inside stream iteration: lands in partition P)."""
        self._clocks[str(partition).encode()] = _pack_clock(
            engine.high_ms, self.events_seen_append_ms
        )
        self._persisted_seen_ms[partition] = self.events_seen_append_ms

    async def _control(self, control: Control, partition: int, append_ms: int) -> None:
        record = control.record
        engine = self.engine(partition)
        if isinstance(record, Tick):
            contribution = tick_contribution_ms(
                record.wall_ms,
                append_ms,
                record.events_seen_append_ms,
                self.settings.stall_guard_ms,
            )
            before = engine.high_ms
            emissions = engine.observe(contribution)
            self.metrics.ticks.labels(
                outcome="advanced" if engine.high_ms > before else "held"
            ).inc()
            self._persist_clock(partition, engine)
            self.erasures.expire(partition, engine.clock_ms)
            clock_s = engine.clock_ms / 1000
            self.metrics.clock.labels(partition=str(partition)).set(clock_s)
            self.metrics.clock_lag.labels(partition=str(partition)).set(time.time() - clock_s)
            self.stickiness.publish(partition, engine.high_ms)
            await self._emit(emissions)
        elif isinstance(record, Erase):
            erased = self.store.get(record.user_id)
            if self.erasures.apply(engine, record, append_ms):
                self.metrics.users.labels(partition=str(partition)).set(engine.users_tracked)
                if erased is not None:
                    self.stages.move(partition, STAGES[erased.stage], None)
                    self.stickiness.remove(partition, erased, engine.high_ms)
        elif isinstance(record, ConfigUpdate):
            await self._config(engine, record)

    async def _config(self, engine: PartitionEngine, update: ConfigUpdate) -> None:
        """Apply a threshold version in log order; persist the partition's book (in P)."""
        tiers = (update.at_risk_ms, update.dormant_ms, update.churned_ms)
        if not (0 < tiers[0] <= tiers[1] <= tiers[2]) or not update.scope:
            self.metrics.configs.labels(outcome="rejected").inc()
            return
        tenants_before = self.config_tenants()
        changed, emissions = engine.receive_config(update.scope, update.effective_from, tiers)
        self._tenants = None
        self.metrics.configs.labels(outcome="applied" if changed else "unchanged").inc()
        if not changed:
            return
        self._clocks[_config_key(engine.partition)] = encode_book(engine.book)
        if self.config_tenants() != tenants_before:
            # A new tenant label: recount the partition's gauges under it.
            self.stickiness.reset(
                engine.partition,
                (state for _user, state in self._partition_users(engine.partition)),
                engine.high_ms,
            )
        await self._emit(emissions)

    def config_tenants(self) -> set[str]:
        """Tenants present in the config topic (the allowed ``tenant`` metric labels).

        Asked per event (the stickiness label): kept until an engine or a
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

    async def _drop_if_erased(self, engine: PartitionEngine, event: ModelEvent) -> bool:
        """Drop (and count) an event of a user erased within the suppression window.

        The event still contributes its time to the partition clock first: the
        clock belongs to the partition, and the window is measured on it.
        """
        if not self.erasures.active(engine.partition):
            return False
        await self._emit(engine.observe(event_contribution_ms(event.ts_ms, event.append_ms)))
        if not self.erasures.suppresses(engine.partition, event.user_id, engine.clock_ms):
            return False
        self.metrics.events.labels(
            type=self.metrics.type_label(event.type), outcome=SUPPRESSED
        ).inc()
        return True

    def _keep(self, sent: Any) -> None:
        """Keep a sent record's future while a batch collects them (batch ingest)."""
        if self.outputs is not None:
            self.outputs.append(sent)

    async def _emit(self, emissions: list[Emission]) -> None:
        for emission in emissions:
            signal = Signal.from_emission(emission)
            self._keep(
                await self.send_output(
                    self.engine_app.signals, emission.user_id.encode(), encode(signal)
                )
            )
            self.metrics.signals.labels(kind=emission.kind).inc()
            self.signals_sent += 1
        # Lifecycle transitions decided while handling this record go to their own topic.
        for engine in self.engines.values():
            if not engine.transitions:
                continue
            for transition in engine.take_transitions():
                record = LifecycleTransition.from_transition(transition)
                self._keep(
                    await self.send_output(
                        self.engine_app.lifecycle, transition.user_id.encode(), encode(record)
                    )
                )
                self.stages.move(engine.partition, transition.from_stage, transition.to_stage)
                self.metrics.transitions.labels(stage=transition.to_stage).inc()
                self.transitions_sent += 1

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
