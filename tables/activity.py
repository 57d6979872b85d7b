"""What counts as activity, and who gets tier signals (docs/MODEL.md, "Activity").

Every event type falls in one class, per tenant and segment:

- ``churn_intent`` (default ``subscription_cancelled``, ``unsubscribe``): the
  user says they are leaving; a ``churn_intent`` signal (``tables.intent``);
- ``negative`` (default: the negative-experience types of ``tables.cadence``
  besides those): kept as ``recent_*`` reasons, never activity;
- ``passive`` (default none, e.g. ``push_received``): counted in metrics only;
- ``active``: every other type (or, when ``active`` is listed, those listed;
  an unlisted type is then passive).

A type listed in several classes takes the first of churn_intent, negative,
passive, active. Only active events move ``last_seen``, the day counts, the
streak, the cadence and the lifecycle. The classes come from the settings
(``defaults``) and per ``tenant`` or ``tenant/segment`` scope from the
config versions (``overrides``, set by the engine from its threshold book).

Tier signals are withheld from anonymous users (unless ``anonymous_tiers``)
and from users with fewer than ``tier_min_active_days`` active days: such a
user has no tier due (``tiers_withheld``) and stays in its stage.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

import msgspec

from tables.cadence import NEGATIVE_TYPES
from tables.state import ANONYMOUS, UserState

ACTIVE: Final = 0
PASSIVE: Final = 1
NEGATIVE: Final = 2
CHURN_INTENT: Final = 3

DEFAULT_CHURN_INTENT_TYPES: Final = frozenset({"subscription_cancelled", "unsubscribe"})
DEFAULT_NEGATIVE_TYPES: Final = frozenset(NEGATIVE_TYPES) - DEFAULT_CHURN_INTENT_TYPES


class ActivityTypes(msgspec.Struct, frozen=True, omit_defaults=True):
    """The event type classes of one scope and its minimum of active days before tiers.

    ``active`` ``None``: every type not in another class is active."""

    active: frozenset[str] | None = None
    passive: frozenset[str] = frozenset()
    negative: frozenset[str] = DEFAULT_NEGATIVE_TYPES
    churn_intent: frozenset[str] = DEFAULT_CHURN_INTENT_TYPES
    tier_min_active_days: int = 0

    def classify(self, event_type: str) -> int:
        if event_type in self.churn_intent:
            return CHURN_INTENT
        if event_type in self.negative:
            return NEGATIVE
        if event_type in self.passive:
            return PASSIVE
        if self.active is None or event_type in self.active:
            return ACTIVE
        return PASSIVE

    def not_active(self) -> frozenset[str]:
        """The types that are never active (with ``active`` ``None``: all the others are)."""
        return _not_active(self)


@lru_cache(maxsize=64)
def _not_active(types: ActivityTypes) -> frozenset[str]:
    """Memoised: asked for every run of events ``tables.history`` folds."""
    return types.churn_intent | types.negative | types.passive


DEFAULT_TYPES: Final = ActivityTypes()


class ActivityPolicy(msgspec.Struct, frozen=True):
    """The activity classes (defaults and per scope), the churn-intent grace and who
    gets tiers. ``intent_grace_ms`` is ``INTENT_GRACE_DAYS`` model days."""

    defaults: ActivityTypes = DEFAULT_TYPES
    overrides: dict[str, ActivityTypes] = msgspec.field(default_factory=dict)
    intent_grace_ms: int = 86_400_000
    anonymous_tiers: bool = False

    def types_for(self, tenant: str, segment: str) -> ActivityTypes:
        """The classes of a user's scope: ``tenant/segment``, then ``tenant``, then defaults."""
        overrides = self.overrides
        if overrides:
            if segment:
                types = overrides.get(f"{tenant}/{segment}")
                if types is not None:
                    return types
            types = overrides.get(tenant)
            if types is not None:
                return types
        return self.defaults

    def tiers_withheld(self, state: UserState) -> bool:
        """Whether this user gets no tier signal now (anonymous, or too few active days)."""
        if state.activity_flags & ANONYMOUS and not self.anonymous_tiers:
            return True
        minimum = self.types_for(state.tenant, state.segment).tier_min_active_days
        return state.active_days < minimum

    def folds(self) -> frozenset[str] | None:
        """The types a run of folded events stops before (``tables.fold.fold_events``),
        or ``None`` when no run may be folded (scoped classes, an explicit active list)."""
        if self.overrides or self.defaults.active is not None:
            return None
        return self.defaults.not_active()


DEFAULT_ACTIVITY: Final = ActivityPolicy()


def scope_labels(
    state: UserState | None, tenant: str | None, segment: str | None
) -> tuple[str, str]:
    """The tenant and segment an event is judged under: its own, else the user's."""
    if tenant is None:
        tenant = state.tenant if state is not None else ""
    if segment is None:
        segment = state.segment if state is not None else ""
    return tenant, segment
