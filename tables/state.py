"""Per-user state: a frozen struct and its packed binary form (no field names).

Layout of version 1 (little-endian, 118 bytes + tenant + segment):
version; tier (low 2 bits) and lifecycle stage (next 3 bits) in one byte;
flags of recent negative event types (``NEGATIVE_TYPES``, this and the
previous week of activity); id ring position (4 x u8); first/last seen (2 x
i64 ms);
source partition (u16) and offset (i64) of the last applied event; four 8-byte
event-id hashes; the day index of the newest day counter (i32) and 28
saturating one-byte counters, newest first; active days in total (u32),
current streak (u16); the usual gap between active days in hundredths of a
day (u16); events
in total (u32); the first signal's ``as_of`` in this episode (i64, 0 = none);
the day of the last return from dormant/churned (i32, -1 = none); tenant and
segment as length-prefixed UTF-8. Blobs written before the stage and the
flags were used (both zero then) read the same.
"""

from __future__ import annotations

import struct
from typing import Final

import msgspec

from tables.errors import StateFormatError

STATE_VERSION: Final = 1
DAY_WINDOW: Final = 28
ID_SLOTS: Final = 4
NO_OFFSET: Final = -1
NO_DAY: Final = -1

TIER_NONE: Final = 0
TIER_AT_RISK: Final = 1
TIER_DORMANT: Final = 2
TIER_CHURNED: Final = 3
TIER_NAMES: Final = ("", "at_risk", "dormant", "churned")

_FIXED = struct.Struct(f"<BBBBqqHq{ID_SLOTS}Qi{DAY_WINDOW}sIHHIqi")
_EMPTY_DAYS: Final = bytes(DAY_WINDOW)


class UserState(msgspec.Struct, frozen=True, gc=False):
    """Everything the engine remembers about one user."""

    first_seen_ms: int
    last_seen_ms: int
    partition: int = 0
    offset: int = NO_OFFSET
    recent_ids: tuple[int, ...] = ()
    newest_day: int = NO_DAY
    day_counts: bytes = _EMPTY_DAYS
    active_days: int = 0
    streak_days: int = 0
    usual_gap_centidays: int = 0
    events_total: int = 0
    tier: int = TIER_NONE
    stage: int = 0
    first_signal_as_of_ms: int = 0
    returned_day: int = NO_DAY
    negative_flags: int = 0
    tenant: str = ""
    segment: str = ""

    @property
    def episode_ms(self) -> int:
        """The ``last_seen`` that began the current silence."""
        return self.last_seen_ms


def pack_state(state: UserState) -> bytes:
    """The compact form: 120 bytes + tenant + segment (≤ 128 while they total ≤ 8)."""
    ids = tuple(state.recent_ids[-ID_SLOTS:])
    ring = ids + (0,) * (ID_SLOTS - len(ids))
    tenant = _label_bytes(state.tenant)
    segment = _label_bytes(state.segment)
    fixed = _FIXED.pack(
        STATE_VERSION,
        (state.tier & 0b11) | (state.stage & 0b111) << 2,
        state.negative_flags & 0xFF,
        len(ids),
        state.first_seen_ms,
        state.last_seen_ms,
        state.partition,
        state.offset,
        *ring,
        state.newest_day,
        state.day_counts,
        state.active_days,
        min(state.streak_days, 0xFFFF),
        min(state.usual_gap_centidays, 0xFFFF),
        min(state.events_total, 0xFFFFFFFF),
        state.first_signal_as_of_ms,
        state.returned_day,
    )
    return b"".join((fixed, bytes((len(tenant),)), tenant, bytes((len(segment),)), segment))


def _label_bytes(label: str) -> bytes:
    """UTF-8 of a tenant/segment, cut to 255 bytes on a character boundary."""
    raw = label.encode()
    if len(raw) <= 255:
        return raw
    return raw[:255].decode(errors="ignore").encode()


def unpack_state(blob: bytes) -> UserState:
    """Inverse of :func:`pack_state`; raises ``StateFormatError`` on a foreign blob."""
    if len(blob) < _FIXED.size + 2 or blob[0] != STATE_VERSION:
        raise StateFormatError(
            f"user state of {len(blob)} bytes with version {blob[:1].hex() or 'none'} "
            f"is not version {STATE_VERSION}"
        )
    (
        _version,
        tier_stage,
        negative_flags,
        id_count,
        first_seen_ms,
        last_seen_ms,
        partition,
        offset,
        id0,
        id1,
        id2,
        id3,
        newest_day,
        day_counts,
        active_days,
        streak_days,
        usual_gap_centidays,
        events_total,
        first_signal_as_of_ms,
        returned_day,
    ) = _FIXED.unpack_from(blob)
    pos = _FIXED.size
    tenant_len = blob[pos]
    segment_at = pos + 1 + tenant_len
    if segment_at >= len(blob) or segment_at + 1 + blob[segment_at] != len(blob):
        raise StateFormatError(f"user state of {len(blob)} bytes has a bad length")
    try:
        tenant = blob[pos + 1 : segment_at].decode()
        segment = blob[segment_at + 1 :].decode()
    except UnicodeDecodeError as exc:
        raise StateFormatError("user state has a tenant or segment that is not UTF-8") from exc
    return UserState(
        first_seen_ms=first_seen_ms,
        last_seen_ms=last_seen_ms,
        partition=partition,
        offset=offset,
        recent_ids=(id0, id1, id2, id3)[:id_count],
        newest_day=newest_day,
        day_counts=day_counts,
        active_days=active_days,
        streak_days=streak_days,
        usual_gap_centidays=usual_gap_centidays,
        events_total=events_total,
        tier=tier_stage & 0b11,
        stage=(tier_stage >> 2) & 0b111,
        first_signal_as_of_ms=first_signal_as_of_ms,
        returned_day=returned_day,
        negative_flags=negative_flags,
        tenant=tenant,
        segment=segment,
    )


def counts_by_age(state: UserState, day: int) -> list[int]:
    """Event counts per day, index 0 = ``day``, 1 = the day before, … (window only)."""
    shift = day - state.newest_day
    if state.newest_day == NO_DAY or shift >= DAY_WINDOW:
        return [0] * DAY_WINDOW
    if shift <= 0:
        return list(state.day_counts[-shift:]) + [0] * (-shift)
    return [0] * shift + list(state.day_counts[: DAY_WINDOW - shift])
