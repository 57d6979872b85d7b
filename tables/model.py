"""The engagement model: apply an event to a user's state, judge the state on the clock.

Pure functions over frozen state; time is always an argument.
"""

from __future__ import annotations

from typing import Final

import msgspec

from tables.groups import group_of
from tables.risk import risk_not_active
from tables.state import (
    DAY_WINDOW,
    ID_SLOTS,
    NO_DAY,
    NO_OFFSET,
    TIER_CHURNED,
    TIER_DORMANT,
    TIER_NAMES,
    TIER_NONE,
    UserState,
    counts_by_age,
)
from tables.thresholds import ThresholdPolicy, Tiers

APPLIED: Final = "applied"
DUPLICATE_OFFSET: Final = "duplicate_offset"
DUPLICATE_ID: Final = "duplicate_id"

REACTIVATED: Final = "reactivated"
GAP_EWMA_WEIGHT: Final = 0.3

STAGES: Final = ("new", "active", "at_risk", "dormant", "churned", "resurrected")


class ModelConfig(msgspec.Struct, frozen=True):
    """What the model needs from the settings (all durations in ms)."""

    policy: ThresholdPolicy
    lateness_ms: int
    day_ms: int
    horizon_ms: int
    dedup_ids: int = ID_SLOTS
    new_days: int = 7
    resurrected_days: int = 14
    holdout_salt: str = ""
    holdout_share: float = 0.1


class ModelEvent(msgspec.Struct, frozen=True, gc=False):
    """A validated input event as the model sees it."""

    user_id: str
    id_hash: int
    type: str
    ts_ms: int
    append_ms: int
    partition: int = 0
    offset: int = NO_OFFSET
    tenant: str | None = None
    segment: str | None = None


class Reason(msgspec.Struct, frozen=True):
    code: str
    value: float
    baseline: float | None = None


class Emission(msgspec.Struct, frozen=True):
    """A signal as the model decides it; the shell adds ``signal_id`` and the schema."""

    kind: str
    user_id: str
    tenant: str
    segment: str
    episode: int
    as_of: int
    last_seen: int
    inactive_ms: int
    threshold_ms: int
    threshold_source: str
    risk: float
    horizon_ms: int
    reasons: tuple[Reason, ...]
    group: str
    tier_reached: str | None = None
    gap_ms: int | None = None
    time_to_return_ms: int | None = None
    late: bool | None = None

    @property
    def signal_id(self) -> str:
        return f"{self.user_id}:{self.episode}:{self.kind}"


def new_state(event: ModelEvent, day_ms: int) -> UserState:
    day = event.ts_ms // day_ms
    return UserState(
        first_seen_ms=event.ts_ms,
        last_seen_ms=event.ts_ms,
        partition=event.partition,
        offset=event.offset,
        recent_ids=(event.id_hash,),
        newest_day=day,
        day_counts=bytes((1,)) + bytes(DAY_WINDOW - 1),
        active_days=1,
        streak_days=1,
        events_total=1,
        tenant=event.tenant or "",
        segment=event.segment or "",
    )


def is_duplicate(state: UserState, event: ModelEvent, dedup_ids: int) -> str | None:
    """Why this event must be skipped, or ``None``; rules of CONTRACTS.md."""
    if (
        event.offset != NO_OFFSET
        and event.partition == state.partition
        and event.offset <= state.offset
    ):
        return DUPLICATE_OFFSET
    if dedup_ids and event.id_hash in state.recent_ids[-dedup_ids:]:
        return DUPLICATE_ID
    return None


def _bump_day(state: UserState, day: int) -> tuple[int, bytes, bool]:
    """New ``(newest_day, day_counts, first_event_of_that_day)`` after one event on ``day``."""
    if state.newest_day == NO_DAY or day - state.newest_day >= DAY_WINDOW:
        return day, bytes((1,)) + bytes(DAY_WINDOW - 1), True
    if day > state.newest_day:
        shift = day - state.newest_day
        counts = bytearray(bytes(shift) + state.day_counts[: DAY_WINDOW - shift])
        counts[0] = 1
        return day, bytes(counts), True
    age = state.newest_day - day
    if age >= DAY_WINDOW:
        return state.newest_day, state.day_counts, False  # too old to know; counted in total
    counts = bytearray(state.day_counts)
    first = counts[age] == 0
    if counts[age] < 255:
        counts[age] += 1
    return state.newest_day, bytes(counts), first


def apply_event(
    state: UserState | None, event: ModelEvent, config: ModelConfig
) -> tuple[str, UserState, list[Emission]]:
    """Apply one event: ``(outcome, new state, emissions)``; duplicates change nothing."""
    if state is None:
        return APPLIED, new_state(event, config.day_ms), []
    duplicate = is_duplicate(state, event, config.dedup_ids)
    if duplicate is not None:
        return duplicate, state, []

    emissions: list[Emission] = []
    day = event.ts_ms // config.day_ms
    newest_day, day_counts, first_of_day = _bump_day(state, day)
    last_day = state.last_seen_ms // config.day_ms
    streak = state.streak_days
    usual_gap = state.usual_gap_centidays
    if day > last_day:
        gap_days = day - last_day
        streak = streak + 1 if gap_days == 1 else 1
        usual_gap = (
            100 * gap_days
            if usual_gap == 0
            else round(usual_gap + GAP_EWMA_WEIGHT * (100 * gap_days - usual_gap))
        )

    tier = state.tier
    first_signal_as_of = state.first_signal_as_of_ms
    returned_day = state.returned_day
    last_seen = state.last_seen_ms
    if event.ts_ms > last_seen:
        if tier > TIER_NONE:
            emissions.append(_reactivated(state, event, config))
            if tier >= TIER_DORMANT:
                returned_day = day
            tier = TIER_NONE
            first_signal_as_of = 0
        last_seen = event.ts_ms

    ids = (*state.recent_ids, event.id_hash)[-ID_SLOTS:]
    updated = msgspec.structs.replace(
        state,
        first_seen_ms=min(state.first_seen_ms, event.ts_ms),
        last_seen_ms=last_seen,
        partition=event.partition if event.offset != NO_OFFSET else state.partition,
        offset=event.offset if event.offset != NO_OFFSET else state.offset,
        recent_ids=ids,
        newest_day=newest_day,
        day_counts=day_counts,
        active_days=state.active_days + (1 if first_of_day else 0),
        streak_days=streak,
        usual_gap_centidays=min(usual_gap, 0xFFFF),
        events_total=state.events_total + 1,
        tier=tier,
        first_signal_as_of_ms=first_signal_as_of,
        returned_day=returned_day,
        tenant=event.tenant if event.tenant is not None else state.tenant,
        segment=event.segment if event.segment is not None else state.segment,
    )
    return APPLIED, updated, emissions


