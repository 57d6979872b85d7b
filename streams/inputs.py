"""Verified control records of the input topic as the record processor's inputs.

The wire records (``streams.records``, docs/CONTRACTS.md) carry their key id
and signature; the processor (``tables.processor``) takes the model's plain
records (``tables.inputs``), so it never depends on the wire format.
"""

from __future__ import annotations

from streams.records import ConfigUpdate, ControlRecord, Erase, Tick
from tables.inputs import ClockTick, ControlInput, EraseRequest, ThresholdUpdate


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
        )
    raise TypeError(f"not a control record: {type(record).__name__}")
