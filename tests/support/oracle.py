"""The fault suite's oracle: the record processor run over the log the worker consumed.

It reads nothing but the input topic (partitions, offsets, append times,
headers, bytes) and feeds it to the worker's own decoder and record processor
(``tables.processor.PartitionProcessor``, one per partition over a
``DictStore``): ticks, threshold versions and erasures from the log,
de-duplication by the rules of docs/CONTRACTS.md. It checks what the worker's
I/O (delivery, tables, offsets, crashes) did with the processor's decisions.
Each partition is run to two marks:

- ``committed``: the consumer group's committed offset. Everything up to it
  must be in the worker's outputs (signals, DLQ, state).
- ``end``: the end of the log. The worker may have gone past ``committed``
  (processed but not yet committed when it stopped), so its outputs may
  include what the log up to ``end`` produces, and nothing more.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from streams.control import signer_for
from streams.decode import Control, DecodeRules, decode_record
from streams.inputs import control_input
from streams.model_settings import model_config, record_rules
from streams.settings import Settings
from streams.validate import Rejected
from support.kafka_util import Record
from tables.engine import DictStore
from tables.model import APPLIED
from tables.processor import SUPPRESSED, PartitionProcessor, RecordResult
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
    rules = DecodeRules(
        topic=settings.topic_events,
        partitions=settings.partitions,
        event=settings.event_rules(),
        signer=signer_for(settings),
    )
    store = DictStore()
    processor = PartitionProcessor(partition, model_config(settings), store, record_rules(settings))
    snap = Snapshot()
    mark: Snapshot | None = None
    for record in records:
        if mark is None and record.offset >= committed_offset:
            snap.states = dict(store.states)
            mark = snap.copy()
        append_ms = record.timestamp_ms
        decoded = decode_record(
            record.key,
            record.value,
            list(record.headers),
            partition,
            append_ms,
            record.offset,
            rules,
        )
        if isinstance(decoded, Rejected):
            snap.events_in += 1
            snap.dlq[(partition, record.offset)] = decoded.reason
            continue
        if isinstance(decoded, Control):
            _emitted(snap, processor.process(control_input(decoded.record), append_ms))
            continue
        snap.events_in += 1
        snap.events_at[decoded.user_id] = snap.events_at.get(decoded.user_id, 0) + 1
        result = processor.process(decoded, append_ms)
        if result.outcome == APPLIED:
            snap.applied += 1
        elif result.outcome == SUPPRESSED:
            snap.suppressed += 1
        else:
            snap.duplicates[result.outcome] += 1
        _emitted(snap, result)
    snap.states = dict(store.states)
    if mark is None:
        mark = snap.copy()
    return mark, snap


def _emitted(snap: Snapshot, result: RecordResult) -> None:
    snap.signal_ids.update(emission.signal_id for emission in result.emissions)
    snap.transition_ids.update(transition.transition_id for transition in result.transitions)
