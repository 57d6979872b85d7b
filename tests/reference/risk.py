"""Risk = P(no active day within the horizon), from MBG/NBD, by numeric integration.

The model of docs/MODEL.md: while alive, active days are Poisson with rate
λ ~ Gamma(r, alpha); at the first active day and after each repeat one the user
drops out with probability p ~ Beta(a, b). Given x repeat days, the last
t_x days after the first, and the user T days old, the likelihood is

    alive:   (1 - p)^(x+1) · λ^x · e^(-λT)
    dropped right after the last active day:   p · (1 - p)^x · λ^x · e^(-λ t_x)

Integrating each over the priors (Beta and Gamma functions) gives the
posterior P(alive). An alive user has no active day within h with
probability E[e^(-λh)] under the rate posterior Gamma(r + x', rate alpha + T'),
where x', T' count what lies before the last 28 days at half weight; that
expectation is integrated numerically here rather than taken in closed form.
"""

from __future__ import annotations

import math

from scipy import integrate, special

WINDOW_DAYS = 28
OLD_EVIDENCE_WEIGHT = 0.5


def p_alive(r: float, alpha: float, a: float, b: float, x: int, t_x: float, age: float) -> float:
    shape = r + x
    log_alive = special.betaln(a, b + x + 1) - shape * math.log(alpha + age)
    log_dropped = special.betaln(a + 1, b + x) - shape * math.log(alpha + t_x)
    return float(special.expit(log_alive - log_dropped))


def p_quiet_if_alive(shape: float, rate: float, horizon: float) -> float:
    """E[exp(-λ·horizon)] for λ ~ Gamma(shape, rate), integrated over λ = t²."""
    log_norm = shape * math.log(rate) - special.gammaln(shape)

    def density(t: float) -> float:  # 2t · gamma pdf(t²) · exp(-t² horizon)
        if t <= 0.0:
            return 0.0
        return 2.0 * math.exp(log_norm + (2 * shape - 1) * math.log(t) - (rate + horizon) * t * t)

    value, _error = integrate.quad(density, 0.0, math.inf, limit=200, epsabs=1e-13)
    return value


def risk(
    params: tuple[float, float, float, float],
    active_days: int,
    recent_repeat_days: int,
    last_day_age: float,
    age: float,
    horizon: float,
) -> float:
    """Risk for a user with ``active_days`` active days (all ages in days)."""
    r, alpha, a, b = params
    x = max(active_days - 1, 0)
    alive = p_alive(r, alpha, a, b, x, last_day_age, max(age, last_day_age))
    recent = min(max(recent_repeat_days, 0), x)
    recent_age = min(age, WINDOW_DAYS)
    rate_x = recent + OLD_EVIDENCE_WEIGHT * (x - recent)
    rate_age = recent_age + OLD_EVIDENCE_WEIGHT * (age - recent_age)
    quiet = p_quiet_if_alive(r + rate_x, alpha + rate_age, horizon)
    return min(1.0, max(0.0, 1.0 - alive * (1.0 - quiet)))
