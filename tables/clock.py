"""The event-time clock of one input partition.

Each record contributes a time; the clock is the greatest contribution so far
minus the allowed lateness. An event contributes ``min(ts, R)`` (``R`` = the
broker's append time) so a phone with a wrong clock cannot push time past the
broker; a tick contributes ``min(wall, R, events_seen + stall_guard)`` so a
worker with a fast clock cannot either, and if producers stop the engine stops
judging instead of flagging everyone.
"""

from __future__ import annotations

NEVER = -(2**62)


def event_contribution_ms(ts_ms: int, append_ms: int) -> int:
    return min(ts_ms, append_ms)


def tick_contribution_ms(
    wall_ms: int, append_ms: int, events_seen_append_ms: int, stall_guard_ms: int
) -> int:
    bound = min(wall_ms, append_ms)
    if stall_guard_ms > 0:
        bound = min(bound, events_seen_append_ms + stall_guard_ms)
    return bound


def clock_ms(high_ms: int, lateness_ms: int) -> int:
    """The partition clock from the greatest contribution seen."""
    if high_ms <= NEVER:
        return NEVER
    return high_ms - lateness_ms