def judge(
    state: UserState, user_id: str, clock_ms: int, config: ModelConfig
) -> tuple[UserState, list[Emission]]:
    """Emit every tier whose due time the clock has passed, in order, once per episode."""
    tiers, source = config.policy.resolve(state)
    emissions: list[Emission] = []
    while state.tier < TIER_CHURNED:
        threshold = tiers[state.tier]
        due = state.last_seen_ms + threshold
        if due > clock_ms:
            break
        tier = state.tier + 1
        emissions.append(_tier_emission(state, user_id, tier, due, threshold, source, config))
        state = msgspec.structs.replace(
            state, tier=tier, first_signal_as_of_ms=state.first_signal_as_of_ms or due
        )
    return state, emissions


def risk_at(state: UserState, at_ms: int, config: ModelConfig) -> float:
    day = config.day_ms
    return risk_not_active(
        state.active_days,
        (state.last_seen_ms - state.first_seen_ms) / day,
        (at_ms - state.last_seen_ms) / day,
        config.horizon_ms / day,
    )


def stage_at(state: UserState, clock_ms: int, config: ModelConfig) -> str:
    """The lifecycle stage as of ``clock_ms`` (tiers already judged)."""
    if state.tier > TIER_NONE:
        return STAGES[1 + state.tier]
    clock_day = clock_ms // config.day_ms
    if state.returned_day != NO_DAY and clock_day - state.returned_day < config.resurrected_days:
        return "resurrected"
    if clock_ms - state.first_seen_ms < config.new_days * config.day_ms:
        return "new"
    return "active"


def thresholds_for(state: UserState, config: ModelConfig) -> tuple[Tiers, str]:
    return config.policy.resolve(state)


def _reasons(state: UserState, inactive_ms: int, threshold_ms: int, day_ms: int) -> list[Reason]:
    inactive_days = round(inactive_ms / day_ms, 3)
    reasons = [Reason("inactive_days", inactive_days, round(threshold_ms / day_ms, 3))]
    if state.active_days >= 3 and state.usual_gap_centidays > 0:
        reasons.append(Reason("gap_vs_usual", inactive_days, state.usual_gap_centidays / 100))
    counts = counts_by_age(state, state.last_seen_ms // day_ms)
    recent_week = sum(counts[:7])
    earlier_weeks = sum(counts[7:DAY_WINDOW]) / 3
    if earlier_weeks > 0 and recent_week < earlier_weeks:
        reasons.append(Reason("frequency_drop", float(recent_week), round(earlier_weeks, 3)))
    if state.streak_days >= 3:
        reasons.append(Reason("streak_broken", float(state.streak_days), None))
    return reasons


def _tier_emission(
    state: UserState,
    user_id: str,
    tier: int,
    due_ms: int,
    threshold_ms: int,
    source: str,
    config: ModelConfig,
) -> Emission:
    inactive_ms = due_ms - state.last_seen_ms
    return Emission(
        kind=TIER_NAMES[tier],
        user_id=user_id,
        tenant=state.tenant,
        segment=state.segment,
        episode=state.last_seen_ms,
        as_of=due_ms,
        last_seen=state.last_seen_ms,
        inactive_ms=inactive_ms,
        threshold_ms=threshold_ms,
        threshold_source=source,
        risk=risk_at(state, due_ms, config),
        horizon_ms=config.horizon_ms,
        reasons=tuple(_reasons(state, inactive_ms, threshold_ms, config.day_ms)),
        group=group_of(user_id, config.holdout_salt, config.holdout_share),
    )


def _reactivated(state: UserState, event: ModelEvent, config: ModelConfig) -> Emission:
    tiers, source = config.policy.resolve(state)
    first_as_of = state.first_signal_as_of_ms
    gap_ms = event.ts_ms - state.last_seen_ms
    return Emission(
        kind=REACTIVATED,
        user_id=event.user_id,
        tenant=state.tenant,
        segment=state.segment,
        episode=state.last_seen_ms,
        as_of=event.ts_ms,
        last_seen=state.last_seen_ms,
        inactive_ms=gap_ms,
        threshold_ms=tiers[state.tier - 1],
        threshold_source=source,
        risk=risk_at(state, event.ts_ms, config),
        horizon_ms=config.horizon_ms,
        reasons=(Reason("returned_after_days", round(gap_ms / config.day_ms, 3), None),),
        group=group_of(event.user_id, config.holdout_salt, config.holdout_share),
        tier_reached=TIER_NAMES[state.tier],
        gap_ms=gap_ms,
        time_to_return_ms=event.ts_ms - first_as_of,
        late=event.ts_ms < first_as_of,
    )
