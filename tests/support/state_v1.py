"""User states as a version-1 worker wrote them, made without ``tables.state``.

An independent packer of the version-1 layout (field by field with
``int.to_bytes``, not the module's struct format), so the tests prove that
today's reader takes the bytes an older worker really left in a changelog.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StateV1:
    """The fields of a version-1 user state, in the meaning of that release."""

    first_seen_ms: int
    last_seen_ms: int
    partition: int = 0
    offset: int = -1
    recent_ids: tuple[int, ...] = ()
    newest_day: int = -1
    day_counts: bytes = bytes(28)
    active_days: int = 0
    streak_days: int = 0
    usual_gap_centidays: int = 0
    events_total: int = 0
    tier: int = 0
    stage: int = 0
    first_signal_as_of_ms: int = 0
    returned_day: int = -1
    negative_flags: int = 0
    tenant: str = ""
    segment: str = ""


def _i(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little", signed=True)


def _u(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little", signed=False)


def _label(text: str) -> bytes:
    raw = text.encode()
    return _u(len(raw), 1) + raw


def pack_v1(state: StateV1, version: int = 1) -> bytes:
    """The version-1 bytes of ``state`` (``version`` other than 1: the same
    layout under another version byte, as a test of what a reader accepts)."""
    ids = state.recent_ids
    assert len(ids) <= 4 and len(state.day_counts) == 28
    return b"".join(
        (
            _u(version, 1),
            _u(state.tier | state.stage << 2, 1),
            _u(state.negative_flags, 1),
            _u(len(ids), 1),
            _i(state.first_seen_ms, 8),
            _i(state.last_seen_ms, 8),
            _u(state.partition, 2),
            _i(state.offset, 8),
            b"".join(_u(hash_, 8) for hash_ in ids) + bytes(8 * (4 - len(ids))),
            _i(state.newest_day, 4),
            state.day_counts,
            _u(state.active_days, 4),
            _u(state.streak_days, 2),
            _u(state.usual_gap_centidays, 2),
            _u(state.events_total, 4),
            _i(state.first_signal_as_of_ms, 8),
            _i(state.returned_day, 4),
            _label(state.tenant),
            _label(state.segment),
        )
    )
