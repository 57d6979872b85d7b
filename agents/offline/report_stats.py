"""The statistics of ``engagement report``: interval estimates of a proportion and
of a difference of proportions, and Kaplan-Meier return curves."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Final

import numpy as np

Z_95: Final = 1.959963984540054
BOOTSTRAP_SAMPLES: Final = 2_000


def wilson(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if trials == 0:
        return (float("nan"), float("nan"))
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int
) -> tuple[float, float]:
    """Newcombe's hybrid score interval of ``p_a - p_b`` (method 10)."""
    if trials_a == 0 or trials_b == 0:
        return (float("nan"), float("nan"))
    p_a, p_b = successes_a / trials_a, successes_b / trials_b
    low_a, high_a = wilson(successes_a, trials_a)
    low_b, high_b = wilson(successes_b, trials_b)
    difference = p_a - p_b
    low = difference - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2)
    high = difference + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2)
    return (low, high)


def bootstrap_difference(
    a: list[tuple[int, int]],
    b: list[tuple[int, int]],
    seed: int = 7,
    samples: int = BOOTSTRAP_SAMPLES,
) -> tuple[float, float]:
    """Percentile bootstrap interval of rate(a) - rate(b), resampling *users*:
    each item is one user's ``(successes, episodes)``, kept together."""
    if not a or not b:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)

    def rates(users: list[tuple[int, int]]) -> Any:
        counts = np.asarray(users, dtype=np.float64)
        picks = rng.integers(0, len(counts), size=(samples, len(counts)))
        return counts[picks, 0].sum(axis=1) / counts[picks, 1].sum(axis=1)

    low, high = np.percentile(rates(a) - rates(b), [2.5, 97.5])
    return (float(low), float(high))


def by_user(outcomes: list[tuple[str, int]]) -> list[tuple[int, int]]:
    """``(user, 0/1)`` per episode -> ``(successes, episodes)`` per user."""
    totals: dict[str, list[int]] = {}
    for user_id, outcome in outcomes:
        row = totals.setdefault(user_id, [0, 0])
        row[0] += outcome
        row[1] += 1
    return [(row[0], row[1]) for row in totals.values()]


def kaplan_meier(
    durations_ms: list[int], returned: list[bool], day_ms: int, days: int
) -> list[float]:
    """Share returned by day 0..days (1 - survival), censoring the rest."""
    if not durations_ms:
        return [0.0] * (days + 1)
    events: Counter[int] = Counter()
    censored: Counter[int] = Counter()
    for duration, came_back in zip(durations_ms, returned, strict=True):
        day = max(0, math.ceil(duration / day_ms))
        (events if came_back else censored)[day] += 1
    at_risk = len(durations_ms)
    survival = 1.0
    curve = []
    for day in range(days + 1):
        if at_risk > 0 and events[day]:
            survival *= 1 - events[day] / at_risk
        curve.append(1 - survival)
        at_risk -= events[day] + censored[day]
    return curve
