"""The clock's judgement of one user: when the user is next due, and the tiers and
stage changes the clock has passed (docs/MODEL.md)."""

from __future__ import annotations

import msgspec

from tables.activation import NOT_ACTIVATED_SIGNALLED, activation_due_ms
from tables.lifecycle import (
    STAGE_ACTIVE,
    STAGE_NEW,
    STAGE_NOT_ACTIVATED,
    STAGE_RESURRECTED,
    STAGES,
    projected_stage,
    stage_due_ms,
    stage_of_tier,
)
from tables.model import APPLIED, Emission, ModelConfig, Reason, Step, Transition
from tables.signals import not_activated_signal, stage_transition, tier_signal
from tables.state import TIER_CHURNED, TIER_NONE, UserState
from tables.thresholds import Tiers


def judge(
    state: UserState, user_id: str, clock_ms: int, config: ModelConfig
) -> tuple[UserState, list[Emission]]:
    """Emit every tier whose due time the clock has passed, in order, once per episode
    (a tier whose risk is below ``config.min_risk`` changes the stage, unsignalled)."""
    step = advance_user(state, user_id, clock_ms, config)
    return step.state, step.emissions


def advance_user(state: UserState, user_id: str, clock_ms: int, config: ModelConfig) -> Step:
    """Everything the clock has passed for this user: tiers and stage changes, in time order.

    On a tie a tier goes first, so a user who falls silent exactly when the
    ``new`` days end goes from new straight to at_risk. A tier whose risk (of
    the model in force) is below its ``config.min_risk`` moves the tier and the
    stage but is no signal; the episode's ``first_signal_as_of_ms`` is that of
    its first signal.
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
            emission = tier_signal(state, user_id, tier + 1, due_ms, (threshold, source), config)
            signalled = emission.risk >= config.min_risk[tier]  # below: the stage alone
            if signalled:
                emissions.append(emission)
            to_stage = stage_of_tier(tier + 1)
            if to_stage != state.stage:
                transitions.append(
                    stage_transition(
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
                first_signal_as_of_ms=state.first_signal_as_of_ms or (due_ms if signalled else 0),
            )
        elif due_ms == _activation_due_ms(state, config):
            emission = not_activated_signal(state, user_id, due_ms, config)
            emissions.append(emission)
            stage = STAGE_NOT_ACTIVATED if state.stage == STAGE_NEW else state.stage
            if stage != state.stage:
                transitions.append(
                    stage_transition(
                        state, user_id, STAGES[state.stage], stage, due_ms, emission.reasons, config
                    )
                )
            state = msgspec.structs.replace(
                state, stage=stage, growth_flags=state.growth_flags | NOT_ACTIVATED_SIGNALLED
            )
        else:  # the stage change time alone makes
            reasons = (Reason("active_days", float(state.active_days), None),)
            transitions.append(
                stage_transition(
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
    if policy.user_min_active_days or policy.overrides or policy.population:
        tiers = policy.resolve(state)[0]
    else:
        tiers = policy.defaults_ms  # what resolve gives with none of them, without the call
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
