"""Cohort retention and growth accounting: who was active in which period.

A *period* is ``period_ms`` of event time (by default 7 model days,
``7 * DAY_MS``), numbered from the epoch (``ts // period_ms``), as days are.
A user's *cohort* is the period of their first activity (``first_seen``).
A user is *active in a period* when their ``last_seen`` falls in it, so the
rule follows the model's own notion of activity: whatever moves
``last_seen`` makes a user active, and nothing else does.

Each applied event that moves a user's ``last_seen`` into a later period than
before is one *cohort step* (``cohort_step``): the user counts once in the
cell ``(tenant, segment, group, cohort, period)``, as ``retained`` when their
previous active period was the one just before, else (after a gap) as
resurrected, or as new when the event made the user. A late event (before
``last_seen``) moves nothing and counts nowhere; an erased user's past counts
stay (they are aggregates, no personal data). Tenant, segment and group are
the user's as of the step.

From the cells (``CellCounts`` per ``Cell``), per (tenant, segment, group):

- **retention**: the share of a cohort (its users active in their first
  period) active in each later period;
- **growth accounting** per period: ``new`` (the cohort's own period),
  ``retained``, ``resurrected`` (active, not in the period before, not new),
  ``churned`` (active in the period before, not in this one:
  ``active(p - 1) - retained(p)``) and the quick ratio
  ``(new + resurrected) / churned`` (``None`` when nobody churned).

The live worker (``agents.worker.cohorts``) and ``engagement report`` on a
history both sum cohort steps of the record processor's results with these
functions, so they give the same figures on the same events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Final

import msgspec

from tables.state import UserState

DEFAULT_PERIOD_DAYS: Final = 7


class Cell(msgspec.Struct, frozen=True, order=True, gc=False):
    """Where a cohort step counts: labels, cohort and period (period numbers)."""

    tenant: str
    segment: str
    group: str
    cohort: int
    period: int


class CellCounts(msgspec.Struct, gc=False):
    """Users of a cell active in its period, and those of them active in the one before."""

    active: int = 0
    retained: int = 0


class CohortStep(msgspec.Struct, frozen=True, gc=False):
    cohort: int
    period: int
    retained: bool


def cohort_step(previous: UserState | None, state: UserState, period_ms: int) -> CohortStep | None:
    """The step an applied event made: its user became active in a new period, or ``None``."""
    period = state.last_seen_ms // period_ms
    if previous is None:
        return CohortStep(state.first_seen_ms // period_ms, period, False)
    before = previous.last_seen_ms // period_ms
    if period <= before:
        return None
    return CohortStep(state.first_seen_ms // period_ms, period, before == period - 1)


def cell_of(step: CohortStep, state: UserState, group: str) -> Cell:
    return Cell(state.tenant, state.segment, group, step.cohort, step.period)


def count_step(cells: dict[Cell, CellCounts], cell: Cell, retained: bool) -> CellCounts:
    """Add one step to ``cells``; returns the cell's counts after it."""
    counts = cells.get(cell)
    if counts is None:
        counts = cells[cell] = CellCounts()
    counts.active += 1
    if retained:
        counts.retained += 1
    return counts


Labels = tuple[str, str, str]  # tenant, segment, group


class Retention(msgspec.Struct):
    """One cohort of one (tenant, segment, group): users active per period since it began."""

    tenant: str
    segment: str
    group: str
    cohort: int
    size: int
    active: list[int]  # index k: users of the cohort active in period cohort + k
    share: list[float | None]  # active[k] / size (None for an empty cohort)


class Growth(msgspec.Struct):
    """Growth accounting of one period of one (tenant, segment, group)."""

    tenant: str
    segment: str
    group: str
    period: int
    active: int
    new: int
    retained: int
    resurrected: int
    churned: int
    quick_ratio: float | None


def merge(cells: Iterable[tuple[Cell, CellCounts]]) -> dict[Cell, CellCounts]:
    """Sum the counts of equal cells (e.g. the same cell from several partitions)."""
    merged: dict[Cell, CellCounts] = {}
    for cell, counts in cells:
        into = merged.get(cell)
        if into is None:
            into = merged[cell] = CellCounts()
        into.active += counts.active
        into.retained += counts.retained
    return merged


def retention(cells: dict[Cell, CellCounts], last_period: int) -> list[Retention]:
    """Every cohort's active users per period up to ``last_period``, in label and cohort order."""
    by_cohort: defaultdict[tuple[Labels, int], dict[int, int]] = defaultdict(dict)
    for cell, counts in cells.items():
        if cell.period <= last_period:
            by_cohort[((cell.tenant, cell.segment, cell.group), cell.cohort)][cell.period] = (
                counts.active
            )
    out = []
    for (labels, cohort), periods in sorted(by_cohort.items()):
        if cohort > last_period:
            continue
        active = [periods.get(period, 0) for period in range(cohort, last_period + 1)]
        size = active[0]
        share = [round(count / size, 6) if size else None for count in active]
        out.append(Retention(*labels, cohort, size, active, share))
    return out


def growth(cells: dict[Cell, CellCounts], last_period: int) -> list[Growth]:
    """Growth accounting per period, from each label set's first period to ``last_period``."""
    totals: defaultdict[Labels, dict[int, list[int]]] = defaultdict(dict)  # [active, new, retained]
    for cell, counts in cells.items():
        if cell.period > last_period:
            continue
        row = totals[(cell.tenant, cell.segment, cell.group)].setdefault(cell.period, [0, 0, 0])
        row[0] += counts.active
        if cell.cohort == cell.period:
            row[1] += counts.active
        row[2] += counts.retained
    out = []
    for labels, periods in sorted(totals.items()):
        for period in range(min(periods), last_period + 1):
            active, new, retained = periods.get(period, (0, 0, 0))
            before = periods.get(period - 1, (0, 0, 0))[0]
            resurrected = active - new - retained
            churned = before - retained
            quick = round((new + resurrected) / churned, 6) if churned else None
            out.append(Growth(*labels, period, active, new, retained, resurrected, churned, quick))
    return out
