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
from typing import IO, Any

import msgspec

from agents.common.collection import fewer_collections
from agents.offline.history_formats import history_lines
from agents.offline.history_lines import read_lines
from streams.config_record import BadConfigRecord, parse_config_record
from streams.decode import id_hash
from streams.inputs import activity_types
from streams.records import LifecycleTransition, Signal, encode
from streams.validate import DEFAULT_EVENT_RULES, EventRules
from tables.clock import NEVER
from tables.engine import DictStore
from tables.errors import ConfigurationError
from tables.history import run_history as run_events
from tables.judgement import stage_at, thresholds_for
from tables.model import Emission, ModelConfig, ModelEvent, Transition
from tables.state import NO_OFFSET, TIER_NAMES, TIER_NONE, UserState
from tables.thresholds import ThresholdBook
from tables.user_risk import risk_at


class ReplayStats(msgspec.Struct):
    lines: int = 0
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    passive: int = 0  # events that are not activity and changed no user (tables.intent)
    after_as_of: int = 0
    # refused lines by DLQ reason code, as a worker would count them
    rejected: dict[str, int] = msgspec.field(default_factory=dict)
    signals: dict[str, int] = msgspec.field(default_factory=dict)
    users: int = 0


_event_time = attrgetter("ts_ms")


class EventsRead(msgspec.Struct):
    """Events read from a file, in event-time order, with each user's positions."""

    events: list[ModelEvent]
    # each user's positions in ``events`` (tables.history.positions_by_user), made
    # while reading when the file was already in order; None after a sort
    by_user: dict[str, list[int]] | None


def read_events(
    lines: Iterator[bytes], as_of_ms: int, stats: ReplayStats, rules: EventRules
) -> EventsRead:
    """Judge lines as a worker does; keep events at or before ``as_of_ms``, in event-time order.

    The sort is stable, so events with the same ``ts`` keep their input order;
    a file already in order (the usual history) is not sorted, and its users'
    positions are gathered on the way (one pass fewer for ``tables.history``)."""
    rejected: Counter[str] = Counter()
    events: list[ModelEvent] = []
    append = events.append
    # user id -> [the id itself, its positions...]: the first item is the one
    # string object every event of that user shares (the history is in memory)
    users: dict[str, list[Any]] = {}
    user_entry = users.get
    names: dict[str, str] = {}
    same = names.setdefault  # one string object per distinct type, tenant, segment
    accepted = after_as_of = 0
    latest_ms = backwards = 0
    for accepted, raw in enumerate(read_lines(lines, rules, rejected), 1):  # noqa: B007
        ts_ms = raw.ts
        if ts_ms > as_of_ms:
            after_as_of += 1
            continue
        if ts_ms >= latest_ms:
            latest_ms = ts_ms
        else:
            backwards += 1
        user_id = raw.user_id
        entry = user_entry(user_id)
        if entry is None:
            entry = users[user_id] = [user_id]
        entry.append(len(events))
        kind = raw.type
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
                raw.anonymous,
            )
        )
    stats.lines += accepted + sum(rejected.values())
    stats.after_as_of += after_as_of
    stats.rejected = dict(rejected)
    if backwards:  # some event went back in time: sort, and tables.history groups again
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
        activity = activity_types(update)
        book = book.receive(update.scope, update.effective_from, tiers, NEVER, activity) or book
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
    rules: EventRules = DEFAULT_EVENT_RULES,
) -> ReplayRun:
    """Run the model over the file up to ``as_of_ms``; emissions go to the callbacks.

    Lines are judged by ``rules`` (``Settings.event_rules``), as a worker
    judges records. The record processor's offline paths
    (``tables.history.run_history``): user by user, or record by record when
    threshold versions in ``book`` change the policy mid-history."""
    stats = ReplayStats()
    with history_lines(events_path) as lines:  # JSON Lines, CSV or Parquet
        read = read_events(iter(lines), as_of_ms, stats, rules)
    ordered = read.events
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=len(ordered), unit="ev", unit_scale=True, file=sys.stderr)
    update = None if bar is None else bar.update
    try:
        history = run_events(ordered, config, as_of_ms, book, update, read.by_user)
    finally:
        if bar is not None:
            bar.close()
    store = DictStore()
    store.update(history.states)
    stats.events = len(ordered)
    stats.applied = history.applied
    stats.passive = history.passive
    stats.duplicates = len(ordered) - history.applied - history.passive
    stats.signals = dict(Counter(emission.kind for emission in history.emissions))
    stats.users = len(store)
    if on_signals is not None and history.emissions:
        on_signals(history.emissions)
    if on_transitions is not None and history.transitions:
        on_transitions(history.transitions)
    # the thresholds in force at --as-of score the users
    return ReplayRun(config=history.config, store=store, stats=stats)


def replay(
    events_path: Path,
    as_of_ms: int,
    config: ModelConfig,
    scores_out: IO[str],
    signals_out: IO[bytes] | None = None,
    progress: bool | None = None,
    lifecycle_out: IO[bytes] | None = None,
    book: ThresholdBook | None = None,
    rules: EventRules = DEFAULT_EVENT_RULES,
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

    run = run_history(events_path, as_of_ms, config, signals, transitions, progress, book, rules)
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
