"""Offline replay: the same model over a JSON Lines history, no broker.

Events are sorted by (ts, input order); the clock follows event time with the
same lateness and finally moves to ``--as-of``. That equals live processing
of the same events in order with no lag, so analysts can backfill signals,
tune thresholds and score users exactly as the worker would.

Tenant and segment thresholds (``--config``): a JSON Lines file of config
topic values, each naming its ``scope`` and ``effective_from``. Every version
applies from its ``effective_from`` on the event-time clock, which is what a
worker decides when the version reached it before that instant (docs/CONTRACTS.md:
``max(effective_from, clock on arrival)``).
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from operator import attrgetter
from pathlib import Path
from typing import IO, Annotated, Any

import msgspec

from agents.common.collection import fewer_collections
from streams.config_record import BadConfigRecord, parse_config_record
from streams.decode import id_hash
from streams.records import InputEvent, LifecycleTransition, Signal, encode
from tables.clock import NEVER
from tables.durations import parse_rfc3339_ms
from tables.engine import DictStore, PartitionEngine
from tables.errors import BadInstantError, ConfigurationError
from tables.history import run_users
from tables.model import (
    Emission,
    ModelConfig,
    ModelEvent,
    Transition,
    risk_at,
    stage_at,
    thresholds_for,
)
from tables.state import NO_OFFSET, TIER_NAMES, TIER_NONE, UserState
from tables.thresholds import ThresholdBook

MIN_TS_MS = 946_684_800_000
PROGRESS_EVENTS = 50_000
_line_decoder = msgspec.json.Decoder(InputEvent)


class ReplayStats(msgspec.Struct):
    lines: int = 0
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    after_as_of: int = 0
    rejected: dict[str, int] = msgspec.field(default_factory=dict)
    signals: dict[str, int] = msgspec.field(default_factory=dict)
    users: int = 0


def _ts_ms(ts: int | str) -> int | None:
    if isinstance(ts, int):
        return ts
    try:
        return parse_rfc3339_ms(ts)
    except BadInstantError:
        return None


_event_time = attrgetter("ts_ms")


class _PlainLine(msgspec.Struct, frozen=True, gc=False):
    """The usual line, validated by msgspec alone: non-empty ids and type, an
    integer ``ts`` in range. Any other line is judged by ``_check_line``."""

    event_id: Annotated[str, msgspec.Meta(min_length=1)]
    user_id: Annotated[str, msgspec.Meta(min_length=1)]
    type: Annotated[str, msgspec.Meta(min_length=1)]
    ts: Annotated[int, msgspec.Meta(ge=MIN_TS_MS)]
    tenant: str | None = None
    segment: str | None = None
    props: dict[str, Any] | None = None


_plain_decoder = msgspec.json.Decoder(_PlainLine)


def _check_line(line: bytes) -> tuple[InputEvent, int] | str:
    """An event that is not in the plain form with its ``ts`` in ms, or why it is
    refused (the live decoder's reasons), or "" for a blank line."""
    try:
        raw = _line_decoder.decode(line)
    except msgspec.ValidationError:
        return "invalid_event"
    except msgspec.DecodeError:
        return "not_json" if line.strip() else ""
    ts_ms = _ts_ms(raw.ts)
    if ts_ms is None:
        return "wrong_type"
    if ts_ms < MIN_TS_MS:
        return "ts_out_of_range"
    kind = raw.type
    if not kind or kind[0] == "$" or not raw.user_id or not raw.event_id:
        # empty strings are refused as the live decoder refuses them
        return "reserved_type" if kind[:1] == "$" else "wrong_type"
    return raw, ts_ms


class EventsRead(msgspec.Struct):
    """Events read from a file, in event-time order, with each user's positions."""

    events: list[ModelEvent]
    # each user's positions in ``events`` (tables.history.positions_by_user), made
    # while reading when the file was already in order; None after a sort
    by_user: dict[str, list[int]] | None


def read_events(lines: Iterator[bytes], as_of_ms: int, stats: ReplayStats) -> EventsRead:
    """Decode and validate lines; keep events at or before ``as_of_ms``, in event-time order.

    The sort is stable, so events with the same ``ts`` keep their input order;
    a file already in order (the usual history) is not sorted, and its users'
    positions are gathered on the way (one pass fewer for ``run_users``)."""
    rejected: Counter[str] = Counter()
    events: list[ModelEvent] = []
    append = events.append
    plain = _plain_decoder.decode
    # user id -> [the id itself, its positions...]: the first item is the one
    # string object every event of that user shares (the history is in memory)
    users: dict[str, list[Any]] = {}
    user_entry = users.get
    names: dict[str, str] = {}
    same = names.setdefault  # one string object per distinct type, tenant, segment
    lines_seen = blank = after_as_of = 0
    latest_ms = backwards = 0
    for lines_seen, line in enumerate(lines, 1):  # noqa: B007 (the count is used below)
        raw: _PlainLine | InputEvent
        try:
            raw = plain(line)
            ts_ms = raw.ts
        except msgspec.MsgspecError:  # not the plain form: judged field by field
            checked = _check_line(line)
            if isinstance(checked, str):
                if checked:
                    rejected[checked] += 1
                else:
                    blank += 1
                continue
            raw, ts_ms = checked
        kind = raw.type
        if kind[0] == "$":
            rejected["reserved_type"] += 1
            continue
        user_id = raw.user_id
        if ts_ms > as_of_ms:
            after_as_of += 1
            continue
        if ts_ms >= latest_ms:
            latest_ms = ts_ms
        else:
            backwards += 1
        entry = user_entry(user_id)
        if entry is None:
            entry = users[user_id] = [user_id]
        entry.append(len(events))
        tenant = raw.tenant
        segment = raw.segment
        # positional, in ModelEvent's field order: the append time is the event time
        append(
            ModelEvent(
                entry[0],
                id_hash(raw.event_id),
                same(kind, kind),
                ts_ms,
                ts_ms,
                0,
                NO_OFFSET,
                None if tenant is None else same(tenant, tenant),
                None if segment is None else same(segment, segment),
            )
        )
    stats.lines += lines_seen - blank
    stats.after_as_of += after_as_of
    stats.rejected = dict(rejected)
    if backwards:  # some event went back in time: sort, and run_users groups again
        events.sort(key=_event_time)
        return EventsRead(events, None)
    for entry in users.values():
        del entry[0]
    return EventsRead(events, users)


def read_config(path: Path) -> ThresholdBook:
    """Threshold versions from a JSON Lines file of config values (``scope``, ``effective_from``).

    Raises ``ConfigurationError`` naming the line for a bad version, and for
    two versions of one scope with the same ``effective_from`` (ambiguous)."""
    updates = []
    seen: set[tuple[str, int]] = set()
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                update = parse_config_record(None, line)
            except BadConfigRecord as exc:
                raise ConfigurationError(f"{path}:{number}: {exc}") from exc
            if update is None:  # pragma: no cover - a line is never a tombstone
                continue
            version = (update.scope, update.effective_from)
            if version in seen:
                raise ConfigurationError(
                    f"{path}:{number}: a second version of {update.scope!r} "
                    f"effective from {update.effective_from}"
                )
            seen.add(version)
            updates.append(update)
    book = ThresholdBook()
    for update in sorted(updates, key=attrgetter("effective_from")):
        tiers = (update.at_risk_ms, update.dormant_ms, update.churned_ms)
        book = book.receive(update.scope, update.effective_from, tiers, NEVER) or book
    return book


class ReplayRun(msgspec.Struct):
    """The states after a replay, with the configuration that made them."""

    config: ModelConfig
    store: DictStore
    stats: ReplayStats


@fewer_collections()
def run_history(
    events_path: Path,
    as_of_ms: int,
    config: ModelConfig,
    on_signals: Callable[[list[Emission]], None] | None = None,
    on_transitions: Callable[[list[Transition]], None] | None = None,
    progress: bool | None = None,
    book: ThresholdBook | None = None,
) -> ReplayRun:
    """Run the model over the file up to ``as_of_ms``; emissions go to the callbacks.

    User by user (``tables.history``): the same decisions, in the same order,
    as a ``PartitionEngine`` fed the events one by one. With threshold
    versions in ``book`` the policy changes mid-history: the engine itself
    runs them, event by event."""
    stats = ReplayStats()
    with events_path.open("rb") as handle:
        read = read_events(iter(handle), as_of_ms, stats)
    ordered = read.events
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=len(ordered), unit="ev", unit_scale=True, file=sys.stderr)
    update = None if bar is None else bar.update
    try:
        if book is not None and book.scopes:
            store, config, emissions, transitions, applied = _run_engine(
                ordered, config, as_of_ms, book, update
            )
        else:
            history = run_users(ordered, config, as_of_ms, update, read.by_user)
            store = DictStore()
            store.update(history.states)
            emissions, transitions, applied = (
                history.emissions,
                history.transitions,
                history.applied,
            )
    finally:
        if bar is not None:
            bar.close()
    stats.events = len(ordered)
    stats.applied = applied
    stats.duplicates = len(ordered) - applied
    stats.signals = dict(Counter(emission.kind for emission in emissions))
    stats.users = len(store)
    if on_signals is not None and emissions:
        on_signals(emissions)
    if on_transitions is not None and transitions:
        on_transitions(transitions)
    return ReplayRun(config=config, store=store, stats=stats)


