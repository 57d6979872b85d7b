"""Per-user state: a frozen struct and its packed binary form (no field names).

Layout of version 3 (little-endian; 118 fixed bytes, the labels, the
extension)::

    offset  bytes  field
         0      1  format version (3)
         1      1  tier (bits 0-1) and lifecycle stage (bits 2-4)
         2      1  flags of recent negative event types (``NEGATIVE_TYPES``,
                   this and the previous week of activity)
         3      1  how many of the 4 event-id hashes are in use
         4      8  first seen, ms (i64)
        12      8  last seen, ms (i64)
        20      2  source partition of the last applied event (u16)
        22      8  its offset (i64, -1 = none)
        30     32  event-id hashes (4 x u64), oldest first
        62      4  day index of the newest day counter (i32, -1 = none)
        66     28  one-byte saturating event counts per day, newest first
        94      4  active days in total (u32)
        98      2  current streak in days (u16)
       100      2  usual gap between active days, hundredths of a day (u16)
       102      4  events in total (u32)
       106      8  the first signal's ``as_of`` in this episode (i64, 0 = none)
       114      4  day of the last return from dormant/churned (i32, -1 = none)
       118  1 + n  tenant: length (u8), UTF-8 (at most 255 bytes)
         …  1 + m  segment: length (u8), UTF-8 (at most 255 bytes)
         …      …  extension: the fields added after version 1; a version
                   appends its own fields to the previous version's, so every
                   field keeps its place. Empty in version 2; version 3:

    extension  bytes  field
            0      2  long-run activity baseline, 1/10,000 of an active day
                      per day (u16, ``tables.decline``)
            2      1  growth flags (u8): bit 0 a decline episode is open,
                      bit 1 activated, bit 2 ``not_activated`` signalled
                      (``tables.activation``)
            3      8  the churn-intent time of the current episode, ms
                      (i64, 0 = none; ``tables.intent``)
           11      1  activity flags (u8): bit 0 anonymous (``tables.activity``)

Versions 1 and 2 are the same layout with version byte 1 or 2 and no
extension: a reader takes them as the same state with the version-3 fields
at their defaults, and the next write of the user stores version 3 (the
upgrade of a rolling deploy). A version newer than ``STATE_VERSION``
raises ``NewerStateError``: this release cannot know what the newer fields
mean, and writing the state back would drop them. Adding a field: give it a
default in ``UserState``, bump ``STATE_VERSION``, append it to the extension
(``_EXTENSION_BYTES``) and read it only from blobs of that version on, within
160 bytes per user besides tenant and segment (docs/CONTRACTS.md); the frozen
blobs of every older version in tests/unit/test_state.py must still read.
"""

from __future__ import annotations

import struct
from typing import Final

import msgspec

from tables.errors import NewerStateError, StateFormatError

STATE_VERSION: Final = 3
DAY_WINDOW: Final = 28
ID_SLOTS: Final = 4
NO_OFFSET: Final = -1
NO_DAY: Final = -1

TIER_NONE: Final = 0
TIER_AT_RISK: Final = 1
TIER_DORMANT: Final = 2
TIER_CHURNED: Final = 3
TIER_NAMES: Final = ("", "at_risk", "dormant", "churned")
ANONYMOUS: Final = 1  # activity_flags: the user's last event that said so was anonymous

_FIXED = struct.Struct(f"<BBBBqqHq{ID_SLOTS}Qi{DAY_WINDOW}sIHHIqi")
# Bytes of the extension in each readable version; a version's extension is
# the previous one's followed by the fields it adds.
_EXTENSION_V3 = struct.Struct("<HBqB")
_EXTENSION_BYTES: Final = {1: 0, 2: 0, 3: _EXTENSION_V3.size}
_EMPTY_DAYS: Final = bytes(DAY_WINDOW)
_LENGTH_BYTE: Final = tuple(bytes((n,)) for n in range(256))  # faster than bytes((n,)) per call


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
    baseline: int = 0  # version 3: the long-run active-day rate (tables.decline)
    growth_flags: int = 0  # version 3: decline episode, activation (tables.activation)
    intent_ms: int = 0  # version 3: the churn intent of this episode (tables.intent)
    activity_flags: int = 0  # version 3: anonymous (tables.activity)

    @property
    def episode_ms(self) -> int:
        """The ``last_seen`` that began the current silence."""
        return self.last_seen_ms


