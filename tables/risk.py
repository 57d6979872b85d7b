"""A first honest risk model: P(no activity within the horizon).

Active days are treated as a Poisson process with a per-user rate, shrunk
towards a population prior (gamma posterior mean), and the user may have
dropped out silently. The chance of being "alive" after ``t`` quiet days
follows Bayes: alive users go quiet that long with probability ``exp(-λt)``,
dropped-out users always do. Users with few active days get a higher prior
dropout chance (Laplace's rule), which keeps single-visit users from
looking permanently alive, the known flaw of plain BG/NBD.

O(1) per call; every input comes from the state and the clock passed in.
"""

from __future__ import annotations

import math

PRIOR_ACTIVE_DAYS = 1.0
PRIOR_SPAN_DAYS = 7.0


def rate_per_day(active_days: int, span_days: float) -> float:
    return (active_days + PRIOR_ACTIVE_DAYS) / (max(span_days, 0.0) + PRIOR_SPAN_DAYS)


def p_alive(active_days: int, span_days: float, quiet_days: float) -> float:
    rate = rate_per_day(active_days, span_days)
    dropout_prior = 1.0 / (active_days + 2.0)
    odds_dropped = dropout_prior / (1.0 - dropout_prior)
    exponent = min(rate * max(quiet_days, 0.0), 700.0)
    return 1.0 / (1.0 + odds_dropped * math.exp(exponent))


def risk_not_active(
    active_days: int, span_days: float, quiet_days: float, horizon_days: float
) -> float:
    """Probability that the user has no active day within ``horizon_days``."""
    alive = p_alive(active_days, span_days, quiet_days)
    rate = rate_per_day(active_days, span_days)
    p_active_if_alive = 1.0 - math.exp(-rate * max(horizon_days, 0.0))
    return round(min(1.0, max(0.0, 1.0 - alive * p_active_if_alive)), 6)
