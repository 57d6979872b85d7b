"""What the reference reads (decoded input records, settings) and what it produces.

Input records carry their place in the log (``offset``) and the broker's
append time ``R`` (``append_ms``); their fields are those of the input event
and of the control records ``$tick``, ``$config`` and ``$erase`` of
docs/CONTRACTS.md, already decoded and verified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DAY_MS = 86_400_000
CHURN_INTENT_TYPES = frozenset({"subscription_cancelled", "unsubscribe"})
NEGATIVE_TYPES = frozenset(
    {
        "checkout_failed",
        "payment_failed",
        "order_failed",
        "support_ticket",
        "complaint",
        "negative_feedback",
        "app_error",
        "error",
        "crash",
        "refund_requested",
        "order_cancelled",
    }
)


@dataclass(frozen=True)
class Activity:
    """What counts as activity in one scope (docs/MODEL.md, "Activity"): ``active``
    ``None`` means every type not listed in another class."""

    active: frozenset[str] | None = None
    passive: frozenset[str] = frozenset()
    negative: frozenset[str] = NEGATIVE_TYPES
    churn_intent: frozenset[str] = CHURN_INTENT_TYPES
    tier_min_active_days: int = 0


@dataclass(frozen=True)
class Event:
    offset: int
    append_ms: int
    event_id: str
    user_id: str
    type: str
    ts_ms: int
    tenant: str | None = None
    segment: str | None = None
    anonymous: bool | None = None


@dataclass(frozen=True)
class Tick:
    offset: int
    append_ms: int
    wall_ms: int
    events_seen_append_ms: int


@dataclass(frozen=True)
class Config:
    offset: int
    append_ms: int
    scope: str
    effective_from_ms: int
    at_risk_ms: int
    dormant_ms: int
    churned_ms: int
    # the scope's activity classes (docs/CONTRACTS.md, "$config"); None: not given
    activity: Activity | None = None


@dataclass(frozen=True)
class Erase:
    offset: int
    append_ms: int
    user_id: str
    issued_ms: int


Record = Event | Tick | Config | Erase


@dataclass(frozen=True)
class Rules:
    """The settings the record rules read; defaults are the contract's."""

    partition: int = 0
    day_ms: int = DAY_MS
    at_risk_ms: int = 7 * DAY_MS
    dormant_ms: int = 14 * DAY_MS
    churned_ms: int = 30 * DAY_MS
    threshold_min_ms: int = DAY_MS
    threshold_max_ms: int = 90 * DAY_MS
    adaptive_min_days: int = 5
    lateness_ms: int = 600_000
    stall_guard_ms: int = 900_000
    max_future_ms: int = 3_600_000
    horizon_ms: int = 30 * DAY_MS
    new_days: int = 7
    resurrected_days: int = 14
    holdout_share: float = 0.1
    holdout_salt: str = ""
    erasure_suppress_ms: int = 30 * DAY_MS
    dedup_ids: int = 4
    activity: Activity = Activity()
    intent_grace_ms: int = DAY_MS
    anonymous_tiers: bool = False
    # MBG/NBD population parameters (alpha in days): the defaults of docs/MODEL.md
    risk_r: float = 0.5
    risk_alpha: float = 3.0
    risk_a: float = 0.5
    risk_b: float = 3.0
    decline_sensitivity: float = 0.65
    activation_types: tuple[str, ...] = ()  # none: activation off
    activation_days: int = 7
    # the version signals name (docs/CONTRACTS.md, risk_model): no model file
    risk_model: str = "mbg_nbd-default"
    # a tier signal whose risk is below its tier's minimum is not published
    min_risk: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # the population cadence of the risk model file: centidays by "tenant/segment" or "tenant"
    population: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class UserView:
    """Every field of a user's state, in the reference's terms.

    ``recent_event_ids`` are the ids themselves (the engine keeps hashes);
    ``day_counts`` maps a day number to its event count, only for days with
    events within the 28 days ending on ``newest_day``; the negative kinds are
    those seen in the week (``day // 7``) of the newest activity and the week
    before; ``tier`` is ``None`` or a tier name, ``stage`` a stage name;
    ``baseline`` the declining rule's long-run baseline in 1/10,000.
    """

    first_seen_ms: int
    last_seen_ms: int
    partition: int
    offset: int
    recent_event_ids: tuple[str, ...]
    newest_day: int
    day_counts: dict[int, int]
    active_days: int
    streak_days: int
    usual_gap_centidays: int
    events_total: int
    tier: str | None
    stage: str
    first_signal_as_of_ms: int | None
    returned_day: int | None
    negative_kinds_newest_week: frozenset[str]
    negative_kinds_week_before: frozenset[str]
    tenant: str
    segment: str
    baseline: int
    declining: bool
    activated: bool
    not_activated_signalled: bool
    intent_ms: int | None
    anonymous: bool


@dataclass(frozen=True)
class Prefix:
    """What a partition holds and has emitted after its first ``records`` input
    records, every user judged at the clock of that point."""

    records: int
    states: dict[str, UserView]
    signals: int  # how many of ``Outcome.signals`` were emitted by then
    transitions: int


@dataclass
class Outcome:
    """The result of one partition's records.

    ``signals`` and ``transitions`` are wire payloads (JSON objects as
    consumers read them), each with the index of the input record whose
    handling emitted it; ``outcomes`` says per input record what happened to
    it (events: ``applied``, ``duplicate_offset``, ``duplicate_id``,
    ``suppressed``; ``tick``; configs: ``applied``, ``unchanged``,
    ``rejected``; erasures: ``erased``, ``stale``). ``unsignalled`` holds the
    tier signals whose risk was below the tier's minimum, as they would have read.
    """

    states: dict[str, UserView] = field(default_factory=dict)
    signals: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    transitions: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    clock_ms: int | None = None
    # tier signals the minimum risk kept off the topic (the tier and stage moved)
    unsignalled: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    prefixes: list[Prefix] = field(default_factory=list)  # when asked for (``Partition.run``)
