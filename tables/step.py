"""One event applied to one user: the state it makes, the signals and the lifecycle
transitions it causes (a return from a tier, a decline, an activation)."""

from __future__ import annotations

import msgspec

from tables.activation import ACTIVATED, activates, stage_on_activation
from tables.activity import ACTIVE, scope_labels
from tables.decline import DECLINE_OPEN
from tables.fold import ONE_EVENT, fold_events, is_duplicate, new_state
from tables.intent import step_after_intent
from tables.lifecycle import STAGE_NEW, STAGES
from tables.model import APPLIED, PASSIVE, Emission, ModelConfig, ModelEvent, Reason, Step
from tables.returns import back_from_tier
from tables.signals import declining_signal, reactivated_signal, stage_transition
from tables.state import TIER_NONE, UserState


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
        return step_after_intent(state, event, kind, config)
    if state is None:
        created = new_state(event, config.day_ms)
        born = stage_transition(created, event.user_id, None, STAGE_NEW, event.ts_ms, (), config)
        step = Step(APPLIED, created, [], [born])
    else:
        duplicate = is_duplicate(state, event, config.dedup_ids)
        if duplicate is not None:
            return Step(duplicate, state, [], [])
        updated = fold_events(state, (event,), ONE_EVENT, 0, config)[0]
        if event.ts_ms > state.last_seen_ms and state.tier > TIER_NONE:
            back = reactivated_signal(state, event, config, state.first_signal_as_of_ms)
            step = back_from_tier(state, updated, event, back, config)
            if not state.first_signal_as_of_ms:  # an episode with no signal: no reactivated
                step = msgspec.structs.replace(step, emissions=[])
        else:
            step = Step(APPLIED, updated, [], [])
        if updated.growth_flags & DECLINE_OPEN and not state.growth_flags & DECLINE_OPEN:
            step.emissions.append(declining_signal(updated, event, config))
    if config.activation_types and activates(step.state, event.type, config.activation_types):
        return _activated(step, event, config)
    return step


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
            stage_transition(
                state, event.user_id, STAGES[state.stage], stage, event.ts_ms, reasons, config
            )
        )
    return Step(step.outcome, activated, step.emissions, step.transitions)
