"""What readers see of one user's state: the Redis hash and the HTTP answer.

One derivation for both serving paths, from the packed state and the
partition's event-time clock, through the model's own functions (stage,
risk, thresholds), so Redis and ``GET /users/{id}`` always agree.
"""

from __future__ import annotations

from typing import Final

from tables.judgement import stage_at, thresholds_for
from tables.model import ModelConfig
from tables.signals import signal_group
from tables.state import TIER_CHURNED, TIER_NAMES, UserState
from tables.user_risk import risk_at

NO_TIER: Final = "none"
AT_RISK_STAGE: Final = "at_risk"

UserFields = dict[str, str | int | float]


def mirror_fields(user_id: str, state: UserState, clock_ms: int, config: ModelConfig) -> UserFields:
    """The fields of the user's Redis hash, as of ``clock_ms`` (never before ``last_seen``).

    A deliberately short list (each field costs on every write); every field
    is always present, so writing the whole mapping replaces the previous one
    exactly (idempotent, no stale fields).
    """
    at_ms = max(clock_ms, state.last_seen_ms)
    return {
        "stage": stage_at(state, at_ms, config),
        "tier": TIER_NAMES[state.tier] or NO_TIER,
        "risk": risk_at(state, at_ms, config),  # already rounded to 6 decimals
        "as_of": at_ms,
        "last_seen": state.last_seen_ms,
        "episode": state.episode_ms,
        "tenant": state.tenant,
        "segment": state.segment,
        # the group of the user's signals in this episode (its arm's, with an experiment)
        "group": signal_group(user_id, state, config)[0],
        "events_total": state.events_total,
    }


def user_fields(user_id: str, state: UserState, clock_ms: int, config: ModelConfig) -> UserFields:
    """The full view of ``GET /users/{id}``: the Redis hash's fields and more."""
    fields = mirror_fields(user_id, state, clock_ms, config)
    at_ms = int(fields["as_of"])
    tiers, source = thresholds_for(state, config)
    fields.update(
        first_seen=state.first_seen_ms,
        inactive_ms=at_ms - state.last_seen_ms,
        next_threshold_ms=tiers[min(state.tier, TIER_CHURNED - 1)],
        threshold_source=source,
        active_days=state.active_days,
        streak_days=state.streak_days,
        usual_gap_days=state.usual_gap_centidays / 100,
    )
    return fields


def is_at_risk(fields: UserFields) -> bool:
    """Members of the at-risk sorted set: users whose stage is ``at_risk`` now."""
    return fields["stage"] == AT_RISK_STAGE
