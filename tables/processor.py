"""The record rules of one input partition: what one decoded record causes.

``PartitionProcessor.process(record, append_ms)`` takes an event, a tick, a
threshold version or an erasure (``tables.inputs``) with its broker append
time and returns a ``RecordResult``: the outcome (for metrics), the signals
and lifecycle transitions to publish, the user it touched, and the partition
values the caller must persist (the clock, the threshold book, the erasure
ledger's entries). No I/O and no wall clock: time comes with the record.

Users live in the injected ``StateStore`` (a dict offline, the Faust table
live), written while the record is processed, so the live store's observers
(status topic, Redis) hear of every change in order. The rules (docs/CONTRACTS.md):

- an event first moves the partition clock by ``min(ts, append)``; while an
  erased user of the partition is still suppressed, an event of that user is
  dropped (``suppressed``) after moving the clock; otherwise it is applied,
  recognised as a duplicate (``tables.fold``), or ``passive``: not activity
  and changing no user (``tables.activity``, ``tables.intent``);
- a tick moves the clock by ``min(wall, append, events_seen + stall_guard)``
  (``tables.clock``) and expires erasure entries the clock has passed;
- a threshold version with ordered positive tiers and a scope joins the
  partition's book (``PartitionEngine.receive_config``);
- an erasure issued within ``max_future_ms`` of its append time forgets the
  user and suppresses their events for ``erasure_suppress_ms`` of clock.

The partition clock is persisted on every tick, and after an event once the
newest append time seen has moved a tick interval past the value last
persisted, so a restarted worker's stall guard starts within a tick of the
truth. That newest append time is the worker's, shared by its partitions
(``EventsSeen``), as the ticks it writes carry it.
"""

from __future__ import annotations

from typing import Final

import msgspec

from tables.clock import NEVER, event_contribution_ms, tick_contribution_ms
from tables.engine import PartitionEngine, StateStore, UsersOf
from tables.erasure import ErasureLedger, erase_is_current, window_start_ms
from tables.inputs import ClockTick, EraseRequest, InputRecord, ThresholdUpdate
from tables.model import APPLIED, Emission, ModelConfig, ModelEvent, Transition
from tables.state import UserState
from tables.thresholds import ThresholdBook

SUPPRESSED: Final = "suppressed"  # an erased user's event inside the window
ADVANCED: Final = "advanced"  # a tick that moved the clock
HELD: Final = "held"  # a tick that did not
UNCHANGED: Final = "unchanged"  # a threshold version already known
REJECTED: Final = "rejected"  # a threshold version with bad tiers or no scope
STALE: Final = "stale"  # an erasure issued long before its append time

# (store key "{P}:{hash}", until_ms, or None to delete): tables.erasure's entries
LedgerWrite = tuple[str, int | None]


class RecordRules(msgspec.Struct, frozen=True):
    """The record rules' settings besides the model's (durations in ms)."""

    stall_guard_ms: int = 0
    max_future_ms: int = 0
    tick_interval_ms: int = 0
    erasure_suppress_ms: int = 0
    erasure_salt: bytes = b""


OFFLINE_RULES: Final = RecordRules()  # a history of events only: no tick, no erasure


class EventsSeen:
    """The newest event append time a worker has seen, over all its partitions."""

    __slots__ = ("append_ms",)

    def __init__(self, append_ms: int = 0) -> None:
        self.append_ms = append_ms


class ClockMark(msgspec.Struct, frozen=True, gc=False):
    """A partition clock to persist: its greatest contribution and the newest append seen."""

    high_ms: int
    events_seen_append_ms: int


class RecordResult(msgspec.Struct, gc=False):
    """Everything one record caused. ``outcome`` is ``applied``, ``duplicate_offset``,
    ``duplicate_id``, ``passive`` or ``suppressed`` for an event; ``advanced`` or ``held`` for a
    tick; ``applied``, ``unchanged`` or ``rejected`` for a threshold version;
    ``applied`` or ``stale`` for an erasure.

    ``state`` is the event's user after it (its stored state for a duplicate),
    ``previous`` before it (for an erasure: the state removed), ``created`` when
    the event made the user. ``clock``, ``book`` and ``ledger`` are what the
    caller persists: the partition clock, the threshold book when it changed,
    the erasure entries written (``None``: deleted). The users whose stage or
    tier changed are those of ``transitions`` (every stage change; a tier change
    is one too, and a signal only when its risk reaches the tier's minimum) and
    the erased one; the store saw each of their new states when it was written."""

    outcome: str
    emissions: list[Emission]
    transitions: list[Transition]
    state: UserState | None = None
    previous: UserState | None = None
    created: bool = False
    clock: ClockMark | None = None
    book: ThresholdBook | None = None
    ledger: list[LedgerWrite] | None = None


class _LedgerWrites:
    """The ledger's ``SuppressionStore``: collects its writes for the caller to persist."""

    __slots__ = ("writes",)

    def __init__(self) -> None:
        self.writes: list[LedgerWrite] = []

    def get(self, key: str) -> int | None:  # the ledger reads its in-memory view only
        return None

    def put(self, key: str, until_ms: int) -> None:
        self.writes.append((key, until_ms))

    def delete(self, key: str) -> None:
        self.writes.append((key, None))


