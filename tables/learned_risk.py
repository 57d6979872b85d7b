"""The learned risk score: a logistic model per horizon over features of the live state.

``engagement fit`` (``agents.offline.learn``) learns the weights by
backtesting a history: the state of every user at earlier instants, the
label whether the user had no event in the horizon after each. Scoring here
is plain Python over the ``UserState`` the worker keeps, so the worker,
``engagement replay`` and ``engagement evaluate`` compute the same number
from the same state (``tables.user_risk.risk_at`` calls ``learned_risk``).

The features (``FEATURES``), each from the state and the instant only:
recency and tenure (log days), active days (log), the share of active days
in the last 7 and 28 days, recency against the user's usual gap, one-day
users, events per active day (log), the current streak (log), the MBG/NBD
model's log-odds (``tables.risk``, with the population parameters fitted
on the same history), the events of the last 7 and 28 days (log, from the
day counters), interactions (recency by one-day user, recency by active
days, active days by tenure), the active-day rate over the tenure (log),
recency as a share of the horizon (capped at 2), and recency against the
usual gap falling back to log recency for a user without a gap yet. The
learned model can keep, reweigh or drop what the probabilistic model says.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec

from tables.risk import RiskParams
from tables.state import DAY_WINDOW, NO_DAY, UserState

FEATURES: Final = (
    "bias",
    "log_recency_days",
    "log_tenure_days",
    "log_active_days",
    "active_share_7d",
    "active_share_28d",
    "log_recency_vs_usual_gap",
    "single_active_day",
    "log_events_per_active_day",
    "log_streak_days",
    "mbg_nbd_log_odds",
    "log_events_7d",
    "log_events_28d",
    "log_recency_x_single_active_day",
    "log_recency_x_log_active_days",
    "log_active_days_x_log_tenure",
    "log_active_day_rate",
    "recency_share_of_horizon",
    "log_recency_vs_usual_gap_or_recency",
)
_MAX_HORIZON_SHARE: Final = 2.0
_CLIP: Final = 1e-6
_MAX_Z: Final = 700.0


class LearnedRisk(msgspec.Struct, frozen=True):
    """One horizon's fitted weights (in ``FEATURES`` order) and the MBG/NBD parameters."""

    version: str
    horizon_ms: int
    day_ms: int
    weights: tuple[float, ...]
    mbg: RiskParams

    def __post_init__(self) -> None:
        if len(self.weights) != len(FEATURES):
            raise ValueError(f"{len(self.weights)} weights for {len(FEATURES)} features")
        if not all(math.isfinite(weight) for weight in self.weights):
            raise ValueError("a learned risk weight is not finite")


def active_days_within(state: UserState, now_day: int, days: int) -> int:
    """Days with an event among the ``days`` (≤ ``DAY_WINDOW``) days ending on ``now_day``."""
    window = days - (now_day - state.newest_day)
    if state.newest_day == NO_DAY or window <= 0:
        return 0
    counts = state.day_counts[: min(window, DAY_WINDOW)]
    return len(counts) - counts.count(0)


def events_within(state: UserState, now_day: int, days: int) -> int:
    """Events (as the saturating day counters hold them) among the ``days`` (≤
    ``DAY_WINDOW``) days ending on ``now_day``."""
    window = days - (now_day - state.newest_day)
    if state.newest_day == NO_DAY or window <= 0:
        return 0
    return sum(state.day_counts[: min(window, DAY_WINDOW)])


def features(
    state: UserState, at_ms: int, day_ms: int, horizon_ms: int, mbg_risk: float
) -> list[float]:
    """The feature vector of ``state`` as of ``at_ms`` (``FEATURES`` order); ``mbg_risk``
    is the MBG/NBD risk of the same state, instant and horizon (``tables.user_risk``)."""
    last_ms = state.last_seen_ms
    at_ms = at_ms if at_ms > last_ms else last_ms
    recency = (at_ms - last_ms) / day_ms
    active_days = state.active_days if state.active_days > 1 else 1
    now_day = at_ms // day_ms
    usual_gap = state.usual_gap_centidays / 100
    mbg_risk = _CLIP if mbg_risk < _CLIP else 1.0 - _CLIP if mbg_risk > 1.0 - _CLIP else mbg_risk
    events = state.events_total if state.events_total > active_days else active_days
    tenure = (at_ms - state.first_seen_ms) / day_ms
    log_recency = math.log1p(recency)
    log_tenure = math.log1p(tenure)
    log_active_days = math.log(active_days)
    single = 1.0 if active_days == 1 else 0.0
    horizon_share = recency * day_ms / horizon_ms
    return [
        1.0,
        log_recency,
        log_tenure,
        log_active_days,
        active_days_within(state, now_day, 7) / 7,
        active_days_within(state, now_day, DAY_WINDOW) / DAY_WINDOW,
        math.log1p(recency / usual_gap) if usual_gap > 0 else 0.0,
        single,
        math.log(events / active_days),
        math.log1p(state.streak_days),
        math.log(mbg_risk / (1.0 - mbg_risk)),
        math.log1p(events_within(state, now_day, 7)),
        math.log1p(events_within(state, now_day, DAY_WINDOW)),
        log_recency * single,
        log_recency * log_active_days,
        log_active_days * log_tenure,
        math.log(active_days / (1.0 + tenure)),
        horizon_share if horizon_share < _MAX_HORIZON_SHARE else _MAX_HORIZON_SHARE,
        math.log1p(recency / usual_gap) if usual_gap > 0 else log_recency,
    ]


def learned_risk(model: LearnedRisk, state: UserState, at_ms: int, mbg_risk: float) -> float:
    """P(no event within the model's horizon after ``at_ms``), rounded to 6 decimals."""
    z = 0.0
    for weight, value in zip(
        model.weights,
        features(state, at_ms, model.day_ms, model.horizon_ms, mbg_risk),
        strict=True,
    ):
        z += weight * value
    z = z if z < _MAX_Z else _MAX_Z
    z = z if z > -_MAX_Z else -_MAX_Z
    return round(1.0 / (1.0 + math.exp(-z)), 6)
