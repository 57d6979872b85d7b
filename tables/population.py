"""The cadence of a population: the usual gap a new user's thresholds start from.

A user's own tiers (``tables.thresholds``) need ``ADAPTIVE_MIN_DAYS`` active
days; until then the user gets the cadence of their population. It is
learned from the states ``engagement fit`` replays up to its cutoff and kept
in the risk model's file, so a worker and a replay with the same file judge
alike (docs/MODEL.md, "Population cadence"):

- the users counted are those with at least ``min_active_days`` active days
  and a usual gap, i.e. those whose own cadence is known;
- per ``tenant/segment`` (users with a segment) and per ``tenant`` (all the
  tenant's users), the median of their usual gaps (the lower middle value,
  in hundredths of a day), kept when at least ``min_users`` users count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from statistics import median_low
from typing import Final

from tables.state import UserState

MIN_USERS: Final = 20  # fewer users: no population cadence for the scope


def population_cadence(
    states: Iterable[UserState], min_active_days: int, min_users: int = MIN_USERS
) -> dict[str, int]:
    """``{scope: median usual gap in centidays}`` (see the module docstring)."""
    gaps: defaultdict[str, list[int]] = defaultdict(list)
    for state in states:
        if state.active_days < max(min_active_days, 1) or state.usual_gap_centidays <= 0:
            continue
        gaps[state.tenant].append(state.usual_gap_centidays)
        if state.segment:
            gaps[f"{state.tenant}/{state.segment}"].append(state.usual_gap_centidays)
    return {
        scope: int(median_low(found))
        for scope, found in sorted(gaps.items())
        if len(found) >= max(min_users, 1)
    }
