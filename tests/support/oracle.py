"""The fault suite's oracle: the pure model run over the log the worker consumed.

It reads nothing but the input topic (partitions, offsets, append times,
headers, bytes) and replays it exactly as ``agents.worker.runtime.Runtime`` does:
the same decoder and rules, ticks, threshold versions and erasures from the log, one
``PartitionEngine`` over a ``DictStore`` per partition, de-duplication by
the rules of docs/CONTRACTS.md. Each partition is run to two marks:

- ``committed``: the consumer group's committed offset. Everything up to it
  must be in the worker's outputs (signals, DLQ, state).
- ``end``: the end of the log. The worker may have gone past ``committed``
  (processed but not yet committed when it stopped), so its outputs may
  include what the log up to ``end`` produces, and nothing more.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streams.control import signer_for
from streams.decode import Control, DecodeRules, decode_record
from streams.model_settings import model_config
from streams.records import ConfigUpdate, Erase, Tick
from streams.settings import Settings
from streams.validate import Rejected
from support.kafka_util import Record
from tables.clock import event_contribution_ms, tick_contribution_ms
from tables.engine import DictStore, PartitionEngine
from tables.erasure import DictSuppressionStore, ErasureLedger, erase_is_current, window_start_ms
from tables.model import APPLIED
from tables.state import UserState


@dataclass
class Snapshot:
    """What the model holds and has produced after a prefix of the log."""

    states: dict[str, UserState] = field(default_factory=dict)
    signal_ids: set[str] = field(default_factory=set)
    transition_ids: set[str] = field(default_factory=set)
    dlq: dict[tuple[int, int], str] = field(default_factory=dict)  # (partition, offset) -> reason
    events_in: int = 0
    applied: int = 0
    duplicates: Counter[str] = field(default_factory=Counter)
    suppressed: int = 0
    events_at: dict[str, int] = field(default_factory=dict)  # user -> event records seen

    def merge(self, other: Snapshot) -> None:
        self.states.update(other.states)
        self.signal_ids |= other.signal_ids
        self.transition_ids |= other.transition_ids
        self.dlq.update(other.dlq)
        self.events_in += other.events_in
        self.applied += other.applied
        self.duplicates.update(other.duplicates)
        self.suppressed += other.suppressed
        for user, count in other.events_at.items():
            self.events_at[user] = self.events_at.get(user, 0) + count

    def copy(self) -> Snapshot:
        return Snapshot(
            states=dict(self.states),
            signal_ids=set(self.signal_ids),
            transition_ids=set(self.transition_ids),
            dlq=dict(self.dlq),
            events_in=self.events_in,
            applied=self.applied,
            duplicates=Counter(self.duplicates),
            suppressed=self.suppressed,
            events_at=dict(self.events_at),
        )


@dataclass
class OracleResult:
    committed: Snapshot
    end: Snapshot


def run_oracle(
    settings: Settings, records: list[Record], committed: dict[int, int]
) -> OracleResult:
    """Replay ``records`` (the whole input topic) per partition, to ``committed`` and to the end."""
    by_partition: dict[int, list[Record]] = {}
    for record in records:
        by_partition.setdefault(record.partition, []).append(record)
    at_committed, at_end = Snapshot(), Snapshot()
    for partition in sorted(by_partition):
        part = sorted(by_partition[partition], key=lambda r: r.offset)
        mark, final = _run_partition(settings, partition, part, committed.get(partition, 0))
        at_committed.merge(mark)
        at_end.merge(final)
    return OracleResult(committed=at_committed, end=at_end)


def _run_partition(
    settings: Settings, partition: int, records: list[Record], committed_offset: int
) -> tuple[Snapshot, Snapshot]:
    config = model_config(settings)
    rules = DecodeRules(
        topic=settings.topic_events,
        partitions=settings.partitions,
        event=settings.event_rules(),
        signer=signer_for(settings),
    )
    store = DictStore()
    engine = PartitionEngine(partition, config, store)
    salt = settings.erasure_salt.get_secret_value().encode() if settings.erasure_salt else b""
    ledger = ErasureLedger(partition, salt, settings.erasure_suppress_ms, DictSuppressionStore())
    snap = Snapshot()
    mark: Snapshot | None = None

    def emitted(emissions: list[Any]) -> None:
        for emission in emissions:
            snap.signal_ids.add(emission.signal_id)
        for transition in engine.take_transitions():
            snap.transition_ids.add(transition.transition_id)

    for record in records:
        if mark is None and record.offset >= committed_offset:
            snap.states = dict(store.states)
            mark = snap.copy()
        append_ms = record.timestamp_ms
        result = decode_record(
            record.key,
            record.value,
            list(record.headers),
            partition,
            append_ms,
            record.offset,
            rules,
        )
        if isinstance(result, Rejected):
            snap.events_in += 1
            snap.dlq[(partition, record.offset)] = result.reason
            continue
        _apply(result, append_ms, settings, engine, ledger, snap, emitted)
    snap.states = dict(store.states)
    if mark is None:
        mark = snap.copy()
    return mark, snap


def _apply(
    result: Any,
    append_ms: int,
    settings: Settings,
    engine: PartitionEngine,
    ledger: ErasureLedger,
    snap: Snapshot,
    emitted: Callable[[list[Any]], None],
) -> None:
    """One decoded record, as ``agents.worker.runtime.Runtime.handle`` treats it."""
    if isinstance(result, Control):
        control = result.record
        if isinstance(control, Tick):
            contribution = tick_contribution_ms(
                control.wall_ms,
                append_ms,
                control.events_seen_append_ms,
                settings.stall_guard_ms,
            )
            emitted(engine.observe(contribution))
            ledger.expire(engine.clock_ms)
        elif isinstance(control, ConfigUpdate):
            tiers = (control.at_risk_ms, control.dormant_ms, control.churned_ms)
            if 0 < tiers[0] <= tiers[1] <= tiers[2] and control.scope:
                _changed, emissions = engine.receive_config(
                    control.scope, control.effective_from, tiers
                )
                emitted(emissions)
        elif isinstance(control, Erase) and erase_is_current(
            control.issued_ms, append_ms, settings.max_future_ms
        ):
            engine.forget(control.user_id)
            start = window_start_ms(
                engine.clock_ms, control.issued_ms, append_ms, settings.lateness_ms
            )
            ledger.erase(control.user_id, start)
        emitted([])
        return
    snap.events_in += 1
    snap.events_at[result.user_id] = snap.events_at.get(result.user_id, 0) + 1
    if ledger:
        emitted(engine.observe(event_contribution_ms(result.ts_ms, result.append_ms)))
        if ledger.suppresses(result.user_id, engine.clock_ms):
            snap.suppressed += 1
            return
    outcome = engine.on_event(result)
    if outcome.outcome == APPLIED:
        snap.applied += 1
    else:
        snap.duplicates[outcome.outcome] += 1
    emitted(outcome.emissions)
