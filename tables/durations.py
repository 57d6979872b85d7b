"""Durations and instants as the contracts write them, parsed to int milliseconds.

Durations: ``500ms``, ``10s``, ``15m``, ``36h``, ``7d``, ``2w`` or an integer
of milliseconds; ``d`` is always 86,400,000 ms. Instants: RFC 3339 or epoch ms.
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


def parse_duration_ms(text: str | int) -> int:
    """Return the duration in ms; an integer (or a bare number) is already ms."""
    if isinstance(text, bool):
        raise BadDurationError(f"not a duration: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise BadDurationError(f"duration must not be negative: {text}")
        return text
    match = _DURATION.match(text)
    if match is None:
        raise BadDurationError(
            f"not a duration: {text!r} (use e.g. 500ms, 10s, 15m, 36h, 7d, 2w or integer ms)"
        )
    number, unit = match.groups()
    value = float(number) * MS_PER_UNIT[unit or "ms"]
    return round(value)


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
