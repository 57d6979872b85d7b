"""An event's arithmetic on a user's state: a new user, the duplicate rules, and
the fold of a run of one user's events into one state (docs/MODEL.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from tables.cadence import NEGATIVE_TYPES, update_negative_flags
from tables.decline import BASELINE_STEP, DECLINE_OPEN, judge_decline, next_baseline, recent_days
from tables.lifecycle import STAGE_NEW, STAGE_RESURRECTED
from tables.model import DUPLICATE_ID, DUPLICATE_OFFSET, ModelConfig, ModelEvent
from tables.state import ANONYMOUS, DAY_WINDOW, ID_SLOTS, NO_DAY, NO_OFFSET, TIER_NONE, UserState

GAP_EWMA_WEIGHT: Final = 0.3
_FIRST_DAY: Final = b"\x01" + bytes(DAY_WINDOW - 1)
_BYTE: Final = tuple(bytes((value,)) for value in range(256))  # one-byte strings, made once
_RING_OF_4: Final = ID_SLOTS == 4  # fold_events unpacks a full ring of 4 ids by hand
ONE_EVENT: Final = (0,)  # fold_events' positions of a run of one event
_NOTHING: Final[frozenset[str]] = frozenset()  # fold_events' stop types when not judging
_NO_STOP: Final = 1 << 62  # later than any instant: fold_events takes every event


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


def folds_judging(config: ModelConfig) -> bool:
    """Whether ``fold_events`` may judge runs under ``config``: no tenant or segment
    thresholds or activity classes (an event's tenant or segment would move them),
    no explicit list of active types (``ActivityPolicy.folds``), no population
    cadence (per tenant and segment too), and every at-risk
    threshold a user can get ends after an event's own clock (with the lateness,
    positive), so no folded event could trip the late-event rule by its tier."""
    policy = config.policy
    if (
        policy.overrides
        or policy.population
        or config.activation_types
        or config.activity.folds() is None
    ):
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
