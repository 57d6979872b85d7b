"""The record rules of one partition: what each kind of input record causes.

A "day" is 1000 ms here; thresholds are 7/14/30 days and the lateness 500 ms.
"""

from __future__ import annotations

import pytest

from streams.decode import id_hash
from streams.inputs import control_input
from streams.records import ConfigUpdate, Erase, Signal, Tick
from tables.engine import DictStore
from tables.erasure import erased_hash, suppression_key
from tables.history import run_records
from tables.inputs import ClockTick, EraseRequest, ThresholdUpdate
from tables.model import APPLIED, DUPLICATE_ID, DUPLICATE_OFFSET, ModelEvent
from tables.processor import (
    ADVANCED,
    HELD,
    REJECTED,
    STALE,
    SUPPRESSED,
    UNCHANGED,
    ClockMark,
    EventsSeen,
    PartitionProcessor,
    RecordRules,
)
from tests.unit.test_model import AT_RISK_MS, CONFIG, DAY_MS, LATENESS_MS, T0

SUPPRESS_MS = 10 * DAY_MS
TICK_INTERVAL_MS = 2 * DAY_MS
STALL_GUARD_MS = 3 * DAY_MS
MAX_FUTURE_MS = DAY_MS
SALT = b"erasure-salt"
RULES = RecordRules(
    stall_guard_ms=STALL_GUARD_MS,
    max_future_ms=MAX_FUTURE_MS,
    tick_interval_ms=TICK_INTERVAL_MS,
    erasure_suppress_ms=SUPPRESS_MS,
    erasure_salt=SALT,
)


def event(user_id: str, ts_ms: int, offset: int, event_id: str | None = None) -> ModelEvent:
    return ModelEvent(
        user_id, id_hash(event_id or f"{user_id}@{offset}"), "visit", ts_ms, ts_ms, 3, offset
    )


def processor(store: DictStore | None = None, seen: EventsSeen | None = None) -> PartitionProcessor:
    return PartitionProcessor(3, CONFIG, DictStore() if store is None else store, RULES, seen=seen)


def test_an_event_makes_its_user_and_a_copy_of_it_is_a_duplicate() -> None:
    store = DictStore()
    p = processor(store)
    first = p.process(event("ana", T0, 10, "e1"), T0)
    assert first.outcome == APPLIED and first.created
    assert first.previous is None and first.state == store["ana"]
    assert [t.to_stage for t in first.transitions] == ["new"]
    again = p.process(event("ana", T0 + 1, 10, "e2"), T0 + 1)  # the same offset re-read
    assert again.outcome == DUPLICATE_OFFSET and again.state == store["ana"]
    copy = p.process(event("ana", T0 + 2, 11, "e1"), T0 + 2)  # the same event id
    assert copy.outcome == DUPLICATE_ID and not copy.created
    assert (copy.emissions, copy.transitions) == ([], [])
    assert store["ana"].events_total == 1


def test_the_clock_is_persisted_once_a_tick_interval_of_appends_has_passed() -> None:
    p = processor()
    assert p.process(event("ana", T0, 1), T0).clock == ClockMark(T0, T0)
    assert p.process(event("ana", T0 + TICK_INTERVAL_MS, 2), T0 + TICK_INTERVAL_MS).clock is None
    later_ms = T0 + TICK_INTERVAL_MS + 1
    assert p.process(event("ana", later_ms, 3), later_ms).clock == ClockMark(later_ms, later_ms)


def test_the_newest_append_seen_is_the_workers_over_its_partitions() -> None:
    seen = EventsSeen()
    one, two = processor(seen=seen), processor(seen=seen)
    one.process(event("ana", T0 + 5 * DAY_MS, 1), T0 + 5 * DAY_MS)
    result = two.process(event("bo", T0, 1), T0)
    assert result.clock == ClockMark(T0, T0 + 5 * DAY_MS)


def test_a_tick_moves_the_clock_within_the_stall_guard_and_always_persists_it() -> None:
    p = processor()
    p.process(event("ana", T0, 1), T0)
    far_ms = T0 + 100 * DAY_MS
    advanced = p.process(ClockTick(wall_ms=far_ms, events_seen_append_ms=T0), far_ms)
    assert advanced.outcome == ADVANCED
    assert advanced.clock == ClockMark(T0 + STALL_GUARD_MS, T0)  # held by the guard
    assert advanced.emissions == []  # three days of silence: nobody due yet
    held = p.process(ClockTick(wall_ms=T0, events_seen_append_ms=T0), T0)
    assert held.outcome == HELD and held.clock == ClockMark(T0 + STALL_GUARD_MS, T0)


def test_a_tick_judges_who_fell_due() -> None:
    p = processor()
    p.process(event("ana", T0, 1), T0)
    due_ms = T0 + AT_RISK_MS + LATENESS_MS
    result = p.process(ClockTick(wall_ms=due_ms, events_seen_append_ms=due_ms), due_ms)
    assert [(e.kind, e.user_id) for e in result.emissions] == [("at_risk", "ana")]
    assert [t.to_stage for t in result.transitions] == ["active", "at_risk"]


