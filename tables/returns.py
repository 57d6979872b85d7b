"""A user seen again after an episode that reached a tier: the stage the return
leads to, its lifecycle transition, and the tier reset (docs/MODEL.md)."""

from __future__ import annotations

import msgspec

from tables.activation import stage_back_unactivated
from tables.lifecycle import STAGES, stage_after_return, stage_of_tier
from tables.model import APPLIED, Emission, ModelConfig, ModelEvent, Step
from tables.signals import stage_transition
from tables.state import TIER_DORMANT, TIER_NONE, UserState


def back_from_tier(
    state: UserState, updated: UserState, event: ModelEvent, back: Emission, config: ModelConfig
) -> Step:
    """``state`` (with a tier) is seen again by ``event``, which made ``updated`` and
    the ``reactivated`` signal ``back``: the stage change and the tier reset."""
    tier = state.tier
    stage = stage_after_return(tier)
    if config.activation_types:
        stage = stage_back_unactivated(state, stage)
    moved = stage_transition(
        state, event.user_id, STAGES[stage_of_tier(tier)], stage, event.ts_ms, back.reasons, config
    )
    day = event.ts_ms // config.day_ms
    returned = msgspec.structs.replace(
        updated,
        tier=TIER_NONE,
        stage=stage,
        first_signal_as_of_ms=0,
        returned_day=day if tier >= TIER_DORMANT else state.returned_day,
    )
    return Step(APPLIED, returned, [back], [moved])
