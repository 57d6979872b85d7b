"""The engagement model: apply an event to a user's state, judge the state on the clock.

Pure functions over frozen state; time is always an argument. Besides the
signals (``Emission``) the model announces lifecycle stage changes
(``Transition``, see ``tables.lifecycle``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

from tables.activation import (
    ACTIVATED,
    NOT_ACTIVATED,
    NOT_ACTIVATED_SIGNALLED,
    SOURCE_ACTIVATION,
    activates,
    activation_due_ms,
    stage_back_unactivated,
    stage_on_activation,
)
from tables.activity import ACTIVE, DEFAULT_ACTIVITY, ActivityPolicy, scope_labels
from tables.cadence import NEGATIVE_TYPES, recent_negative_kinds, update_negative_flags
from tables.decline import (
    BASELINE_STEP,
    DECLINE_OPEN,
    DECLINING,
    RECENT_DAYS,
    baseline_rate,
    judge_decline,
    next_baseline,
    recent_days,
)
from tables.groups import arm_group, arm_of, group_of
from tables.learned_risk import LearnedRisk, features, learned_risk
from tables.lifecycle import (
    STAGE_ACTIVE,
    STAGE_NEW,
    STAGE_NOT_ACTIVATED,
    STAGE_RESURRECTED,
    projected_stage,
    stage_after_return,
    stage_due_ms,
    stage_of_tier,
)
from tables.lifecycle import STAGES as STAGES  # re-exported: stage names by code
from tables.risk import (
    DEFAULT_PARAMS,
    MAX_EXP,
    RATE_DISCOUNT,
    RiskParams,
    expected_active_days,
)
from tables.state import (
    ANONYMOUS,
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
PASSIVE: Final = "passive"  # an event that is not activity and changed no user (tables.intent)

REACTIVATED: Final = "reactivated"
DEFAULT_RISK_MODEL: Final = "mbg_nbd-default"
GAP_EWMA_WEIGHT: Final = 0.3
_FIRST_DAY: Final = b"\x01" + bytes(DAY_WINDOW - 1)
_BYTE: Final = tuple(bytes((value,)) for value in range(256))  # one-byte strings, made once
_RING_OF_4: Final = ID_SLOTS == 4  # fold_events unpacks a full ring of 4 ids by hand
_FIRST: Final = (0,)  # the positions of a run of one event
_NOTHING: Final[frozenset[str]] = frozenset()  # fold_events' stop types when not judging
_NO_STOP: Final = 1 << 62  # later than any instant: fold_events takes every event


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
    risk: RiskParams = DEFAULT_PARAMS
    decline_sensitivity: float = 0.0  # 0: no declining signal (tables.decline)
    activation_types: frozenset[str] = frozenset()  # empty: activation off
    activation_days: int = 7  # the activation deadline, in model days
    experiment_id: str = ""  # experiment arms per reason code (tables.groups) when set
    experiment_reasons: tuple[str, ...] = ()
    activity: ActivityPolicy = DEFAULT_ACTIVITY
    # a learned score (``tables.learned_risk``) replaces MBG/NBD when set
    learned: LearnedRisk | None = None
    risk_model: str = DEFAULT_RISK_MODEL  # the version each signal names


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
    anonymous: bool | None = None


# gc=False on these frozen structs: they hold only immutable values and other
# records, never themselves, so no cycle can form; the collector skips them.
class Reason(msgspec.Struct, frozen=True, gc=False):
    code: str
    value: float
    baseline: float | None = None


class Emission(msgspec.Struct, frozen=True, gc=False):
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
    arm: str | None = None
    churn_intent_as_of: int | None = None
    risk_model: str = DEFAULT_RISK_MODEL

    @property
    def signal_id(self) -> str:
        return f"{self.user_id}:{self.episode}:{self.kind}"


class Transition(msgspec.Struct, frozen=True, gc=False):
    """A lifecycle stage change as the model decides it; the shell adds the schema."""

    user_id: str
    tenant: str
    segment: str
    from_stage: str | None
    to_stage: str
    as_of: int
    episode: int
    reasons: tuple[Reason, ...]
    group: str

    @property
    def transition_id(self) -> str:
        return f"{self.user_id}:{self.as_of}:{self.to_stage}"


class Step(msgspec.Struct, frozen=True, gc=False):
    """What one event or one clock advance did to one user."""

    outcome: str
    state: UserState
    emissions: list[Emission]
    transitions: list[Transition]


def new_state(event: ModelEvent, day_ms: int) -> UserState:
    day = event.ts_ms // day_ms
    return UserState(
        first_seen_ms=event.ts_ms,
        last_seen_ms=event.ts_ms,
        partition=event.partition,
        offset=event.offset,
        recent_ids=(event.id_hash,),
        newest_day=day,
        day_counts=_FIRST_DAY,
        active_days=1,
        streak_days=1,
        events_total=1,
        stage=STAGE_NEW,
        negative_flags=update_negative_flags(0, day, day, event.type),
        tenant=event.tenant or "",
        segment=event.segment or "",
        baseline=BASELINE_STEP,
        activity_flags=ANONYMOUS if event.anonymous else 0,
    )


def is_duplicate(state: UserState, event: ModelEvent, dedup_ids: int) -> str | None:
    """Why this event must be skipped, or ``None``; rules of docs/CONTRACTS.md."""
    if (
        event.offset != NO_OFFSET
        and event.partition == state.partition
        and event.offset <= state.offset
    ):
        return DUPLICATE_OFFSET
    if dedup_ids >= ID_SLOTS:  # the default: every kept id (no slice per event)
        if event.id_hash in state.recent_ids:
            return DUPLICATE_ID
    elif dedup_ids and event.id_hash in state.recent_ids[-dedup_ids:]:
        return DUPLICATE_ID
    return None


def _bump_day(newest: int, counts: bytes, day: int) -> tuple[int, bytes, bool]:
    """New ``(newest_day, day_counts, first_event_of_that_day)`` after one event on ``day``."""
    if day == newest:  # the common case: another event on the newest day
        today = counts[0]
        if today == 255:
            return newest, counts, False
        return newest, _BYTE[today + 1] + counts[1:], today == 0
    if newest == NO_DAY or day - newest >= DAY_WINDOW:
        return day, _FIRST_DAY, True
    if day > newest:
        shift = day - newest
        return day, b"\x01" + bytes(shift - 1) + counts[: DAY_WINDOW - shift], True
    age = newest - day
    if age >= DAY_WINDOW:
        return newest, counts, False  # too old to know; counted in total
    count = counts[age]
    if count == 255:
        return newest, counts, False
    return newest, counts[:age] + _BYTE[count + 1] + counts[age + 1 :], count == 0


def apply_event(
    state: UserState | None, event: ModelEvent, config: ModelConfig
) -> tuple[str, UserState | None, list[Emission]]:
    """Apply one event: ``(outcome, new state, emissions)``; duplicates and passive
    events change nothing."""
    step = step_event(state, event, config)
    if step is None:
        return PASSIVE, state, []
    return step.outcome, step.state, step.emissions


def step_event(state: UserState | None, event: ModelEvent, config: ModelConfig) -> Step | None:
    """Apply one event, with the lifecycle transitions it causes; ``None`` for an event
    that is not activity and changes nothing (outcome ``passive``)."""
    activity = config.activity
    types = activity.defaults
    if activity.overrides:
        types = activity.types_for(*scope_labels(state, event.tenant, event.segment))
    kind = types.classify(event.type)
    if kind != ACTIVE or (state is not None and state.intent_ms):
        # imported here: tables.intent builds on this module
        from tables.intent import step_after_intent

        return step_after_intent(state, event, kind, config)
    if state is None:
        created = new_state(event, config.day_ms)
        born = _transition(created, event.user_id, None, STAGE_NEW, event.ts_ms, (), config)
        step = Step(APPLIED, created, [], [born])
    else:
        duplicate = is_duplicate(state, event, config.dedup_ids)
        if duplicate is not None:
            return Step(duplicate, state, [], [])
        updated = fold_events(state, (event,), _FIRST, 0, config)[0]
        if event.ts_ms > state.last_seen_ms and state.tier > TIER_NONE:
            step = _back_from_tier(state, updated, event, event.ts_ms // config.day_ms, config)
        else:
            step = Step(APPLIED, updated, [], [])
        if updated.growth_flags & DECLINE_OPEN and not state.growth_flags & DECLINE_OPEN:
            step.emissions.append(_declining(updated, event, config))
    if config.activation_types and activates(step.state, event.type, config.activation_types):
        return _activated(step, event, config)
    return step


def folds_judging(config: ModelConfig) -> bool:
    """Whether ``fold_events`` may judge runs under ``config``: no tenant or segment
    thresholds or activity classes (an event's tenant or segment would move them),
    no explicit list of active types (``ActivityPolicy.folds``), and every at-risk
    threshold a user can get ends after an event's own clock (with the lateness,
    positive), so no folded event could trip the late-event rule by its tier."""
    policy = config.policy
    if policy.overrides or config.activation_types or config.activity.folds() is None:
        return False  # activation: an activation type changes the stage; activity classes
    lowest_ms = policy.defaults_ms[0]
    if policy.user_min_active_days:
        lowest_ms = min(lowest_ms, policy.min_ms, policy.max_ms)
    return lowest_ms + config.lateness_ms > 0


def fold_events(
    state: UserState,
    events: Sequence[ModelEvent],
    positions: Sequence[int],
    start: int,
    config: ModelConfig,
    judging: bool = False,
) -> tuple[UserState, int, int]:
    """Apply ``events[positions[start]]``, ``events[positions[start + 1]]``, ... in
    order: ``(state after them, index in positions of the first not taken, applied)``.

    The arithmetic of an applied event, for one event (``step_event``) and for a
    run of one user's events (``tables.history``), which keeps the figures in
    local variables and makes one ``UserState`` at the end. Duplicates are
    passed over, unapplied. Tiers and stages are not judged here: ``judging``
    (the state has no tier, and ``folds_judging(config)``) stops the run before
    the first event at whose clock, its ``ts_ms`` less the lateness, the state
    has a tier or stage change due, or would have once the event is applied:
    the caller judges it; a judged run also stops before an event that would open
    a decline episode (``tables.decline``: its signal is the caller's), before an
    event that is not activity (``ActivityPolicy.folds``), and takes none while a
    churn intent is pending (``tables.intent``). Otherwise every event is taken."""
    stop_types = _NOTHING
    if judging:
        folds = config.activity.folds()
        if state.intent_ms or folds is None:
            return state, start, 0
        stop_types = folds
    first_seen = state.first_seen_ms
    last_seen = state.last_seen_ms
    day_ms = config.day_ms
    last_day = last_seen // day_ms
    partition = state.partition
    offset = state.offset
    ids = state.recent_ids
    ring_full = _RING_OF_4 and len(ids) == ID_SLOTS
    newest_day = state.newest_day
    counts = state.day_counts
    today = counts[0]  # the newest day's count, written back into counts when it moves
    active_days = state.active_days
    streak = state.streak_days
    usual_gap = state.usual_gap_centidays
    flags = state.negative_flags
    tenant = state.tenant
    segment = state.segment
    activity_flags = state.activity_flags
    stage = state.stage
    baseline = state.baseline
    growth = state.growth_flags
    # the decline rule runs for a user without a tier (decline.judge_decline)
    sensitivity = config.decline_sensitivity if state.tier == TIER_NONE else 0.0
    dedup_ids = config.dedup_ids
    every_id = dedup_ids >= ID_SLOTS
    negative_types = NEGATIVE_TYPES
    one_byte = _BYTE
    no_offset = NO_OFFSET
    # the stop rule: an event at or after last_seen + tier_stop_ms, or at or after
    # stage_stop_ms, has something due at its clock (ts - lateness), before or
    # after it is applied
    tier_stop_ms = stage_stop_ms = _NO_STOP
    new_stop_ms = 0  # while new: the stage's end, less first_seen, plus the lateness
    policy = config.policy
    # per-user thresholds (resolve's first rule): active days and the gap move them
    user_min_days = policy.user_min_active_days if judging else 0
    lateness_ms = config.lateness_ms
    if judging:
        tier_stop_ms = policy.defaults_ms[0] + lateness_ms
        if user_min_days and active_days >= user_min_days and usual_gap > 0:
            tier_stop_ms = policy.user_tiers(usual_gap)[0] + lateness_ms
        if stage == STAGE_NEW:
            new_stop_ms = config.new_days * day_ms + lateness_ms
            if new_stop_ms <= 0:  # an event earlier than first_seen would be due at once
                return state, start, 0
            stage_stop_ms = first_seen + new_stop_ms
        elif stage == STAGE_RESURRECTED and state.returned_day != NO_DAY:
            stage_stop_ms = (state.returned_day + config.resurrected_days) * day_ms + lateness_ms
    judged_days = active_days
    judged_gap = usual_gap
    applied = 0
    index = start
    count = len(positions)
    while index < count:
        event = events[positions[index]]
        ts_ms = event.ts_ms
        if ts_ms >= last_seen + tier_stop_ms or ts_ms >= stage_stop_ms:
            break
        kind = event.type
        if kind in stop_types:
            break
        index += 1
        event_offset = event.offset
        if event_offset != no_offset and event.partition == partition and event_offset <= offset:
            continue  # is_duplicate's rules, on the running figures
        id_hash = event.id_hash
        if every_id:
            if id_hash in ids:
                continue
        elif dedup_ids and id_hash in ids[-dedup_ids:]:
            continue
        day = ts_ms // day_ms
        if (
            judging
            and sensitivity
            and day > last_day
            and not growth & DECLINE_OPEN
            and judge_decline(
                False,
                1 + recent_days(counts, day - newest_day),
                next_baseline(baseline, day - last_day),
                day - first_seen // day_ms + 1,
                sensitivity,
            )
        ):
            index -= 1  # this event opens a decline episode: the caller emits it
            break
        applied += 1
        if day == newest_day and today < 255:  # another event on the newest day
            if today == 0:
                active_days += 1
            today += 1
        else:
            counts = one_byte[today] + counts[1:]
            newest_day, counts, first_of_day = _bump_day(newest_day, counts, day)
            today = counts[0]
            if first_of_day:
                active_days += 1
        if ring_full:  # the full ring: one tuple made, no slices
            _oldest, second, third, newest = ids
            ids = (second, third, newest, id_hash)
        else:
            ids = (*ids, id_hash)[-ID_SLOTS:]
            ring_full = _RING_OF_4 and len(ids) == ID_SLOTS
        if day > last_day:
            gap_days = day - last_day
            streak = streak + 1 if gap_days == 1 else 1
            usual_gap = (
                100 * gap_days
                if usual_gap == 0
                else round(usual_gap + GAP_EWMA_WEIGHT * (100 * gap_days - usual_gap))
            )
            if usual_gap > 0xFFFF:
                usual_gap = 0xFFFF
            flags = update_negative_flags(flags, last_day, day, kind)
            baseline = next_baseline(baseline, gap_days)
            if sensitivity:
                opened = judge_decline(
                    bool(growth & DECLINE_OPEN),
                    recent_days(counts),
                    baseline,
                    day - first_seen // day_ms + 1,
                    sensitivity,
                )
                growth = growth | DECLINE_OPEN if opened else growth & ~DECLINE_OPEN
        elif kind in negative_types:
            flags = update_negative_flags(flags, last_day, day, kind)
        if ts_ms > last_seen:
            last_seen = ts_ms
            last_day = day
        if ts_ms < first_seen:
            first_seen = ts_ms
            if new_stop_ms:
                stage_stop_ms = first_seen + new_stop_ms
        if user_min_days and (active_days != judged_days or usual_gap != judged_gap):
            judged_days = active_days
            judged_gap = usual_gap
            at_risk_ms = (
                policy.user_tiers(usual_gap)[0]
                if active_days >= user_min_days and usual_gap > 0
                else policy.defaults_ms[0]
            )
            tier_stop_ms = at_risk_ms + lateness_ms
        if event_offset != no_offset:
            partition = event.partition
            offset = event_offset
        if event.tenant is not None:
            tenant = event.tenant
        if event.segment is not None:
            segment = event.segment
        anonymous = event.anonymous
        if anonymous is not None:
            activity_flags = (
                activity_flags | ANONYMOUS if anonymous else activity_flags & ~ANONYMOUS
            )
    if not applied:
        return state, index, 0
    if today != counts[0]:
        counts = one_byte[today] + counts[1:]
    # positional: the fields in UserState's declared order (a test pins the order)
    updated = UserState(
        first_seen,
        last_seen,
        partition,
        offset,
        ids,
        newest_day,
        counts,
        active_days,
        streak,
        usual_gap,
        state.events_total + applied,
        state.tier,
        stage,
        state.first_signal_as_of_ms,
        state.returned_day,
        flags,
        tenant,
        segment,
        baseline,
        growth,
        state.intent_ms,
        activity_flags,
    )
    return updated, index, applied


def _back_from_tier(
    state: UserState, updated: UserState, event: ModelEvent, day: int, config: ModelConfig
) -> Step:
    """A user with a tier is seen again: ``reactivated``, its stage change, the tier reset."""
    tier = state.tier
    back = _reactivated(state, event, config)
    stage = stage_after_return(tier)
    if config.activation_types:
        stage = stage_back_unactivated(state, stage)
    moved = _transition(
        state, event.user_id, STAGES[stage_of_tier(tier)], stage, event.ts_ms, back.reasons, config
    )
    returned = msgspec.structs.replace(
        updated,
        tier=TIER_NONE,
        stage=stage,
        first_signal_as_of_ms=0,
        returned_day=day if tier >= TIER_DORMANT else state.returned_day,
    )
    return Step(APPLIED, returned, [back], [moved])


def judge(
    state: UserState, user_id: str, clock_ms: int, config: ModelConfig
) -> tuple[UserState, list[Emission]]:
    """Emit every tier whose due time the clock has passed, in order, once per episode."""
    step = advance_user(state, user_id, clock_ms, config)
    return step.state, step.emissions


def advance_user(state: UserState, user_id: str, clock_ms: int, config: ModelConfig) -> Step:
    """Everything the clock has passed for this user: tiers and stage changes, in time order.

    On a tie a tier goes first, so a user who falls silent exactly when the
    ``new`` days end goes from new straight to at_risk.
    """
    tiers, source = config.policy.resolve(state)
    withheld = config.activity.tiers_withheld(state)
    emissions: list[Emission] = []
    transitions: list[Transition] = []
    while True:
        due_ms = next_change_ms(state, config)
        if due_ms is None or due_ms > clock_ms:
            return Step(APPLIED, state, emissions, transitions)
        tier = state.tier
        if tier < TIER_CHURNED and not withheld and state.last_seen_ms + tiers[tier] == due_ms:
            threshold = tiers[tier]
            emission = _tier_emission(state, user_id, tier + 1, due_ms, threshold, source, config)
            emissions.append(emission)
            to_stage = stage_of_tier(tier + 1)
            if to_stage != state.stage:
                transitions.append(
                    _transition(
                        state,
                        user_id,
                        STAGES[state.stage],
                        to_stage,
                        due_ms,
                        emission.reasons,
                        config,
                    )
                )
            state = msgspec.structs.replace(
                state,
                tier=tier + 1,
                stage=to_stage,
                first_signal_as_of_ms=state.first_signal_as_of_ms or due_ms,
            )
        elif due_ms == _activation_due_ms(state, config):
            emission = _not_activated(state, user_id, due_ms, config)
            emissions.append(emission)
            stage = STAGE_NOT_ACTIVATED if state.stage == STAGE_NEW else state.stage
            if stage != state.stage:
                transitions.append(
                    _transition(
                        state, user_id, STAGES[state.stage], stage, due_ms, emission.reasons, config
                    )
                )
            state = msgspec.structs.replace(
                state, stage=stage, growth_flags=state.growth_flags | NOT_ACTIVATED_SIGNALLED
            )
        else:  # the stage change time alone makes
            reasons = (Reason("active_days", float(state.active_days), None),)
            transitions.append(
                _transition(
                    state, user_id, STAGES[state.stage], STAGE_ACTIVE, due_ms, reasons, config
                )
            )
            state = msgspec.structs.replace(state, stage=STAGE_ACTIVE)


def next_change_ms(state: UserState, config: ModelConfig) -> int | None:
    """When the clock next changes this user: the next tier or stage change due, the
    tier on a tie (``None``: only an event can). The one definition of a user's due
    time: ``advance_user`` judges by it, the engine's due index and the
    user-by-user history schedule by it."""
    if config.activation_types:
        return _earliest(_next_change_ms(state, config), _activation_due_ms(state, config))
    return _next_change_ms(state, config)


def _earliest(first: int | None, second: int | None) -> int | None:
    if first is None:
        return second
    return first if second is None or first <= second else second


def _activation_due_ms(state: UserState, config: ModelConfig) -> int | None:
    return activation_due_ms(
        state, bool(config.activation_types), config.activation_days, config.day_ms
    )


def _next_change_ms(state: UserState, config: ModelConfig) -> int | None:
    """The next tier or time-made stage change (activation aside)."""
    tier = state.tier
    if tier >= TIER_CHURNED:
        return None  # and no stage change either: only an event can
    policy = config.policy
    if policy.user_min_active_days or policy.overrides:
        tiers = policy.resolve(state)[0]
    else:
        tiers = policy.defaults_ms  # what resolve gives without overrides, without the call
    tier_due: int | None = state.last_seen_ms + tiers[tier]
    activity = config.activity
    if (
        state.activity_flags or activity.defaults.tier_min_active_days or activity.overrides
    ) and activity.tiers_withheld(state):
        tier_due = None  # anonymous, or too few active days: only the stage can change
    if tier > TIER_NONE:
        return tier_due
    stage = state.stage
    if stage == STAGE_NEW:  # lifecycle.new_ends_ms, inlined: the hot path
        if config.activation_types:
            return tier_due  # new ends by activating (tables.activation)
        stage_due = state.first_seen_ms + config.new_days * config.day_ms
    elif stage == STAGE_RESURRECTED:
        resurrected = stage_due_ms(state, config.new_days, config.resurrected_days, config.day_ms)
        if resurrected is None:
            return tier_due
        stage_due = resurrected
    else:
        return tier_due  # time alone changes the stage only for new and resurrected
    return tier_due if tier_due is not None and tier_due <= stage_due else stage_due


def risk_at(state: UserState, at_ms: int, config: ModelConfig) -> float:
    """P(no active day within the horizon) as of ``at_ms``, rounded to 6 decimals
    (see ``tables.risk``).

    ``risk_not_active`` with the state's figures, written out in one body: it
    runs for every status record and Redis write (two per changed user), and
    the composed form's five calls took an eighth of its time (2.3 -> 2.0 µs
    per call on the bench's states). The operations are the same, in the same
    order, so the result is the same float (``tests/unit/test_risk.py``
    compares them). With a learned model in the config, its score instead: the
    learned model's features (``tables.learned_risk``) include this MBG/NBD risk
    under the parameters and horizon it was fitted with."""
    learned = config.learned
    if learned is not None:
        mbg = mbg_nbd_risk(state, at_ms, learned.mbg, learned.day_ms, learned.horizon_ms)
        return learned_risk(learned, state, at_ms, mbg)
    return mbg_nbd_risk(state, at_ms, config.risk, config.day_ms, config.horizon_ms)


def learned_features(state: UserState, at_ms: int, learned: LearnedRisk) -> list[float]:
    """The features the learned model scores (``engagement fit`` learns from these)."""
    mbg = mbg_nbd_risk(state, at_ms, learned.mbg, learned.day_ms, learned.horizon_ms)
    return features(state, at_ms, learned.day_ms, learned.horizon_ms, mbg)


def mbg_nbd_risk(
    state: UserState, at_ms: int, params: RiskParams, day: int, horizon_ms: int
) -> float:
    """The MBG/NBD risk with the discounted rate (``tables.risk``), rounded to 6 decimals."""
    first_ms = state.first_seen_ms
    last_seen_ms = state.last_seen_ms
    at_ms = at_ms if at_ms > last_seen_ms else last_seen_ms
    active_days = state.active_days
    last_day_age = (last_seen_ms - first_ms) / day
    age_days = (at_ms - first_ms) / day
    horizon_days = horizon_ms / day
    # risk_not_active: repeat days; P(alive) from log_odds_dropped
    repeat = active_days - 1 if active_days > 1 else 0
    last = last_day_age if last_day_age > 0.0 else 0.0
    age = age_days if age_days > last else last
    r = params.r
    alpha = params.alpha
    log_odds = (
        math.log(params.a)
        - math.log(params.b + repeat)
        + (r + repeat) * (math.log(alpha + age) - math.log(alpha + last))
    )
    alive = 1.0 / (1.0 + math.exp(log_odds if log_odds < MAX_EXP else MAX_EXP))
    # rate_evidence: days and exposure before the window discounted
    exposed = age_days if age_days > 0.0 else 0.0
    recent = recent_repeat_days(state, at_ms, day)
    recent = recent if recent < repeat else repeat
    recent = recent if recent > 0 else 0
    window = exposed if exposed < DAY_WINDOW else DAY_WINDOW
    rate_x = recent + RATE_DISCOUNT * (repeat - recent)
    rate_age = window + RATE_DISCOUNT * (exposed - window)
    # p_quiet_if_alive
    x = rate_x if rate_x > 0 else 0.0
    rate_age = rate_age if rate_age > 0.0 else 0.0
    horizon = horizon_days if horizon_days > 0.0 else 0.0
    quiet = math.exp((r + x) * (math.log(alpha + rate_age) - math.log(alpha + rate_age + horizon)))
    risk = 1.0 - alive * (1.0 - quiet)
    return round(1.0 if risk > 1.0 else risk if risk > 0.0 else 0.0, 6)


def recent_repeat_days(state: UserState, at_ms: int, day_ms: int) -> int:
    """Active days within the ``DAY_WINDOW`` days ending on ``at_ms``'s day, the first
    active day not counted (a repeat day is one after the first)."""
    now_day = at_ms // day_ms
    window = DAY_WINDOW - (now_day - state.newest_day)
    if state.newest_day == NO_DAY or window <= 0:
        return 0
    counts = state.day_counts[:window]
    days = len(counts) - counts.count(0)
    if state.first_seen_ms // day_ms > now_day - DAY_WINDOW:
        days -= 1
    return days if days > 0 else 0


def stage_at(state: UserState, clock_ms: int, config: ModelConfig) -> str:
    """The lifecycle stage as of ``clock_ms`` (tiers already judged)."""
    if config.activation_types and state.stage == STAGE_NEW and state.tier == TIER_NONE:
        due_ms = _activation_due_ms(state, config)
        return STAGES[
            STAGE_NOT_ACTIVATED if due_ms is not None and clock_ms >= due_ms else STAGE_NEW
        ]
    return STAGES[
        projected_stage(state, clock_ms, config.new_days, config.resurrected_days, config.day_ms)
    ]


def thresholds_for(state: UserState, config: ModelConfig) -> tuple[Tiers, str]:
    return config.policy.resolve(state)


def _reasons(
    state: UserState, inactive_ms: int, threshold_ms: int, config: ModelConfig
) -> list[Reason]:
    """Why this user looks inactive: codes with values and the user's own baselines."""
    day_ms = config.day_ms
    inactive_days = round(inactive_ms / day_ms, 3)
    reasons = [Reason("inactive_days", inactive_days, round(threshold_ms / day_ms, 3))]
    if state.active_days >= 3 and state.usual_gap_centidays > 0:
        reasons.append(Reason("gap_vs_usual", inactive_days, state.usual_gap_centidays / 100))
    counts = counts_by_age(state, state.last_seen_ms // day_ms)
    recent_week = sum(counts[:7])
    earlier_weeks = sum(counts[7:DAY_WINDOW]) / 3
    if earlier_weeks > 0 and recent_week < earlier_weeks:
        reasons.append(Reason("frequency_drop", float(recent_week), round(earlier_weeks, 3)))
    active_recent = sum(1 for count in counts[:7] if count)
    active_earlier = sum(1 for count in counts[7:DAY_WINDOW] if count) / 3
    if active_earlier > 0 and active_recent < active_earlier:
        reasons.append(Reason("active_days_drop", float(active_recent), round(active_earlier, 3)))
    if state.streak_days >= 3:
        reasons.append(Reason("streak_broken", float(state.streak_days), None))
    for kind in recent_negative_kinds(state.negative_flags):
        reasons.append(Reason(f"recent_{kind}", 1.0, None))
    if state.active_days == 1:
        reasons.append(Reason("single_visit", 1.0, None))
    age_days = (state.last_seen_ms + inactive_ms - state.first_seen_ms) / day_ms
    expected = expected_active_days(config.risk, state.active_days, age_days) * inactive_days
    reasons.append(Reason("expected_active_days", round(expected, 3), None))
    return reasons


def signal_group(
    user_id: str, state: UserState, config: ModelConfig, reasons: Iterable[Reason] | None = None
) -> tuple[str, str | None]:
    """``(group, arm)`` of the user's signals in the episode ``state`` is in (or would
    begin): the arm (``None`` without an experiment) follows the episode's reason
    codes, which the silence does not change (tables.groups)."""
    if not config.experiment_id:
        return group_of(user_id, config.holdout_salt, config.holdout_share), None
    if reasons is None:
        reasons = _reasons(state, 0, 0, config)
    arm = arm_of((reason.code for reason in reasons), config.experiment_reasons)
    group = arm_group(user_id, config.holdout_salt, config.experiment_id, arm, config.holdout_share)
    return group, arm


def _transition(
    state: UserState,
    user_id: str,
    from_stage: str | None,
    to_stage: int,
    as_of_ms: int,
    reasons: tuple[Reason, ...],
    config: ModelConfig,
) -> Transition:
    return Transition(
        user_id=user_id,
        tenant=state.tenant,
        segment=state.segment,
        from_stage=from_stage,
        to_stage=STAGES[to_stage],
        as_of=as_of_ms,
        episode=state.last_seen_ms,
        reasons=reasons,
        group=group_of(user_id, config.holdout_salt, config.holdout_share),
    )


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
    reasons = tuple(_reasons(state, inactive_ms, threshold_ms, config))
    group, arm = signal_group(user_id, state, config, reasons)
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
        reasons=reasons,
        group=group,
        arm=arm,
        risk_model=config.risk_model,
    )


def _reactivated(state: UserState, event: ModelEvent, config: ModelConfig) -> Emission:
    tiers, source = config.policy.resolve(state)
    first_as_of = state.first_signal_as_of_ms
    gap_ms = event.ts_ms - state.last_seen_ms
    group, arm = signal_group(event.user_id, state, config)
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
        group=group,
        tier_reached=TIER_NAMES[state.tier],
        gap_ms=gap_ms,
        time_to_return_ms=event.ts_ms - first_as_of,
        late=event.ts_ms < first_as_of,
        arm=arm,
        risk_model=config.risk_model,
    )


