"""Which inactivity thresholds apply to a user, and where they came from.

Order: per segment, per tenant (from the config topic), global defaults.
Per-user thresholds from the user's own cadence arrive with the adaptive model.
"""

from __future__ import annotations

from typing import Final

import msgspec

from tables.state import TIER_CHURNED, TIER_NONE, UserState

SOURCE_DEFAULT: Final = "default"
SOURCE_TENANT: Final = "tenant"
SOURCE_SEGMENT: Final = "segment"
SOURCE_USER: Final = "user"

Tiers = tuple[int, int, int]


class ThresholdPolicy(msgspec.Struct, frozen=True):
    """Tier thresholds in ms: defaults plus overrides keyed ``tenant`` or ``tenant/segment``."""

    defaults_ms: Tiers
    min_ms: int
    max_ms: int
    overrides: dict[str, Tiers] = msgspec.field(default_factory=dict)

    def resolve(self, state: UserState) -> tuple[Tiers, str]:
        if self.overrides:
            if state.segment:
                tiers = self.overrides.get(f"{state.tenant}/{state.segment}")
                if tiers is not None:
                    return tiers, SOURCE_SEGMENT
            tiers = self.overrides.get(state.tenant)
            if tiers is not None:
                return tiers, SOURCE_TENANT
        return self.defaults_ms, SOURCE_DEFAULT


def next_due_ms(state: UserState, tiers: Tiers) -> int | None:
    """When the next tier falls due for this user (``None`` after churned)."""
    if state.tier >= TIER_CHURNED:
        return None
    return state.last_seen_ms + tiers[state.tier - TIER_NONE]
