"""What ``engagement report`` needs from an event history: cohort cells and active days.

The history is read as replay reads it (``agents.offline.replay.read_events``:
the same line rules, event-time order) and fed event by event to the record
processor, as a worker feeds it. Each applied event's cohort step counts in
its cell with the same functions the live worker uses (``tables.cohorts``),
so the figures equal the cohorts topic's on the same events. A user's active
days are the model days their ``last_seen`` entered (the model's activity:
what moves ``last_seen``), which the win-back report uses to tell a lasting
return from a single visit.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from agents.offline.history_formats import history_lines
from agents.offline.replay import ReplayStats, read_events
from streams.validate import DEFAULT_EVENT_RULES, EventRules
from tables.cohorts import Cell, CellCounts, cell_of, cohort_step, count_step
from tables.engine import DictStore
from tables.groups import group_of
from tables.model import APPLIED, ModelConfig
from tables.processor import PartitionProcessor


class HistoryFacts(msgspec.Struct):
    cells: dict[Cell, CellCounts]
    active_days: dict[str, list[int]]  # model days (ts // DAY_MS), ascending
    period_ms: int
    end_ms: int  # the newest event time read


def history_facts(
    events_path: Path,
    config: ModelConfig,
    period_ms: int,
    as_of_ms: int | None = None,
    rules: EventRules = DEFAULT_EVENT_RULES,
) -> HistoryFacts:
    """Run the history (up to ``as_of_ms``) through one record processor."""
    with history_lines(events_path) as lines:  # JSON Lines, CSV or Parquet
        read = read_events(iter(lines), as_of_ms or 2**62, ReplayStats(), rules)
    processor = PartitionProcessor(0, config, DictStore())
    cells: dict[Cell, CellCounts] = {}
    active_days: dict[str, list[int]] = {}
    day_ms = config.day_ms
    salt, share = config.holdout_salt, config.holdout_share
    for event in read.events:
        result = processor.on_event(event)
        state = result.state
        if result.outcome != APPLIED or state is None:
            continue
        previous = result.previous
        day = state.last_seen_ms // day_ms
        if previous is None or previous.last_seen_ms // day_ms < day:
            active_days.setdefault(event.user_id, []).append(day)
        step = cohort_step(previous, state, period_ms)
        if step is not None:
            cell = cell_of(step, state, group_of(event.user_id, salt, share))
            count_step(cells, cell, step.retained)
    end_ms = read.events[-1].ts_ms if read.events else 0
    return HistoryFacts(cells, active_days, period_ms, end_ms)
