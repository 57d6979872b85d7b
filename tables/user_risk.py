"""A user's risk as of an instant: the MBG/NBD score of the state's figures, or the
learned model's score when the configuration carries one."""

from __future__ import annotations

import math

from tables.learned_risk import LearnedRisk, features, learned_risk
from tables.model import ModelConfig
from tables.risk import MAX_EXP, RATE_DISCOUNT, RiskParams
from tables.state import DAY_WINDOW, NO_DAY, UserState


def risk_at(state: UserState, at_ms: int, config: ModelConfig) -> float:
    """P(no active day within the horizon) as of ``at_ms``, rounded to 6 decimals
    (see ``tables.risk``).

    ``risk_not_active`` with the state's figures, written out in one body: it
    runs for every status record and Redis write (two per changed user), and
    the composed form's five calls took an eighth of its time (2.3 -> 2.0 µs
    per call on the bench's states). The operations are the same, in the same
    order, so the result is the same float (``tests/unit/test_risk.py``
    compares them). With a learned model in the config, its score instead: the
    learned model's features (``tables.learned_risk``) include this MBG/NBD risk
    under the parameters and horizon it was fitted with."""
    learned = config.learned
    if learned is not None:
        mbg = mbg_nbd_risk(state, at_ms, learned.mbg, learned.day_ms, learned.horizon_ms)
        return learned_risk(learned, state, at_ms, mbg)
    return mbg_nbd_risk(state, at_ms, config.risk, config.day_ms, config.horizon_ms)


def learned_features(state: UserState, at_ms: int, learned: LearnedRisk) -> list[float]:
    """The features the learned model scores (``engagement fit`` learns from these)."""
    mbg = mbg_nbd_risk(state, at_ms, learned.mbg, learned.day_ms, learned.horizon_ms)
    return features(state, at_ms, learned.day_ms, learned.horizon_ms, mbg)


def mbg_nbd_risk(
    state: UserState, at_ms: int, params: RiskParams, day: int, horizon_ms: int
) -> float:
    """The MBG/NBD risk with the discounted rate (``tables.risk``), rounded to 6 decimals."""
    first_ms = state.first_seen_ms
    last_seen_ms = state.last_seen_ms
    at_ms = at_ms if at_ms > last_seen_ms else last_seen_ms
    active_days = state.active_days
    last_day_age = (last_seen_ms - first_ms) / day
    age_days = (at_ms - first_ms) / day
    horizon_days = horizon_ms / day
    # risk_not_active: repeat days; P(alive) from log_odds_dropped
    repeat = active_days - 1 if active_days > 1 else 0
    last = last_day_age if last_day_age > 0.0 else 0.0
    age = age_days if age_days > last else last
    r = params.r
    alpha = params.alpha
    log_odds = (
        math.log(params.a)
        - math.log(params.b + repeat)
        + (r + repeat) * (math.log(alpha + age) - math.log(alpha + last))
    )
    alive = 1.0 / (1.0 + math.exp(log_odds if log_odds < MAX_EXP else MAX_EXP))
    # rate_evidence: days and exposure before the window discounted
    exposed = age_days if age_days > 0.0 else 0.0
    recent = recent_repeat_days(state, at_ms, day)
    recent = recent if recent < repeat else repeat
    recent = recent if recent > 0 else 0
    window = exposed if exposed < DAY_WINDOW else DAY_WINDOW
    rate_x = recent + RATE_DISCOUNT * (repeat - recent)
    rate_age = window + RATE_DISCOUNT * (exposed - window)
    # p_quiet_if_alive
    x = rate_x if rate_x > 0 else 0.0
    rate_age = rate_age if rate_age > 0.0 else 0.0
    horizon = horizon_days if horizon_days > 0.0 else 0.0
    quiet = math.exp((r + x) * (math.log(alpha + rate_age) - math.log(alpha + rate_age + horizon)))
    risk = 1.0 - alive * (1.0 - quiet)
    return round(1.0 if risk > 1.0 else risk if risk > 0.0 else 0.0, 6)


def recent_repeat_days(state: UserState, at_ms: int, day_ms: int) -> int:
    """Active days within the ``DAY_WINDOW`` days ending on ``at_ms``'s day, the first
    active day not counted (a repeat day is one after the first)."""
    now_day = at_ms // day_ms
    window = DAY_WINDOW - (now_day - state.newest_day)
    if state.newest_day == NO_DAY or window <= 0:
        return 0
    counts = state.day_counts[:window]
    days = len(counts) - counts.count(0)
    if state.first_seen_ms // day_ms > now_day - DAY_WINDOW:
        days -= 1
    return days if days > 0 else 0