def _declining(state: UserState, event: ModelEvent, config: ModelConfig) -> Emission:
    """``declining``: the recent active days against the user's own baseline
    (``tables.decline``); its episode is the instant it was detected."""
    day_ms = config.day_ms
    tiers, source = config.policy.resolve(state)
    recent = recent_days(state.day_counts)
    rate = baseline_rate(
        state.baseline, state.last_seen_ms // day_ms - state.first_seen_ms // day_ms + 1
    )
    reasons = (
        Reason("recent_active_days", float(recent), round(RECENT_DAYS * rate, 3)),
        Reason("active_day_rate", round(recent / RECENT_DAYS, 3), round(rate, 3)),
        *(
            Reason(f"recent_{kind}", 1.0, None)
            for kind in recent_negative_kinds(state.negative_flags)
        ),
    )
    group, arm = signal_group(event.user_id, state, config, reasons)
    return Emission(
        kind=DECLINING,
        user_id=event.user_id,
        tenant=state.tenant,
        segment=state.segment,
        episode=event.ts_ms,
        as_of=event.ts_ms,
        last_seen=state.last_seen_ms,
        inactive_ms=0,
        threshold_ms=tiers[0],
        threshold_source=source,
        risk=risk_at(state, event.ts_ms, config),
        horizon_ms=config.horizon_ms,
        reasons=reasons,
        group=group,
        arm=arm,
        risk_model=config.risk_model,
    )