def test_an_erasure_forgets_the_user_and_suppresses_their_events_for_the_window() -> None:
    store = DictStore()
    p = processor(store)
    p.process(event("ana", T0, 1), T0)
    erased = p.process(EraseRequest("ana", issued_ms=T0), T0)
    assert erased.outcome == APPLIED and "ana" not in store
    assert erased.previous is not None and erased.previous.first_seen_ms == T0
    key = suppression_key(3, erased_hash(SALT, "ana"))
    until_ms = T0 - LATENESS_MS + SUPPRESS_MS  # from the partition clock
    assert erased.ledger == [(key, until_ms)]
    inside_ms = T0 + 2 * DAY_MS
    dropped = p.process(event("ana", inside_ms, 2), inside_ms)
    assert dropped.outcome == SUPPRESSED and "ana" not in store
    assert p.engine.high_ms == inside_ms  # the event still moved the clock
    after_ms = until_ms + LATENESS_MS
    back = p.process(event("ana", after_ms, 3), after_ms)
    assert back.outcome == APPLIED and back.created
    assert back.ledger == [(key, None)]  # the window passed: the entry goes


def test_a_tick_expires_erasure_entries_the_clock_has_passed() -> None:
    p = processor()
    p.process(event("bo", T0, 1), T0)
    p.process(EraseRequest("ana", issued_ms=T0), T0)
    end_ms = T0 + SUPPRESS_MS + LATENESS_MS
    result = p.process(ClockTick(wall_ms=end_ms, events_seen_append_ms=end_ms), end_ms)
    assert result.ledger == [(suppression_key(3, erased_hash(SALT, "ana")), None)]
    assert not p.ledger


def test_a_stale_erasure_changes_nothing() -> None:
    store = DictStore()
    p = processor(store)
    p.process(event("ana", T0, 1), T0)
    result = p.process(EraseRequest("ana", issued_ms=T0 - MAX_FUTURE_MS - 1), T0)
    assert result.outcome == STALE and result.ledger is None and "ana" in store


def test_suppression_entries_loaded_from_storage_drop_events() -> None:
    p = processor()
    p.load_suppressions([(erased_hash(SALT, "ana"), T0 + SUPPRESS_MS)])
    assert p.process(event("ana", T0, 1), T0).outcome == SUPPRESSED
    assert p.process(event("bo", T0, 2), T0).outcome == APPLIED


@pytest.mark.parametrize(
    "update",
    [
        ThresholdUpdate("acme", T0, (0, DAY_MS, 2 * DAY_MS)),
        ThresholdUpdate("acme", T0, (3 * DAY_MS, 2 * DAY_MS, 4 * DAY_MS)),
        ThresholdUpdate("", T0, (DAY_MS, 2 * DAY_MS, 3 * DAY_MS)),
    ],
)
def test_a_threshold_version_with_bad_tiers_or_no_scope_is_rejected(
    update: ThresholdUpdate,
) -> None:
    p = processor()
    result = p.process(update, T0)
    assert result.outcome == REJECTED and result.book is None
    assert not p.engine.book.scopes


def test_a_threshold_version_joins_the_book_once_and_judges_at_once() -> None:
    p = processor()
    p.process(event("ana", T0, 1), T0)
    p.process(event("bo", T0 + 4 * DAY_MS, 2), T0 + 4 * DAY_MS)
    update = ThresholdUpdate("acme", T0, (3 * DAY_MS, 5 * DAY_MS, 9 * DAY_MS))
    applied = p.process(update, T0 + 4 * DAY_MS)
    assert applied.outcome == APPLIED and applied.book == p.engine.book
    assert applied.book is not None and list(applied.book.scopes) == ["acme"]
    assert applied.emissions == []  # nobody of tenant acme
    assert p.process(update, T0 + 4 * DAY_MS).outcome == UNCHANGED


def test_a_record_of_another_kind_is_refused() -> None:
    with pytest.raises(TypeError, match="not an input record"):
        processor().process(Signal, T0)  # type: ignore[arg-type]


def test_control_records_become_the_processors_inputs() -> None:
    assert control_input(Tick(wall_ms=5, events_seen_append_ms=4, kid="k", sig="s")) == (
        ClockTick(5, 4)
    )
    assert control_input(Erase(user_id="ana", issued_ms=7)) == EraseRequest("ana", 7)
    update = ConfigUpdate(scope="acme", effective_from=9, at_risk_ms=1, dormant_ms=2, churned_ms=3)
    assert control_input(update) == ThresholdUpdate("acme", 9, (1, 2, 3))
    with pytest.raises(TypeError, match="not a control record"):
        control_input("tick")  # type: ignore[arg-type]


def test_a_history_record_by_record_reports_its_progress() -> None:
    events = [event(f"u{n}", T0 + n, n) for n in range(120_001)]
    done: list[int] = []
    history = run_records(events, CONFIG, T0, on_progress=done.append)
    assert sum(done) == len(events) and len(done) == 3
    assert history.applied == len(events)
