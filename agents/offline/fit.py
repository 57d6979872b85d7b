"""``engagement fit``: population parameters of the risk model from a history.

Replays the history up to ``--cutoff`` with the same engine as the worker,
summarises each user as MBG/NBD sees them (``x`` repeat active days, the
last ``t_x`` days after the first, age ``T`` days at the cutoff) and finds
the parameters ``r, alpha, a, b`` (``tables.risk``) by maximum likelihood.
A weak log-normal prior around the defaults keeps the fit finite when the
data say little (e.g. no user ever dropped out); with thousands of users it
changes nothing that matters.

The likelihood has more than one basin in the dropout parameters ``a, b``:
a bell-shaped Beta (everyone drops out at a similar small rate) and a
U-shaped one (many users gone after their first day, the rest loyal). A
single local search from the defaults can stop in the worse basin (seen on
histories with many one-time users, tens of log-likelihood units below the
best), so the search starts from a few points in both basins
(``STARTS``) and polishes the best.

The parameters go to a JSON file that the worker loads from
``ENGAGEMENT_RISK_PARAMS``; ``alpha`` is stored in days of ``day_ms``, and
rescaled when the worker's day is another length. The file also holds the
population cadence (``cadence``, ``tables.population``) of the same states:
the usual gap new users' thresholds start from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special  # type: ignore[import-untyped]

from agents.offline.replay import run_history
from streams.risk_params import MODEL
from streams.validate import DEFAULT_EVENT_RULES, EventRules
from tables.errors import ConfigurationError
from tables.model import ModelConfig
from tables.population import population_cadence
from tables.risk import DEFAULT_PARAMS, RiskParams
from tables.state import UserState

PRIOR_SIGMA: Final = 3.0  # on log-parameters: weak
# (r, alpha, a, b) starting points: the defaults, U-shaped and bell-shaped dropout
STARTS: Final = (
    (DEFAULT_PARAMS.r, DEFAULT_PARAMS.alpha, DEFAULT_PARAMS.a, DEFAULT_PARAMS.b),
    (1.5, 4.0, 0.25, 0.35),
    (0.5, 3.0, 0.25, 0.35),
    (1.5, 4.0, 1.0, 10.0),
    (0.3, 1.5, 1.0, 20.0),
    (1.0, 3.0, 2.0, 2.0),
)
Floats = NDArray[np.float64]


class Summary(msgspec.Struct, frozen=True):
    """Per-user figures the model needs, as arrays (one entry per user)."""

    x: Floats
    t_x: Floats
    age: Floats

    @property
    def users(self) -> int:
        return len(self.x)


class FitResult(msgspec.Struct, frozen=True):
    params: RiskParams
    users: int
    log_likelihood: float
    converged: bool
    day_ms: int
    cutoff_ms: int
    cadence: dict[str, int] = msgspec.field(default_factory=dict)


def summarise(states: list[UserState], at_ms: int, day_ms: int) -> Summary:
    """MBG/NBD figures of each user as of ``at_ms`` (days of ``day_ms``)."""
    x = np.array([max(s.active_days - 1, 0) for s in states], dtype=np.float64)
    first = np.array([s.first_seen_ms for s in states], dtype=np.float64)
    last = np.array([s.last_seen_ms for s in states], dtype=np.float64)
    t_x = (last - first) / day_ms
    age = np.maximum((at_ms - first) / day_ms, t_x)
    return Summary(x=x, t_x=t_x, age=age)


def log_likelihood(params: RiskParams, data: Summary) -> Floats:
    """Per-user log-likelihood of the MBG/NBD model."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x, t_x, age = data.x, data.t_x, data.age
    head = special.gammaln(r + x) - special.gammaln(r) + r * math.log(alpha)
    base = special.betaln(a, b)
    alive = special.betaln(a, b + x + 1) - base - (r + x) * np.log(alpha + age)
    dropped = special.betaln(a + 1, b + x) - base - (r + x) * np.log(alpha + t_x)
    out: Floats = head + np.logaddexp(alive, dropped)
    return out


def _prior_penalty(log_params: Floats) -> float:
    centre = np.log([DEFAULT_PARAMS.r, DEFAULT_PARAMS.alpha, DEFAULT_PARAMS.a, DEFAULT_PARAMS.b])
    return float(np.sum((log_params - centre) ** 2) / (2 * PRIOR_SIGMA**2))


def fit(data: Summary, day_ms: int, cutoff_ms: int) -> FitResult:
    """Maximum a posteriori parameters (weak prior) for ``data``."""
    if data.users == 0:
        raise ConfigurationError("no users before the cutoff: nothing to fit")

    def objective(log_params: Floats) -> float:
        r, alpha, a, b = np.exp(np.clip(log_params, -12, 12))
        params = RiskParams(r=float(r), alpha=float(alpha), a=float(a), b=float(b))
        total = float(np.sum(log_likelihood(params, data)))
        if not math.isfinite(total):
            return 1e300
        return -total + _prior_penalty(log_params)

    # a quick local search from every start, then the best one polished
    searches = [optimize.minimize(objective, np.log(start), method="L-BFGS-B") for start in STARTS]
    result = min(searches, key=lambda search: float(search.fun))
    polished = optimize.minimize(
        objective,
        result.x,
        method="Nelder-Mead",
        options={"maxiter": 4_000, "xatol": 1e-6, "fatol": 1e-6},
    )
    refined = optimize.minimize(objective, polished.x, method="L-BFGS-B")
    best = min((result, polished, refined), key=lambda search: float(search.fun))
    r, alpha, a, b = (float(v) for v in np.exp(np.clip(best.x, -12, 12)))
    params = RiskParams(r=r, alpha=alpha, a=a, b=b)
    return FitResult(
        params=params,
        users=data.users,
        log_likelihood=float(np.sum(log_likelihood(params, data))),
        converged=bool(best.success),
        day_ms=day_ms,
        cutoff_ms=cutoff_ms,
    )


def fit_history(
    events: Path, cutoff_ms: int, config: ModelConfig, rules: EventRules = DEFAULT_EVENT_RULES
) -> FitResult:
    """Replay ``events`` up to the cutoff and fit the population parameters."""
    run = run_history(events, cutoff_ms, config, progress=False, rules=rules)
    states = list(run.store.states.values())
    result = fit(summarise(states, cutoff_ms, config.day_ms), config.day_ms, cutoff_ms)
    cadence = population_cadence(states, config.policy.user_min_active_days)
    return msgspec.structs.replace(result, cadence=cadence)


def history_cadence(
    events: Path, cutoff_ms: int, config: ModelConfig, rules: EventRules = DEFAULT_EVENT_RULES
) -> dict[str, int]:
    """The population cadence (``tables.population``) of the users up to the cutoff."""
    run = run_history(events, cutoff_ms, config, progress=False, rules=rules)
    return population_cadence(run.store.states.values(), config.policy.user_min_active_days)


def params_document(result: FitResult) -> dict[str, Any]:
    return {
        "model": MODEL,
        "r": result.params.r,
        "alpha": result.params.alpha,
        "a": result.params.a,
        "b": result.params.b,
        "day_ms": result.day_ms,
        "users": result.users,
        "log_likelihood": result.log_likelihood,
        "converged": result.converged,
        "cutoff_ms": result.cutoff_ms,
        "cadence": result.cadence,
    }


def write_params(path: Path, result: FitResult) -> None:
    path.write_text(json.dumps(params_document(result), indent=2, sort_keys=True) + "\n")