def pack_state(state: UserState) -> bytes:
    """Version ``STATE_VERSION``: 132 bytes + tenant + segment."""
    ids = state.recent_ids
    if len(ids) > ID_SLOTS:
        ids = ids[-ID_SLOTS:]
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
    extension = _EXTENSION_V3.pack(
        min(state.baseline, 0xFFFF),
        state.growth_flags & 0xFF,
        state.intent_ms,
        state.activity_flags & 0xFF,
    )
    return b"".join(
        (fixed, _LENGTH_BYTE[len(tenant)], tenant, _LENGTH_BYTE[len(segment)], segment, extension)
    )


def _label_bytes(label: str) -> bytes:
    """UTF-8 of a tenant/segment; the decoder keeps labels within 255 bytes
    (``ENGAGEMENT_MAX_LABEL_BYTES``), so a longer one is a caller's bug, not
    something to cut silently (a cut label would give one user two tenants)."""
    raw = label.encode()
    if len(raw) > 255:
        raise StateFormatError(f"a tenant or segment of {len(raw)} bytes (at most 255 are kept)")
    return raw


def unpack_state(blob: bytes) -> UserState:
    """Inverse of :func:`pack_state` for every version up to ``STATE_VERSION``.

    Raises ``NewerStateError`` for a newer version and ``StateFormatError``
    for anything else that is not a user state."""
    if not blob:
        raise StateFormatError("user state of 0 bytes")
    version = blob[0]
    extension_bytes = _EXTENSION_BYTES.get(version)
    if extension_bytes is None:
        if version > STATE_VERSION:
            raise NewerStateError(version, STATE_VERSION)
        raise StateFormatError(f"user state of an unknown format version {version}")
    size = len(blob)
    if size < _FIXED.size + 2:
        raise StateFormatError(f"user state of {size} bytes in version {version} is too short")
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
    segment_at = _FIXED.size + 1 + blob[_FIXED.size]
    if segment_at >= size or segment_at + 1 + blob[segment_at] + extension_bytes != size:
        raise StateFormatError(f"user state of {size} bytes in version {version} has a bad length")
    try:
        tenant = blob[_FIXED.size + 1 : segment_at].decode()
        segment = blob[segment_at + 1 : size - extension_bytes].decode()
    except UnicodeDecodeError as exc:
        raise StateFormatError("user state has a tenant or segment that is not UTF-8") from exc
    baseline = growth_flags = intent_ms = activity_flags = 0
    if extension_bytes:
        baseline, growth_flags, intent_ms, activity_flags = _EXTENSION_V3.unpack_from(
            blob, size - extension_bytes
        )
    # positional, in UserState's field order (pinned by tests/unit/test_state.py)
    return UserState(
        first_seen_ms,
        last_seen_ms,
        partition,
        offset,
        (id0, id1, id2, id3)[:id_count],
        newest_day,
        day_counts,
        active_days,
        streak_days,
        usual_gap_centidays,
        events_total,
        tier_stage & 0b11,
        (tier_stage >> 2) & 0b111,
        first_signal_as_of_ms,
        returned_day,
        negative_flags,
        tenant,
        segment,
        baseline,
        growth_flags,
        intent_ms,
        activity_flags,
    )


def counts_by_age(state: UserState, day: int) -> list[int]:
    """Event counts per day, index 0 = ``day``, 1 = the day before, … (window only)."""
    shift = day - state.newest_day
    if state.newest_day == NO_DAY or shift >= DAY_WINDOW:
        return [0] * DAY_WINDOW
    if shift <= 0:
        return list(state.day_counts[-shift:]) + [0] * (-shift)
    return [0] * shift + list(state.day_counts[: DAY_WINDOW - shift])
