"""The state a deployment would hold after a history: ``engagement backfill``'s first half.

The history is read as replay reads it (``agents.offline.replay.read_events``:
JSON Lines, CSV or Parquet, each record judged by the worker's rules, in
event-time order) and fed event by event to one record processor
(``tables.processor``) whose events carry their users' input partitions, as
a worker's do. Its append time is the event time, so the clock follows the
history and ends at the newest event minus the lateness; a user is judged
only at clock values the history itself reached, with all of that user's
events known (the replay's rule). What it yields is what the worker keeps:

- every user's state (tier, stage, activation, decline, cohort fields);
- the clock, the same for every partition, with the newest event time as the
  newest append time seen (the stall guard starts from there);
- the threshold book of ``--config`` versions, when given;
- each partition's cohort cells (``tables.cohorts``), counted from the same
  applied events as a worker counts them.

The signals and transitions the history caused are counted, not kept: they
belong to silences the history already judged. ``agents.ops.backfill`` writes
the seed into the worker's tables.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Final

import msgspec

from agents.offline.history_formats import history_lines
from agents.offline.replay import ReplayStats, read_events
from streams.decode import partition_for
from streams.validate import EventRules
from tables.clock import NEVER
from tables.cohorts import Cell, CellCounts, cell_of, cohort_step, count_step
from tables.engine import DictStore
from tables.errors import ConfigurationError
from tables.groups import group_of
from tables.model import APPLIED, PASSIVE, ModelConfig
from tables.processor import PartitionProcessor
from tables.state import UserState
from tables.thresholds import ThresholdBook

TS_IN_FUTURE: Final = "ts_in_future"  # the worker's DLQ reason (docs/CONTRACTS.md)
# suffix -> format: backfill writes into a deployment, so it reads named formats only
HISTORY_SUFFIXES: Final = {
    ".jsonl": "JSON Lines",
    ".ndjson": "JSON Lines",
    ".json": "JSON Lines",
    ".csv": "CSV",
    ".parquet": "Parquet",
}


class HistorySeed(msgspec.Struct):
    """The worker's tables after a history (see the module docstring)."""

    states: dict[str, UserState]
    high_ms: int  # the clock's greatest contribution (clock = high_ms - lateness)
    events_seen_append_ms: int  # the newest append time seen: the newest event time
    book: ThresholdBook
    cells: dict[int, dict[Cell, CellCounts]]  # partition -> cohort cells
    stats: ReplayStats


def history_format(path: Path) -> str:
    """The format of ``path`` by its suffix; ``ConfigurationError`` for another suffix."""
    name = HISTORY_SUFFIXES.get(path.suffix.lower())
    if name is None:
        known = ", ".join(sorted(HISTORY_SUFFIXES))
        raise ConfigurationError(
            f"{path}: unknown history format {path.suffix or '(no suffix)'!r}; "
            f"backfill reads {known}"
        )
    return name


def history_seed(
    path: Path,
    config: ModelConfig,
    partitions: int,
    period_ms: int,
    rules: EventRules,
    book: ThresholdBook | None = None,
    latest_ms: int = 2**62,
) -> HistorySeed:
    """Run the history at ``path`` through the record processor; what the tables hold after.

    An event after ``latest_ms`` (the load's time plus ``ENGAGEMENT_MAX_FUTURE``)
    is refused as ``ts_in_future``, as a worker refuses it. ``ConfigurationError``
    for an unknown format, an unreadable file, or a history without a single
    accepted event (nothing to load: the wrong file or the wrong
    ``ENGAGEMENT_INPUT_FORMAT``)."""
    history_format(path)
    stats = ReplayStats()
    with history_lines(path) as lines:
        read = read_events(iter(lines), latest_ms, stats, rules)
    if stats.after_as_of:
        stats.rejected[TS_IN_FUTURE] = stats.rejected.get(TS_IN_FUTURE, 0) + stats.after_as_of
        stats.after_as_of = 0
    if not read.events:
        refused = ", ".join(f"{reason}: {n}" for reason, n in sorted(stats.rejected.items()))
        raise ConfigurationError(
            f"{path}: no event accepted of {stats.lines} records"
            + (f" (refused: {refused})" if refused else "")
        )
    store = DictStore()
    processor = PartitionProcessor(0, config, store, book=book)
    homes: dict[str, int] = {}
    cells: dict[int, dict[Cell, CellCounts]] = {}
    signals: Counter[str] = Counter()
    salt, share = config.holdout_salt, config.holdout_share
    applied = passive = 0
    for event in read.events:
        home = homes.get(event.user_id)
        if home is None:
            home = homes[event.user_id] = partition_for(event.user_id.encode(), partitions)
        result = processor.on_event(msgspec.structs.replace(event, partition=home))
        signals.update(emission.kind for emission in result.emissions)
        if result.outcome == PASSIVE:
            passive += 1
        if result.outcome != APPLIED or result.state is None:
            continue
        applied += 1
        step = cohort_step(result.previous, result.state, period_ms)
        if step is not None:
            cell = cell_of(step, result.state, group_of(event.user_id, salt, share))
            count_step(cells.setdefault(home, {}), cell, step.retained)
    engine = processor.engine
    stats.events = len(read.events)
    stats.applied = applied
    stats.passive = passive
    stats.duplicates = stats.events - applied - passive
    stats.signals = dict(signals)
    stats.users = len(store)
    newest_ms = max(event.ts_ms for event in read.events)
    assert engine.high_ms > NEVER  # at least one event moved the clock
    return HistorySeed(store.states, engine.high_ms, newest_ms, engine.book, cells, stats)