class PartitionProcessor:
    """The record rules over one partition's engine (clock, due index, users) and
    erasure ledger."""

    def __init__(
        self,
        partition: int,
        config: ModelConfig,
        store: StateStore,
        rules: RecordRules = OFFLINE_RULES,
        *,
        seen: EventsSeen | None = None,
        high_ms: int = NEVER,
        users: UsersOf | None = None,
        book: ThresholdBook | None = None,
        suppressions: list[tuple[str, int]] | None = None,
    ) -> None:
        self.partition = partition
        self.rules = rules
        self.store = store
        self.seen = seen if seen is not None else EventsSeen()
        self.engine = PartitionEngine(
            partition, config, store, high_ms=high_ms, users=users, book=book
        )
        self._ledger_writes = _LedgerWrites()
        self.ledger = ErasureLedger(
            partition, rules.erasure_salt, rules.erasure_suppress_ms, self._ledger_writes
        )
        self.ledger.load(suppressions or ())
        self._suppressing = self.ledger.until_ms  # non-empty while a user is suppressed
        self.persisted_seen_ms = 0  # the newest append time in the last persisted clock

    def process(self, record: InputRecord, append_ms: int) -> RecordResult:
        """Apply one record appended at ``append_ms``; what it caused."""
        if type(record) is ModelEvent:
            return self.on_event(record)
        if isinstance(record, ClockTick):
            return self.on_tick(record, append_ms)
        if isinstance(record, ThresholdUpdate):
            return self.on_threshold_update(record)
        if isinstance(record, EraseRequest):
            return self.on_erase(record, append_ms)
        raise TypeError(f"not an input record: {type(record).__name__}")

    def on_event(self, event: ModelEvent) -> RecordResult:
        append_ms = event.append_ms
        seen = self.seen
        if append_ms > seen.append_ms:
            seen.append_ms = append_ms
        engine = self.engine
        emissions: list[Emission] = []
        if self._suppressing:
            # The event moves the partition clock first (the clock is the
            # partition's, and the suppression window is measured on it).
            emissions = engine.observe(event_contribution_ms(event.ts_ms, append_ms))
            if self.ledger.suppresses(event.user_id, engine.clock_ms):
                return RecordResult(
                    SUPPRESSED, emissions, engine.take_transitions(), ledger=self._take_ledger()
                )
        outcome, before, after = engine.apply(event, emissions)
        clock = None
        if append_ms > self.persisted_seen_ms + self.rules.tick_interval_ms:
            clock = self._clock_mark()
        return RecordResult(
            outcome,
            emissions,
            engine.take_transitions() if engine.transitions else [],
            after,
            before,
            outcome == APPLIED and before is None,
            clock,
            None,
            self._take_ledger() if self._ledger_writes.writes else None,
        )

    def on_tick(self, tick: ClockTick, append_ms: int) -> RecordResult:
        engine = self.engine
        contribution_ms = tick_contribution_ms(
            tick.wall_ms, append_ms, tick.events_seen_append_ms, self.rules.stall_guard_ms
        )
        before_ms = engine.high_ms
        emissions = engine.observe(contribution_ms)
        self.ledger.expire(engine.clock_ms)
        return RecordResult(
            ADVANCED if engine.high_ms > before_ms else HELD,
            emissions,
            engine.take_transitions(),
            clock=self._clock_mark(),
            ledger=self._take_ledger(),
        )

    def on_threshold_update(self, update: ThresholdUpdate) -> RecordResult:
        tiers = update.tiers_ms
        if not (0 < tiers[0] <= tiers[1] <= tiers[2]) or not update.scope:
            return RecordResult(REJECTED, [], [])
        engine = self.engine
        changed, emissions = engine.receive_config(
            update.scope, update.effective_from_ms, tiers, update.activity
        )
        if not changed:
            return RecordResult(UNCHANGED, [], [])
        return RecordResult(APPLIED, emissions, engine.take_transitions(), book=engine.book)

    def on_erase(self, request: EraseRequest, append_ms: int) -> RecordResult:
        if not erase_is_current(request.issued_ms, append_ms, self.rules.max_future_ms):
            return RecordResult(STALE, [], [])
        engine = self.engine
        erased = self.store.get(request.user_id)
        engine.forget(request.user_id)
        start_ms = window_start_ms(
            engine.clock_ms, request.issued_ms, append_ms, engine.config.lateness_ms
        )
        self.ledger.erase(request.user_id, start_ms)
        return RecordResult(APPLIED, [], [], previous=erased, ledger=self._take_ledger())

    def load_suppressions(self, entries: list[tuple[str, int]]) -> None:
        """Replace the ledger's entries with ``(hash, until_ms)`` pairs read from storage."""
        self.ledger.load(entries)

    def _clock_mark(self) -> ClockMark:
        seen_ms = self.seen.append_ms
        self.persisted_seen_ms = seen_ms
        return ClockMark(self.engine.high_ms, seen_ms)

    def _take_ledger(self) -> list[LedgerWrite] | None:
        writes = self._ledger_writes.writes
        if not writes:
            return None
        self._ledger_writes.writes = []
        return writes