def _run_engine(
    ordered: list[ModelEvent],
    config: ModelConfig,
    as_of_ms: int,
    book: ThresholdBook,
    on_progress: Callable[[int], object] | None,
) -> tuple[DictStore, ModelConfig, list[Emission], list[Transition], int]:
    """One engine over every user, threshold versions switching on its clock."""
    store = DictStore()
    engine = PartitionEngine(0, config, store, book=book)
    emissions: list[Emission] = []
    applied = 0
    for start in range(0, len(ordered), PROGRESS_EVENTS):
        chunk = ordered[start : start + PROGRESS_EVENTS]
        count, more = engine.apply_all(chunk)
        applied += count
        emissions.extend(more)
        if on_progress is not None:
            on_progress(len(chunk))
    emissions.extend(engine.advance_to(as_of_ms))
    # the thresholds in force at --as-of score the users
    return store, engine.config, emissions, engine.take_transitions(), applied


def replay(
    events_path: Path,
    as_of_ms: int,
    config: ModelConfig,
    scores_out: IO[str],
    signals_out: IO[bytes] | None = None,
    progress: bool | None = None,
    lifecycle_out: IO[bytes] | None = None,
    book: ThresholdBook | None = None,
) -> ReplayStats:
    """Run the model over the file and write scores (and signals, and transitions)."""

    def signals(emissions: list[Emission]) -> None:
        if signals_out is not None:
            for emission in emissions:
                signals_out.write(encode(Signal.from_emission(emission)) + b"\n")

    def transitions(taken: list[Transition]) -> None:
        if lifecycle_out is not None:
            for transition in taken:
                record = LifecycleTransition.from_transition(transition)
                lifecycle_out.write(encode(record) + b"\n")

    run = run_history(events_path, as_of_ms, config, signals, transitions, progress, book)
    write_scores(run.store, as_of_ms, run.config, scores_out)
    return run.stats


def write_scores(store: DictStore, as_of_ms: int, config: ModelConfig, out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["user_id", "risk", "tier", "stage", "inactive_days", "threshold_days"])
    day = config.day_ms
    days_text: dict[int, str] = {}  # a threshold in days, formatted once per distinct value

    def row(user_id: str, state: UserState) -> tuple[str, str, str, str, str, str]:
        tiers, _source = thresholds_for(state, config)
        threshold = tiers[state.tier - 1] if state.tier > TIER_NONE else tiers[0]
        threshold_text = days_text.get(threshold)
        if threshold_text is None:
            threshold_text = days_text[threshold] = f"{threshold / day:.3f}"
        inactive_ms = as_of_ms - state.last_seen_ms
        return (
            user_id,
            f"{risk_at(state, as_of_ms, config):.6f}",
            TIER_NAMES[state.tier],
            stage_at(state, as_of_ms, config),
            f"{(inactive_ms if inactive_ms > 0 else 0) / day:.3f}",
            threshold_text,
        )

    states = store.states
    writer.writerows(row(user_id, states[user_id]) for user_id in sorted(states))
