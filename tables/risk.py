"""Calibrated risk: P(no active day within the horizon), from an MBG/NBD model.

The model (Batislam, Denizel & Filiztekin 2007; Hoppe & Wagner 2007), a
member of the BG/NBD and Pareto/NBD family (Fader, Hardie & Lee 2005):

- while "alive" a user has active days as a Poisson process of rate λ;
  across users λ ~ Gamma(r, alpha) (alpha in days);
- at the first active day and after every further one the user may drop
  out for good with probability p; across users p ~ Beta(a, b).

Plain BG/NBD lets users drop out only after a *repeat* day, so a user seen
on one day only keeps P(alive) = 1 forever; MBG/NBD also allows dropping out
right after the first day, which is the special care one-day users need.
With ``x`` repeat active days, the last one ``t_x`` days after the first and
the user ``T`` days old (all from the state), the posterior gives

    P(alive) = 1 / (1 + a / (b + x) · ((alpha + T) / (alpha + t_x))^(r + x))
    P(no active day in h | alive) = ((alpha + T) / (alpha + T + h))^(r + x)

(an alive user cannot drop out before the next active day, and λ given the
data is Gamma(r + x, alpha + T)), so

    risk = 1 - P(alive) · (1 - ((alpha + T) / (alpha + T + h))^(r + x)).

Rates drift (a user fades, or picks up), and the plain posterior weighs
an active day of five months ago like one of last week. The rate part
therefore discounts old evidence, as discount-factor (power prior) updates
of a Gamma-Poisson rate do: active days and exposure within the last
``DAY_WINDOW`` days count in full, older ones at ``RATE_DISCOUNT``, so

    x_rate = x_recent + d · (x - x_recent),  T_rate = T_recent + d · (T - T_recent)

replace ``x`` and ``T`` in ``P(no active day in h | alive)``. P(alive) keeps
the whole history (dropout is a once-only event, nothing to discount). A
stationary user loses a little precision, a drifting one is judged by what
it does now; the population parameters are still fitted on the whole
history. Without the recent figures (``recent_repeat_days`` ``None``) the
model is plain MBG/NBD.

Shrinkage comes with the Bayesian form: with little history the population
parameters dominate; each further active day moves the user's own rate and
survival away from them. The population parameters are fitted from data by
maximum likelihood (``agents.offline.fit``); the defaults below are weak priors.
O(1) per call, pure: every input is passed in.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec


class RiskParams(msgspec.Struct, frozen=True):
    """Population parameters of the MBG/NBD model (``alpha`` in days)."""

    r: float = 0.5
    alpha: float = 3.0
    a: float = 0.5
    b: float = 3.0

    def __post_init__(self) -> None:
        for name in ("r", "alpha", "a", "b"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"risk parameter {name} must be positive and finite, got {value}")


DEFAULT_PARAMS: Final = RiskParams()
RATE_DISCOUNT: Final = 0.5  # weight of an active day (and of exposure) before the window
MAX_EXP: Final = 700.0


def log_odds_dropped(
    params: RiskParams, repeat_days: int, last_day_age: float, age_days: float
) -> float:
    """log of P(dropped out) / P(alive) given the user's history."""
    # conditionals, not max(): this runs per scored user (a builtin call each)
    x = repeat_days if repeat_days > 0 else 0
    last = last_day_age if last_day_age > 0.0 else 0.0
    age = age_days if age_days > last else last
    return (
        math.log(params.a)
        - math.log(params.b + x)
        + (params.r + x) * (math.log(params.alpha + age) - math.log(params.alpha + last))
    )


def p_alive(params: RiskParams, repeat_days: int, last_day_age: float, age_days: float) -> float:
    """Probability that the user has not dropped out by ``age_days``."""
    log_odds = log_odds_dropped(params, repeat_days, last_day_age, age_days)
    return 1.0 / (1.0 + math.exp(min(log_odds, MAX_EXP)))


def rate_evidence(
    repeat_days: int, age_days: float, recent_repeat_days: int, window_days: float
) -> tuple[float, float]:
    """``(x_rate, T_rate)``: repeat days and exposure with days before the window discounted."""
    x = repeat_days if repeat_days > 0 else 0
    age = age_days if age_days > 0.0 else 0.0
    recent = recent_repeat_days if recent_repeat_days < x else x
    recent = recent if recent > 0 else 0
    exposure = age if age < window_days else window_days
    return (
        recent + RATE_DISCOUNT * (x - recent),
        exposure + RATE_DISCOUNT * (age - exposure),
    )


def p_quiet_if_alive(
    params: RiskParams, repeat_days: float, age_days: float, horizon_days: float
) -> float:
    """Probability that an alive user has no active day in the next ``horizon_days``."""
    x = repeat_days if repeat_days > 0 else 0.0
    age = age_days if age_days > 0.0 else 0.0
    horizon = horizon_days if horizon_days > 0.0 else 0.0
    shape = params.r + x
    return math.exp(shape * (math.log(params.alpha + age) - math.log(params.alpha + age + horizon)))


def risk_not_active(
    params: RiskParams,
    active_days: int,
    last_day_age: float,
    age_days: float,
    horizon_days: float,
    recent_repeat_days: int | None = None,
    window_days: float = 28.0,
) -> float:
    """P(no active day within ``horizon_days``) for a user with ``active_days`` so far.

    ``last_day_age``: days from the first to the last activity (t_x);
    ``age_days``: days from the first activity to now (T);
    ``recent_repeat_days``: repeat active days within the last ``window_days``
    (``None``: no discount, plain MBG/NBD).
    """
    repeat = active_days - 1 if active_days > 1 else 0
    alive = p_alive(params, repeat, last_day_age, age_days)
    if recent_repeat_days is None:
        rate_x, rate_age = float(repeat), age_days
    else:
        rate_x, rate_age = rate_evidence(repeat, age_days, recent_repeat_days, window_days)
    active_if_alive = 1.0 - p_quiet_if_alive(params, rate_x, rate_age, horizon_days)
    risk = 1.0 - alive * active_if_alive
    return round(1.0 if risk > 1.0 else risk if risk > 0.0 else 0.0, 6)


def expected_active_days(params: RiskParams, active_days: int, age_days: float) -> float:
    """The posterior mean rate of active days per day of an alive user (for reasons)."""
    return (params.r + max(active_days - 1, 0)) / (params.alpha + max(age_days, 0.0))
