"""How well ``declining`` warns before churn, against a plain rule; activation per cohort.

Run on a whole history (``engagement evaluate`` calls ``warning_report``):

- **Churn** (the label): a user *goes on to churn* at active day ``s`` when
  no active day follows within ``churn_days`` (the default churned
  threshold). A warning at ``t`` is a hit when such an ``s`` lies in
  ``[day of t, day of t + horizon]``; only warnings with ``t + horizon +
  churn_days`` inside the history are scored, so every label is observed.
- **Precision**: hits / scored warnings. **Lead time** of a hit: days from the
  warning to the ``at_risk`` signal of the silence that began at ``s``
  (positive: the warning came first). **Churn episodes warned**: scored
  churn starts (``s`` with ``s + churn_days`` inside the history, after at
  least 28 days of the user's history) with a hit before them. **Paired**:
  on the churn episodes both methods warned of, the median lead of each
  method's earliest hit (the same users, so the leads compare directly).
- **The plain rule** (``halved_28_day_rule``): at the end of each day ``d``
  of a user with 56 days of history, ``A`` = active days in the 28 days
  ending on ``d`` and ``B`` = in the 28 before; it warns when ``B > 0`` and
  ``A ≤ B / 2``, once until the condition clears.

Activation per weekly cohort (``activation_cohorts``): users by the model
week (``7 · DAY_MS``) of their first event; the share who activated within
the deadline, among those whose deadline has passed by the end.
"""

from __future__ import annotations

import itertools
import statistics
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol

from tables.decline import DECLINING, MIN_HISTORY_DAYS
from tables.model import Emission

RULE_WINDOW_DAYS: Final = 28
WEEK_DAYS: Final = 7
NEW: Final = "new"
ACTIVATED: Final = "activated"
NOT_ACTIVATED: Final = "not_activated"


