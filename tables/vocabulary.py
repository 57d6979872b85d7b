"""The closed value sets of the output records, from the constants the model uses.

The JSON Schemas take their enums from here (``streams/schemas.py``), and
tests check them from both sides: every ``Reason("...")`` written in
``tables/`` must have its code here, and records the engine really produced
validate against the schemas. A new signal kind, stage or reason code goes
into the model's own module and into the tuple here, with its meaning.
"""

from __future__ import annotations

from typing import Final

from tables.activation import NOT_ACTIVATED, SOURCE_ACTIVATION
from tables.cadence import NEGATIVE_KINDS
from tables.decline import DECLINING
from tables.groups import HOLDOUT, TREATMENT
from tables.intent import CHURN_INTENT_KIND
from tables.lifecycle import STAGES
from tables.model import REACTIVATED
from tables.state import TIER_NAMES
from tables.thresholds import (
    SOURCE_DEFAULT,
    SOURCE_POPULATION,
    SOURCE_SEGMENT,
    SOURCE_TENANT,
    SOURCE_USER,
)

TIERS: Final[tuple[str, ...]] = tuple(TIER_NAMES[1:])
SIGNAL_KINDS: Final[tuple[str, ...]] = (
    *TIERS,
    CHURN_INTENT_KIND,
    REACTIVATED,
    DECLINING,
    NOT_ACTIVATED,
)
LIFECYCLE_STAGES: Final[tuple[str, ...]] = tuple(STAGES)
GROUPS: Final[tuple[str, ...]] = (TREATMENT, HOLDOUT)
THRESHOLD_SOURCES: Final[tuple[str, ...]] = (
    SOURCE_USER,
    SOURCE_SEGMENT,
    SOURCE_TENANT,
    SOURCE_POPULATION,
    SOURCE_DEFAULT,
    SOURCE_ACTIVATION,
)

# code -> (value, baseline): what the two numbers of a reason mean (docs/CONTRACTS.md, "Reasons").
REASON_CODES: Final[dict[str, tuple[str, str]]] = {
    "inactive_days": ("days silent at as_of", "the threshold in days"),
    "gap_vs_usual": ("days silent", "the usual gap between active days, in days"),
    "frequency_drop": (
        "events in the 7 days ending on the last-seen day",
        "weekly mean of events in the 21 days before those",
    ),
    "active_days_drop": (
        "active days in the 7 days ending on the last-seen day",
        "weekly mean of active days in the 21 days before those",
    ),
    "streak_broken": ("the run of consecutive active days that ended", "null"),
    **{
        f"recent_{kind}": (
            f"1: a {kind} event in the week of the user's newest activity or the week before",
            "null",
        )
        for kind in NEGATIVE_KINDS
    },
    "single_visit": ("1: the user was seen on one day only", "null"),
    "expected_active_days": (
        "active days the risk model expected within the silence",
        "null",
    ),
    "returned_after_days": ("the gap before the return, in days", "null"),
    "active_days": ("active days in total", "null"),
    "recent_active_days": (
        "active days in the recent window: 14 days (declining), 28 (churn_intent)",
        "declining: the active days the user's long-run baseline expects in 14 days; "
        "churn_intent: null",
    ),
    "active_day_rate": (
        "active days per day over the last 14 days",
        "the user's long-run baseline, active days per day",
    ),
    "activated_after_days": ("days from first seen to the activation event", "null"),
    "days_since_first_seen": ("days from first seen to the activation deadline", "null"),
    "intent_subscription_cancelled": (
        "1: the churn-intent event was a subscription_cancelled",
        "null",
    ),
    "intent_unsubscribe": ("1: the churn-intent event was an unsubscribe", "null"),
    "intent_other": ("1: the churn-intent event was of a type a configuration added", "null"),
    "days_since_active": (
        "days from the last active event to the churn intent",
        "the usual gap between active days, in days (null before a second active day)",
    ),
    "after_churn_intent": ("days from the churn intent to the return", "null"),
}
