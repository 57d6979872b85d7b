"""Activation: a new user reaches the product's first value, or is told apart.

With activation event types configured (``ENGAGEMENT_ACTIVATION_TYPES``), a
user leaves ``new`` for ``active`` at the first event of one of those types
(docs/MODEL.md, "Activation"). A user not activated ``activation_days``
model days after first seen gets the ``not_activated`` signal, once, at that
instant, and the ``not_activated`` stage when still ``new``; activating later
moves ``not_activated`` to ``active``. Without activation types (the
default) activation is off and ``new`` ends by time alone.

Two bits of the state's growth flags hold it: ``ACTIVATED`` and
``NOT_ACTIVATED_SIGNALLED``.
"""

from __future__ import annotations

from typing import Final

from tables.lifecycle import STAGE_ACTIVE, STAGE_NEW, STAGE_NOT_ACTIVATED
from tables.state import UserState

NOT_ACTIVATED: Final = "not_activated"
SOURCE_ACTIVATION: Final = "activation"  # threshold_source of not_activated: the deadline
ACTIVATED: Final = 0b010
NOT_ACTIVATED_SIGNALLED: Final = 0b100


def activation_due_ms(
    state: UserState, activation_on: bool, activation_days: int, day_ms: int
) -> int | None:
    """When ``not_activated`` falls due for this user (``None``: never, or already)."""
    if not activation_on or state.growth_flags & (ACTIVATED | NOT_ACTIVATED_SIGNALLED):
        return None
    return state.first_seen_ms + activation_days * day_ms


def activates(state: UserState, event_type: str, activation_types: frozenset[str]) -> bool:
    """Whether this event activates the user (the first event of an activation type)."""
    return event_type in activation_types and not state.growth_flags & ACTIVATED


def stage_on_activation(stage: int) -> int:
    """Where activating takes the stored stage: new and not_activated become active."""
    return STAGE_ACTIVE if stage in (STAGE_NEW, STAGE_NOT_ACTIVATED) else stage


def stage_back_unactivated(state: UserState, usual: int) -> int:
    """Where a return from a tier leads a user not yet activated while activation is on:
    back to ``not_activated`` once signalled, else to ``new`` (``usual`` when activated)."""
    if state.growth_flags & ACTIVATED:
        return usual
    return STAGE_NOT_ACTIVATED if state.growth_flags & NOT_ACTIVATED_SIGNALLED else STAGE_NEW