def active_days(times: Iterable[tuple[str, int]], day_ms: int) -> dict[str, list[int]]:
    """Sorted active days per user from ``(user, ts_ms)``."""
    days: defaultdict[str, set[int]] = defaultdict(set)
    for user, ts_ms in times:
        days[user].add(ts_ms // day_ms)
    return {user: sorted(found) for user, found in days.items()}


def churn_starts(days: list[int], end_day: int, churn_days: int) -> list[int]:
    """Active days followed by at least ``churn_days`` days without activity."""
    starts = [a for a, b in itertools.pairwise(days) if b - a > churn_days]
    if days and end_day - days[-1] >= churn_days:
        starts.append(days[-1])
    return starts


def halved_rule(days: list[int], end_day: int) -> list[int]:
    """The days at whose end the plain rule warns (see the module docstring)."""
    if not days:
        return []
    first = days[0]
    warned: list[int] = []
    is_open = False
    for day in range(first + 2 * RULE_WINDOW_DAYS - 1, end_day + 1):
        recent = bisect_left(days, day + 1) - bisect_left(days, day - RULE_WINDOW_DAYS + 1)
        before = bisect_left(days, day - RULE_WINDOW_DAYS + 1) - bisect_left(
            days, day - 2 * RULE_WINDOW_DAYS + 1
        )
        condition = before > 0 and 2 * recent <= before
        if condition and not is_open:
            warned.append(day)
        is_open = condition
    return warned


def score_warnings(
    warnings: dict[str, list[int]],
    days_by_user: dict[str, list[int]],
    at_risk_by_episode: dict[tuple[str, int], int],
    end_day: int,
    horizon_days: int,
    churn_days: int,
    day_ms: int,
) -> dict[str, Any]:
    """Precision, lead time and churn episodes warned for warnings given as
    ``user -> [warning instant in ms]``."""
    scored = hits = 0
    leads: list[float] = []
    warned_starts: dict[tuple[str, int], float] = {}  # churn start -> the earliest hit's lead
    for user, instants in warnings.items():
        starts = churn_starts(days_by_user.get(user, []), end_day, churn_days)
        for at_ms in instants:
            day = at_ms // day_ms
            if day + horizon_days + churn_days > end_day:
                continue
            scored += 1
            hit = next((s for s in starts if day <= s <= day + horizon_days), None)
            if hit is None:
                continue
            hits += 1
            at_risk_ms = at_risk_by_episode.get((user, hit))
            if at_risk_ms is not None:
                lead = (at_risk_ms - at_ms) / day_ms
                leads.append(lead)
                warned_starts[(user, hit)] = max(lead, warned_starts.get((user, hit), lead))
    churn_episodes = sum(
        1
        for days in days_by_user.values()
        for s in churn_starts(days, end_day, churn_days)
        if s - days[0] + 1 >= MIN_HISTORY_DAYS and s + churn_days <= end_day
    )
    return {
        "warnings": sum(len(instants) for instants in warnings.values()),
        "scored": scored,
        "hits": hits,
        "precision": hits / scored if scored else float("nan"),
        "lead_days_median": _median(leads),
        "lead_days_mean": statistics.fmean(leads) if leads else float("nan"),
        "churn_episodes": churn_episodes,
        "churn_episodes_warned": len(warned_starts),
        "leads_by_churn_episode": warned_starts,
    }


def warning_report(
    times: list[tuple[str, int]],
    emissions: list[Emission],
    day_ms: int,
    horizon_ms: int,
    churn_ms: int,
) -> dict[str, Any]:
    """``declining`` against the halved-28-day rule on one history (module docstring)."""
    days_by_user = active_days(times, day_ms)
    end_day = max((ts for _user, ts in times), default=0) // day_ms
    at_risk_by_episode = {
        (e.user_id, e.episode // day_ms): e.as_of for e in emissions if e.kind == "at_risk"
    }
    declining: defaultdict[str, list[int]] = defaultdict(list)
    for emission in emissions:
        if emission.kind == DECLINING:
            declining[emission.user_id].append(emission.as_of)
    rule = {
        user: [(day + 1) * day_ms for day in halved_rule(days, end_day)]
        for user, days in days_by_user.items()
    }
    horizon_days = horizon_ms // day_ms
    churn_days = churn_ms // day_ms
    figures = {
        name: score_warnings(
            warned, days_by_user, at_risk_by_episode, end_day, horizon_days, churn_days, day_ms
        )
        for name, warned in (("declining", declining), ("halved_28_day_rule", rule))
    }
    ours = figures["declining"].pop("leads_by_churn_episode")
    theirs = figures["halved_28_day_rule"].pop("leads_by_churn_episode")
    both = sorted(set(ours) & set(theirs))
    paired = {
        "churn_episodes": len(both),
        "declining_lead_days_median": _median([ours[key] for key in both]),
        "halved_28_day_rule_lead_days_median": _median([theirs[key] for key in both]),
    }
    return {"horizon_days": horizon_days, "churn_days": churn_days, **figures, "paired": paired}


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- activation -------------------------------------------------------------------


class _Coded(Protocol):
    @property
    def code(self) -> str: ...


class _Move(Protocol):
    """A lifecycle transition as the model decides it or as its topic carries it."""

    @property
    def user_id(self) -> str: ...
    @property
    def from_stage(self) -> str | None: ...
    @property
    def to_stage(self) -> str: ...
    @property
    def as_of(self) -> int: ...
    @property
    def reasons(self) -> Sequence[_Coded]: ...


def activation_marks(transitions: Iterable[_Move]) -> list[tuple[str, str, int]]:
    """``(user, new | activated | not_activated, as_of)`` from lifecycle transitions."""
    marks = []
    for moved in transitions:
        if moved.from_stage is None:
            marks.append((moved.user_id, NEW, moved.as_of))
        elif moved.to_stage == NOT_ACTIVATED:
            marks.append((moved.user_id, NOT_ACTIVATED, moved.as_of))
        elif any(reason.code == "activated_after_days" for reason in moved.reasons):
            marks.append((moved.user_id, ACTIVATED, moved.as_of))
    return marks


def activation_cohorts(
    marks: Iterable[tuple[str, str, int]], day_ms: int, deadline_ms: int, end_ms: int
) -> list[dict[str, Any]]:
    """Per weekly cohort of first events: users, those whose deadline passed, and the
    share of those who activated within it."""
    first: dict[str, int] = {}
    activated: dict[str, int] = {}
    for user, kind, as_of in marks:
        if kind == NEW:
            first.setdefault(user, as_of)
        elif kind == ACTIVATED:
            activated.setdefault(user, as_of)
    week_ms = WEEK_DAYS * day_ms
    cohorts: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for user, first_ms in first.items():
        counts = cohorts[first_ms // week_ms]
        counts[0] += 1
        if first_ms + deadline_ms <= end_ms:
            counts[1] += 1
            done_ms = activated.get(user)
            if done_ms is not None and done_ms <= first_ms + deadline_ms:
                counts[2] += 1
    return [
        {
            "cohort_start_ms": week * week_ms,
            "users": users,
            "past_deadline": due,
            "activated": done,
            "activation_rate": done / due if due else float("nan"),
        }
        for week, (users, due, done) in sorted(cohorts.items())
    ]
