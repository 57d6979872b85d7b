"""Durations and instants as the contracts write them, parsed to int milliseconds.

Durations: ``500ms``, ``10s``, ``15m``, ``36h``, ``7d``, ``2w``; ``d`` is always
86,400,000 ms. Written as text a duration carries its unit (``7`` could be 7 ms
or 7 days: refused), except ``0``; an ``int`` (JSON, code) is milliseconds, and
so is a bare integer in a variable whose name ends in ``_MS``. Instants: RFC
3339 or epoch ms.
"""

from __future__ import annotations

import math
import re
from datetime import datetime

from tables.errors import BadDurationError, BadInstantError

MS_PER_UNIT = {
    "ms": 1,
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_EXAMPLES = "e.g. 500ms, 10s, 15m, 36h, 7d, 2w"


def parse_duration_ms(text: str | int) -> int:
    """Return the duration in ms; an ``int`` is already ms, text needs its unit."""
    if isinstance(text, bool):
        raise BadDurationError(f"not a duration: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise BadDurationError(f"duration must not be negative: {text}")
        return text
    match = _DURATION.match(text)
    if match is None:
        raise BadDurationError(f"not a duration: {text!r} (use {_EXAMPLES})")
    number, unit = match.groups()
    if unit is None and float(number) != 0:
        raise BadDurationError(
            f"the duration {text.strip()!r} has no unit: write it with one ({_EXAMPLES}); "
            f"{text.strip()} alone could mean milliseconds or days"
        )
    value = float(number) * MS_PER_UNIT[unit or "ms"]
    return round(value)


def parse_integer_ms(text: str | int) -> int:
    """The value of a variable named ``*_MS``: a bare integer is milliseconds (the
    name gives the unit); a duration with its unit is read as one."""
    if isinstance(text, str) and text.strip().isdigit():
        return int(text.strip())
    return parse_duration_ms(text)


def format_duration_ms(duration_ms: int) -> str:
    """The shortest exact spelling of a duration (``7d``, ``90m``, ``1500ms``)."""
    for unit in ("w", "d", "h", "m", "s"):
        size = MS_PER_UNIT[unit]
        if duration_ms and duration_ms % size == 0:
            return f"{duration_ms // size}{unit}"
    return f"{duration_ms}ms"


def parse_rfc3339_ms(text: str) -> int:
    """Epoch ms of an RFC 3339 timestamp; raises on anything else (no naive times)."""
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError as exc:
        raise BadInstantError(f"not an RFC 3339 time: {text!r}") from exc
    if moment.tzinfo is None or "T" not in candidate.upper():
        raise BadInstantError(f"RFC 3339 needs a date, a time and an offset: {text!r}")
    seconds = moment.timestamp()
    if not math.isfinite(seconds):
        raise BadInstantError(f"not a finite time: {text!r}")
    return round(seconds * 1000)


def parse_instant_ms(text: str | int) -> int:
    """Epoch ms from RFC 3339 or an integer of epoch ms."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    if isinstance(text, str) and text.strip().lstrip("-").isdigit():
        return int(text.strip())
    if isinstance(text, str):
        return parse_rfc3339_ms(text)
    raise BadInstantError(f"not a time: {text!r}")
