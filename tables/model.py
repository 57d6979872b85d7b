"""The engagement model's vocabulary: its configuration, its input event, and what
it decides (signals, lifecycle transitions, the outcome of one step).

The rules live beside it: ``tables.fold`` (an event's arithmetic),
``tables.step`` (one event), ``tables.judgement`` (the clock),
``tables.signals`` (what a signal says), ``tables.user_risk`` (a user's risk).
"""

from __future__ import annotations

from typing import Final

import msgspec

from tables.activity import DEFAULT_ACTIVITY, ActivityPolicy
from tables.learned_risk import LearnedRisk
from tables.risk import DEFAULT_PARAMS, RiskParams
from tables.state import ID_SLOTS, NO_OFFSET, UserState
from tables.thresholds import ThresholdPolicy

APPLIED: Final = "applied"
DUPLICATE_OFFSET: Final = "duplicate_offset"
DUPLICATE_ID: Final = "duplicate_id"
PASSIVE: Final = "passive"  # an event that is not activity and changed no user (tables.intent)

REACTIVATED: Final = "reactivated"
DEFAULT_RISK_MODEL: Final = "mbg_nbd-default"


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
    # per tier (at_risk, dormant, churned): a tier whose risk is below it is not a signal
    min_risk: tuple[float, float, float] = (0.0, 0.0, 0.0)


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
