"""The input records of one partition as the model sees them (``tables.processor``).

An event is a ``tables.model.ModelEvent``; the control records of the input
topic (docs/CONTRACTS.md: ``$tick``, ``$config``, ``$erase``) arrive here
verified and stripped of their signature, so the record rules never see the
wire format (the shell converts: ``streams.inputs``).
"""

from __future__ import annotations

import msgspec

from tables.activity import ActivityTypes
from tables.model import ModelEvent
from tables.thresholds import Tiers


class ClockTick(msgspec.Struct, frozen=True):
    """A worker's clock record: its wall time and the newest event append time it had seen."""

    wall_ms: int
    events_seen_append_ms: int


class ThresholdUpdate(msgspec.Struct, frozen=True):
    """One tenant or segment threshold version (``scope`` is ``tenant[/segment]``)."""

    scope: str
    effective_from_ms: int
    tiers_ms: Tiers
    activity: ActivityTypes | None = None  # None: the scope's classes are inherited


class EraseRequest(msgspec.Struct, frozen=True):
    """An erasure request for one user, issued at ``issued_ms`` (wall time of the issuer)."""

    user_id: str
    issued_ms: int


ControlInput = ClockTick | ThresholdUpdate | EraseRequest
InputRecord = ModelEvent | ControlInput
