"""Lifecycle stages: their codes in the state byte and when time alone changes them.

Stages (docs/CONTRACTS.md): ``new`` for the first ``NEW_DAYS`` days after first
seen, ``active``, ``at_risk`` / ``dormant`` / ``churned`` while the matching
tier holds, ``resurrected`` for ``RESURRECTED_DAYS`` days after a return from
dormant or churned. A return from at_risk goes to ``active``. With
activation on (``tables.activation``) ``new`` ends by activating, or at the
deadline in ``not_activated``, never by time alone.

The state keeps the stage last announced, so every change becomes exactly
one transition record. Events change it in ``tables.step``, tiers in
``tables.judgement``; the two changes that only the passing of time makes
(new → active, resurrected → active) fall due at the instants computed here,
which the engine's due index schedules alongside the tiers.
"""

from __future__ import annotations

from typing import Final

from tables.state import NO_DAY, TIER_NONE, UserState

STAGES: Final = (
    "new",
    "active",
    "at_risk",
    "dormant",
    "churned",
    "resurrected",
    "not_activated",
)
STAGE_NEW: Final = 0
STAGE_ACTIVE: Final = 1
STAGE_AT_RISK: Final = 2
STAGE_DORMANT: Final = 3
STAGE_CHURNED: Final = 4
STAGE_RESURRECTED: Final = 5
STAGE_NOT_ACTIVATED: Final = 6  # activation on, the deadline passed (tables.activation)


def stage_of_tier(tier: int) -> int:
    """The stage a tier puts the user in (tier 1..3 → at_risk..churned)."""
    return STAGE_AT_RISK + tier - 1


def stage_after_return(tier: int) -> int:
    """Where a return from ``tier`` leads: at_risk → active, dormant/churned → resurrected."""
    return STAGE_ACTIVE if tier <= 1 else STAGE_RESURRECTED


def new_ends_ms(state: UserState, new_days: int, day_ms: int) -> int:
    return state.first_seen_ms + new_days * day_ms


def resurrected_ends_ms(state: UserState, resurrected_days: int, day_ms: int) -> int:
    return (state.returned_day + resurrected_days) * day_ms


def stage_due_ms(state: UserState, new_days: int, resurrected_days: int, day_ms: int) -> int | None:
    """When time alone next changes the stored stage (``None``: only an event or a tier can)."""
    if state.tier > TIER_NONE:
        return None
    if state.stage == STAGE_NEW:
        return new_ends_ms(state, new_days, day_ms)
    if state.stage == STAGE_RESURRECTED and state.returned_day != NO_DAY:
        return resurrected_ends_ms(state, resurrected_days, day_ms)
    return None


def projected_stage(
    state: UserState, at_ms: int, new_days: int, resurrected_days: int, day_ms: int
) -> int:
    """The stage as of ``at_ms``: the stored one, moved on by time where time alone moves it."""
    if state.tier > TIER_NONE:
        return stage_of_tier(state.tier)
    due = stage_due_ms(state, new_days, resurrected_days, day_ms)
    if due is not None and at_ms >= due:
        return STAGE_ACTIVE
    return state.stage
