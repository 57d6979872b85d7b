"""Verified control records of the input topic as the record processor's inputs.

The wire records (``streams.records``, docs/CONTRACTS.md) carry their key id
and signature; the processor (``tables.processor``) takes the model's plain
records (``tables.inputs``), so it never depends on the wire format.
"""

from __future__ import annotations

import msgspec

from streams.records import ConfigUpdate, ControlRecord, Erase, Tick
from tables.activity import DEFAULT_TYPES, ActivityTypes
from tables.inputs import ClockTick, ControlInput, EraseRequest, ThresholdUpdate


def activity_types(record: ConfigUpdate) -> ActivityTypes | None:
    """The activity classes a version gives (``None``: none; a class it leaves out
    keeps the contract's default)."""
    classes = {
        "active": record.active_types,
        "passive": record.passive_types,
        "negative": record.negative_types,
        "churn_intent": record.churn_intent_types,
    }
    given = {name: frozenset(types) for name, types in classes.items() if types is not None}
    if not given and record.tier_min_active_days is None:
        return None
    return msgspec.structs.replace(
        DEFAULT_TYPES, tier_min_active_days=record.tier_min_active_days or 0, **given
    )


def control_input(record: ControlRecord) -> ControlInput:
    """The processor's record for a verified control record."""
    if isinstance(record, Tick):
        return ClockTick(record.wall_ms, record.events_seen_append_ms)
    if isinstance(record, Erase):
        return EraseRequest(record.user_id, record.issued_ms)
    if isinstance(record, ConfigUpdate):
        return ThresholdUpdate(
            record.scope,
            record.effective_from,
            (record.at_risk_ms, record.dormant_ms, record.churned_ms),
            activity_types(record),
        )
    raise TypeError(f"not a control record: {type(record).__name__}")
