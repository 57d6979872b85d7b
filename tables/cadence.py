"""The user's rhythm in compact form: negative event types before a silence.

``negative_flags`` (one byte of the state) remembers which kinds of bad
experience the user had shortly before going quiet, so a signal can say
"checkout failed" or "opened a support ticket" and downstream tools can pick
a coupon, a support call or a reminder. Low nibble: kinds seen in the week
(``day // 7``) of the user's newest activity; high nibble: the week before.
A week without activity in between clears them: O(1), no history kept.
"""

from __future__ import annotations

from typing import Final

NEGATIVE_KINDS: Final = ("checkout_failed", "support_ticket", "app_error", "cancellation")
# Event types (as producers name them) that count as each kind.
NEGATIVE_TYPES: Final[dict[str, int]] = {
    "checkout_failed": 0,
    "payment_failed": 0,
    "order_failed": 0,
    "support_ticket": 1,
    "complaint": 1,
    "negative_feedback": 1,
    "app_error": 2,
    "error": 2,
    "crash": 2,
    "refund_requested": 3,
    "subscription_cancelled": 3,
    "unsubscribe": 3,
    "order_cancelled": 3,
}
WEEK_DAYS: Final = 7


def negative_bit(event_type: str) -> int:
    """The flag bit of an event type (0 when the type is not a negative one)."""
    kind = NEGATIVE_TYPES.get(event_type)
    return 0 if kind is None else 1 << kind


def update_negative_flags(flags: int, newest_day: int, event_day: int, event_type: str) -> int:
    """Flags after an event on ``event_day``; ``newest_day`` is the newest active day before it."""
    newest_week = newest_day // WEEK_DAYS
    week = event_day // WEEK_DAYS
    if week > newest_week:
        flags = (flags & 0x0F) << 4 if week == newest_week + 1 else 0
        newest_week = week
    kind = NEGATIVE_TYPES.get(event_type)
    if kind is None:
        return flags
    bit = 1 << kind
    if week == newest_week:
        return flags | bit
    if week == newest_week - 1:
        return flags | bit << 4
    return flags  # older than the previous week: too old to matter


def recent_negative_kinds(flags: int) -> list[str]:
    """Negative kinds seen in the last one to two weeks of activity, in a fixed order."""
    seen = (flags | flags >> 4) & 0x0F
    return [kind for index, kind in enumerate(NEGATIVE_KINDS) if seen & (1 << index)]
