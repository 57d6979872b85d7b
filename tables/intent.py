"""Events that are not activity, and churn intent (docs/MODEL.md, "Activity").

``tables.step.step_event`` hands here every event that is not an active
one, and every event of a user whose churn intent is pending:

- a passive event, an active one within ``INTENT_GRACE`` of the user's
  churn intent (the confirmation page, the last look around), and any
  non-active event of a user without state change nothing: outcome
  ``passive`` (counted in metrics, no user made);
- a negative or churn-intent event of a known user is applied without being
  activity: the id ring, the source offset, the event count, the labels,
  the anonymous flag and the negative-kind flags move; ``last_seen``, the
  day counts, the streak, the cadence, the tier and the stage do not;
- the user's first churn-intent event of an episode emits ``churn_intent``
  at once (``as_of`` = its ``ts``, ``episode`` = ``last_seen``) and opens
  the episode if no tier signal did; a later one in the same episode
  emits nothing;
- the first active event after the grace (and after ``last_seen``) is a
  return: ``reactivated`` with ``churn_intent_as_of``, the tier reset and its
  lifecycle change when the episode reached a tier, the intent cleared.
"""

from __future__ import annotations

import msgspec

from tables.activity import ACTIVE, CHURN_INTENT, PASSIVE
from tables.cadence import NEGATIVE_TYPES, WEEK_DAYS, recent_negative_kinds
from tables.decline import DECLINE_OPEN
from tables.fold import ONE_EVENT, fold_events, is_duplicate
from tables.model import APPLIED, Emission, ModelConfig, ModelEvent, Reason, Step
from tables.returns import back_from_tier
from tables.signals import emission, reactivated_signal
from tables.state import ANONYMOUS, ID_SLOTS, NO_OFFSET, UserState, counts_by_age

CHURN_INTENT_KIND = "churn_intent"


def step_after_intent(
    state: UserState | None, event: ModelEvent, kind: int, config: ModelConfig
) -> Step | None:
    """What an event that is not plain activity does (see the module docstring);
    ``None``: nothing (outcome ``passive``)."""
    if state is None or kind == PASSIVE:
        return None
    if kind == ACTIVE:  # a churn intent is pending
        if event.ts_ms < state.intent_ms + config.activity.intent_grace_ms:
            return None
        duplicate = is_duplicate(state, event, config.dedup_ids)
        if duplicate is not None:
            return Step(duplicate, state, [], [])
        if event.ts_ms <= state.last_seen_ms:  # never a return: counters only, intent kept
            cleared = msgspec.structs.replace(state, intent_ms=0)
            updated = fold_events(cleared, (event,), ONE_EVENT, 0, config)[0]
            kept = msgspec.structs.replace(updated, intent_ms=state.intent_ms)
            return Step(APPLIED, kept, [], [])
        return _return_after_intent(state, event, config)
    duplicate = is_duplicate(state, event, config.dedup_ids)
    if duplicate is not None:
        return Step(duplicate, state, [], [])
    noted = _noted(state, event, config.day_ms)
    if kind != CHURN_INTENT or state.intent_ms:
        return Step(APPLIED, noted, [], [])
    signal = _intent_signal(noted, event, config)
    opened = msgspec.structs.replace(
        noted,
        intent_ms=event.ts_ms,
        first_signal_as_of_ms=state.first_signal_as_of_ms or event.ts_ms,
    )
    return Step(APPLIED, opened, [signal], [])