def _activated(step: Step, event: ModelEvent, config: ModelConfig) -> Step:
    """An event of an activation type: the flag, and new/not_activated → active."""
    state = step.state
    stage = stage_on_activation(state.stage) if state.tier == TIER_NONE else state.stage
    activated = msgspec.structs.replace(
        state, stage=stage, growth_flags=state.growth_flags | ACTIVATED
    )
    if stage != state.stage:
        days = round((event.ts_ms - state.first_seen_ms) / config.day_ms, 3)
        reasons = (Reason("activated_after_days", days, None),)
        step.transitions.append(
            _transition(
                state, event.user_id, STAGES[state.stage], stage, event.ts_ms, reasons, config
            )
        )
    return Step(step.outcome, activated, step.emissions, step.transitions)


def _not_activated(state: UserState, user_id: str, due_ms: int, config: ModelConfig) -> Emission:
    """``not_activated``: the deadline passed without an activation event; one per user
    (its episode is the first seen)."""
    deadline_ms = config.activation_days * config.day_ms
    reasons = (
        Reason("active_days", float(state.active_days), None),
        Reason("days_since_first_seen", round(deadline_ms / config.day_ms, 3), None),
    )
    group, arm = signal_group(user_id, state, config, reasons)
    return Emission(
        kind=NOT_ACTIVATED,
        user_id=user_id,
        tenant=state.tenant,
        segment=state.segment,
        episode=state.first_seen_ms,
        as_of=due_ms,
        last_seen=state.last_seen_ms,
        inactive_ms=max(0, due_ms - state.last_seen_ms),
        threshold_ms=deadline_ms,
        threshold_source=SOURCE_ACTIVATION,
        risk=risk_at(state, due_ms, config),
        horizon_ms=config.horizon_ms,
        reasons=reasons,
        group=group,
        arm=arm,
        risk_model=config.risk_model,
    )
