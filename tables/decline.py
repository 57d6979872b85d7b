"""Warning before silence: a user still active whose recent rate fell well below their own.

Two figures per user (docs/MODEL.md, "Declining"):

- the **baseline**, the long-run share of days on which the user was active:
  an exponentially weighted mean of the daily 0/1 activity with weight
  ``BASELINE_WEIGHT`` (2 % per day: a half-life of about 34 days), kept in the
  state as an integer of 1/10,000 (``BASELINE_UNITS``). It moves when a new
  newest active day ``d`` arrives, ``g`` days after the previous one:
  ``b ← min(10,000, round(b · (1 - w)^g) + 200)`` (the ``g - 1`` silent days
  decay it, day ``d`` adds ``w``); a user's first day sets it to 200. Read
  as a rate it is corrected for the user's short history, as a mean that
  started at zero: ``B = b / 10,000 / (1 - (1 - w)^n)`` with ``n`` the days
  from the first active day to ``d``, both counted;
- the **recent count** ``k``: active days among the ``RECENT_DAYS`` (14)
  days ending on ``d``.

At each event that starts a new newest active day of a user without a tier,
with at least ``MIN_HISTORY_DAYS`` (28) days of history and a baseline that
expects at least ``MIN_EXPECTED_DAYS`` (3) active days in 14, a decline
episode opens when ``k < s · 14 · B`` (``s`` the sensitivity, setting
``ENGAGEMENT_DECLINE_SENSITIVITY``) and closes when ``k ≥ (1 + s) / 2 · 14 · B``
(the recent rate recovered most of the way). Opening emits ``declining``.

The baseline moves slowly on purpose: the usual-gap average behind the
per-user thresholds follows a fading user within a few gaps (so its
thresholds stretch and no tier fires), while this one still remembers the
old rhythm a month later. A late event (older than the newest active day)
counts in the recent count but does not move the baseline.
"""

from __future__ import annotations

from typing import Final

BASELINE_UNITS: Final = 10_000
BASELINE_STEP: Final = 200  # the weight w of one day, in units: w = 0.02
BASELINE_WEIGHT: Final = BASELINE_STEP / BASELINE_UNITS
RECENT_DAYS: Final = 14
MIN_HISTORY_DAYS: Final = 28
MIN_EXPECTED_DAYS: Final = 3.0

DECLINING: Final = "declining"
DECLINE_OPEN: Final = 0b001  # the growth-flags bit of an open decline episode


def next_baseline(baseline: int, gap_days: int) -> int:
    """The baseline after a new newest active day ``gap_days`` after the previous one."""
    decayed = round(baseline * (1.0 - BASELINE_WEIGHT) ** gap_days)
    return min(BASELINE_UNITS, decayed + BASELINE_STEP)


def baseline_rate(baseline: int, history_days: int) -> float:
    """The baseline as active days per day, corrected for a history of ``history_days``."""
    if history_days <= 0:
        return 0.0
    return baseline / BASELINE_UNITS / (1.0 - (1.0 - BASELINE_WEIGHT) ** history_days)


def recent_days(counts: bytes, shift: int = 0) -> int:
    """Active days among the ``RECENT_DAYS`` days ending ``shift`` days after the newest
    counted day (``counts`` newest first)."""
    if shift >= RECENT_DAYS:
        return 0
    window = counts[: RECENT_DAYS - shift]
    return len(window) - window.count(0)


def judge_decline(
    is_open: bool, recent: int, baseline: int, history_days: int, sensitivity: float
) -> bool:
    """Whether a decline episode is open after a new newest active day."""
    if sensitivity <= 0.0 or history_days < MIN_HISTORY_DAYS:
        return is_open
    expected = RECENT_DAYS * baseline_rate(baseline, history_days)
    if expected < MIN_EXPECTED_DAYS:
        return is_open
    if is_open:
        return recent < (1.0 + sensitivity) / 2.0 * expected
    return recent < sensitivity * expected