def _noted(state: UserState, event: ModelEvent, day_ms: int) -> UserState:
    """A non-active event of a known user, applied without being activity."""
    ids = (*state.recent_ids, event.id_hash)[-ID_SLOTS:]
    flags = state.activity_flags
    if event.anonymous is not None:
        flags = flags | ANONYMOUS if event.anonymous else flags & ~ANONYMOUS
    partition, offset = state.partition, state.offset
    if event.offset != NO_OFFSET:
        partition, offset = event.partition, event.offset
    return msgspec.structs.replace(
        state,
        partition=partition,
        offset=offset,
        recent_ids=ids,
        events_total=state.events_total + 1,
        negative_flags=_negative_flags(
            state.negative_flags, state.last_seen_ms // day_ms, event.ts_ms // day_ms, event.type
        ),
        tenant=state.tenant if event.tenant is None else event.tenant,
        segment=state.segment if event.segment is None else event.segment,
        activity_flags=flags,
    )


def _negative_flags(flags: int, last_day: int, day: int, event_type: str) -> int:
    """The negative-kind flags after a non-active event on ``day``: a kind seen in a
    week after that of the newest active day counts in that week (the flags move
    by active days only)."""
    kind = NEGATIVE_TYPES.get(event_type)
    if kind is None:
        return flags
    newest_week = last_day // WEEK_DAYS
    week = day // WEEK_DAYS
    if week >= newest_week:
        return flags | 1 << kind
    if week == newest_week - 1:
        return flags | 1 << (kind + 4)
    return flags


def _intent_reason(event_type: str) -> Reason:
    """The intent's type as a reason: one code per default churn-intent type,
    ``intent_other`` for a type a configuration adds (a closed set of codes)."""
    if event_type == "subscription_cancelled":
        return Reason("intent_subscription_cancelled", 1.0, None)
    if event_type == "unsubscribe":
        return Reason("intent_unsubscribe", 1.0, None)
    return Reason("intent_other", 1.0, None)


def _intent_signal(state: UserState, event: ModelEvent, config: ModelConfig) -> Emission:
    """``churn_intent``: the intent's type and the user's recent activity as reasons."""
    day_ms = config.day_ms
    ts_ms = event.ts_ms
    inactive_ms = max(ts_ms - state.last_seen_ms, 0)
    tiers, source = config.policy.resolve(state)
    usual = state.usual_gap_centidays / 100 if state.usual_gap_centidays else None
    reasons = [
        _intent_reason(event.type),
        Reason("days_since_active", round(inactive_ms / day_ms, 3), usual),
        Reason("recent_active_days", float(_recent_active_days(state, ts_ms, day_ms)), None),
        Reason("active_days", float(state.active_days), None),
    ]
    reasons.extend(
        Reason(f"recent_{kind}", 1.0, None) for kind in recent_negative_kinds(state.negative_flags)
    )
    return emission(
        CHURN_INTENT_KIND,
        state,
        event.user_id,
        ts_ms,
        config,
        episode=state.last_seen_ms,
        inactive_ms=inactive_ms,
        threshold=(tiers[0], source),
        reasons=tuple(reasons),
        arm_by_reasons=False,
    )


def _recent_active_days(state: UserState, at_ms: int, day_ms: int) -> int:
    """Active days within the ``DAY_WINDOW`` days ending on ``at_ms``'s day."""
    return sum(1 for count in counts_by_age(state, at_ms // day_ms) if count)


def _return_after_intent(state: UserState, event: ModelEvent, config: ModelConfig) -> Step:
    """The first active event after the grace: ``reactivated`` after a churn intent."""
    cleared = msgspec.structs.replace(state, intent_ms=0, first_signal_as_of_ms=0)
    updated = fold_events(cleared, (event,), ONE_EVENT, 0, config)[0]
    # the return is not judged for a decline (tables.decline): its episode flag stays
    open_before = state.growth_flags & DECLINE_OPEN
    updated = msgspec.structs.replace(
        updated, growth_flags=(updated.growth_flags & ~DECLINE_OPEN) | open_before
    )
    tier = state.tier
    first_as_of = state.first_signal_as_of_ms or state.intent_ms
    back = reactivated_signal(state, event, config, first_as_of, state.intent_ms)
    if not tier:
        return Step(APPLIED, updated, [back], [])
    return back_from_tier(state, updated, event, back, config)
