"""Offline replay: the same model over a JSON Lines history, no broker.

Events are sorted by (ts, input order); the clock follows event time with the
same lateness and finally moves to ``--as-of``. That equals live processing
of the same events in order with no lag, so analysts can backfill signals,
tune thresholds and score users exactly as the worker would.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from operator import attrgetter
from pathlib import Path
from typing import IO

import msgspec

from streams.decode import id_hash
from streams.records import InputEvent, LifecycleTransition, Signal, encode
from tables.durations import parse_rfc3339_ms
from tables.engine import DictStore
from tables.errors import BadInstantError
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

MIN_TS_MS = 946_684_800_000
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


def read_events(lines: Iterator[bytes], as_of_ms: int, stats: ReplayStats) -> list[ModelEvent]:
    """Decode and validate lines; keep events at or before ``as_of_ms``, in event-time order.

    The sort is stable, so events with the same ``ts`` keep their input order
    (and a file already in order costs one pass)."""
    rejected: Counter[str] = Counter()
    events: list[ModelEvent] = []
    append = events.append
    decode = _line_decoder.decode
    names: dict[str, str] = {}
    labels: dict[str | None, str | None] = {}
    same, same_label = names.setdefault, labels.setdefault
    lines_seen = blank = after_as_of = 0
    for lines_seen, line in enumerate(lines, 1):  # noqa: B007 (the count is used below)
        try:
            raw = decode(line)
        except msgspec.ValidationError:
            rejected["invalid_event"] += 1
            continue
        except msgspec.DecodeError:
            if line.strip():
                rejected["not_json"] += 1
            else:
                blank += 1
            continue
        ts = raw.ts
        if isinstance(ts, int):
            ts_ms = ts
        else:
            parsed = _ts_ms(ts)
            if parsed is None:
                rejected["wrong_type"] += 1
                continue
            ts_ms = parsed
        if ts_ms < MIN_TS_MS:
            rejected["ts_out_of_range"] += 1
            continue
        kind = raw.type
        if kind.startswith("$") or not raw.user_id or not raw.event_id:
            rejected["reserved_type" if kind.startswith("$") else "wrong_type"] += 1
            continue
        if ts_ms > as_of_ms:
            after_as_of += 1
            continue
        # positional, in ModelEvent's field order: the append time is the event time;
        # one string object per distinct name (the history is held in memory)
        append(
            ModelEvent(
                same(raw.user_id, raw.user_id),
                id_hash(raw.event_id),
                same(kind, kind),
                ts_ms,
                ts_ms,
                0,
                NO_OFFSET,
                same_label(raw.tenant, raw.tenant),
                same_label(raw.segment, raw.segment),
            )
        )
    stats.lines += lines_seen - blank
    stats.after_as_of += after_as_of
    stats.rejected = dict(rejected)
    events.sort(key=_event_time)
    return events


class ReplayRun(msgspec.Struct):
    """The states after a replay, with the configuration that made them."""

    config: ModelConfig
    store: DictStore
    stats: ReplayStats


def run_history(
    events_path: Path,
    as_of_ms: int,
    config: ModelConfig,
    on_signals: Callable[[list[Emission]], None] | None = None,
    on_transitions: Callable[[list[Transition]], None] | None = None,
    progress: bool | None = None,
) -> ReplayRun:
    """Run the model over the file up to ``as_of_ms``; emissions go to the callbacks.

    User by user (``tables.history``): the same decisions, in the same order,
    as a ``PartitionEngine`` fed the events one by one."""
    stats = ReplayStats()
    with events_path.open("rb") as handle:
        ordered = read_events(iter(handle), as_of_ms, stats)
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=len(ordered), unit="ev", unit_scale=True, file=sys.stderr)
    try:
        history = run_users(ordered, config, as_of_ms, None if bar is None else bar.update)
    finally:
        if bar is not None:
            bar.close()
    stats.events = len(ordered)
    stats.applied = history.applied
    stats.duplicates = len(ordered) - history.applied
    stats.signals = dict(Counter(emission.kind for emission in history.emissions))
    stats.users = len(history.states)
    if on_signals is not None and history.emissions:
        on_signals(history.emissions)
    if on_transitions is not None and history.transitions:
        on_transitions(history.transitions)
    store = DictStore()
    store.update(history.states)
    return ReplayRun(config=config, store=store, stats=stats)


def replay(
    events_path: Path,
    as_of_ms: int,
    config: ModelConfig,
    scores_out: IO[str],
    signals_out: IO[bytes] | None = None,
    progress: bool | None = None,
    lifecycle_out: IO[bytes] | None = None,
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

    run = run_history(events_path, as_of_ms, config, signals, transitions, progress)
    write_scores(run.store, as_of_ms, run.config, scores_out)
    return run.stats


def write_scores(store: DictStore, as_of_ms: int, config: ModelConfig, out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["user_id", "risk", "tier", "stage", "inactive_days", "threshold_days"])
    day = config.day_ms

    def row(user_id: str, state: UserState) -> tuple[str, str, str, str, str, str]:
        tiers, _source = thresholds_for(state, config)
        threshold = tiers[state.tier - 1] if state.tier > TIER_NONE else tiers[0]
        return (
            user_id,
            f"{risk_at(state, as_of_ms, config):.6f}",
            TIER_NAMES[state.tier],
            stage_at(state, as_of_ms, config),
            f"{max(0, as_of_ms - state.last_seen_ms) / day:.3f}",
            f"{threshold / day:.3f}",
        )

    writer.writerows(row(user_id, state) for user_id, state in sorted(store.states.items()))
