"""The MBG/NBD risk model: shape, one-day users, shrinkage, fitting, calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize  # type: ignore[import-untyped]

from agents.offline.evaluate import stress_history
from agents.offline.fit import Summary, fit, log_likelihood, params_document, summarise
from agents.offline.replay import run_history
from streams.model_settings import model_config
from streams.risk_params import load_params
from streams.settings import load_settings
from tables.errors import ConfigurationError
from tables.model import ModelConfig, ModelEvent
from tables.risk import (
    DEFAULT_PARAMS,
    RATE_DISCOUNT,
    RiskParams,
    p_alive,
    rate_evidence,
    risk_not_active,
)
from tables.state import DAY_WINDOW
from tables.step import step_event
from tables.thresholds import ThresholdPolicy
from tables.user_risk import recent_repeat_days, risk_at

PARAMS = RiskParams(r=0.8, alpha=4.0, a=0.6, b=5.0)


@settings(max_examples=300, deadline=None)
@given(
    active_days=st.integers(1, 500),
    span=st.floats(0, 400),
    quiet=st.floats(0, 400),
    more_quiet=st.floats(0, 100),
    horizon=st.floats(0.1, 120),
)
def test_risk_is_a_probability_that_grows_with_silence(
    active_days: int, span: float, quiet: float, more_quiet: float, horizon: float
) -> None:
    risk = risk_not_active(PARAMS, active_days, span, span + quiet, horizon)
    later = risk_not_active(PARAMS, active_days, span, span + quiet + more_quiet, horizon)
    assert 0.0 <= risk <= 1.0
    assert later >= risk - 1e-6


def test_a_one_day_user_is_not_alive_forever() -> None:
    # Plain BG/NBD would keep P(alive) = 1 for x = 0; MBG/NBD lets it fall.
    alive = [p_alive(PARAMS, 0, 0.0, age) for age in (0.0, 7.0, 30.0, 180.0)]
    assert alive[0] < 1.0
    assert alive == sorted(alive, reverse=True)
    assert alive[-1] < 0.5


def test_the_same_silence_is_more_alarming_for_a_frequent_user() -> None:
    # Both quiet for 10 days after 60 days of history.
    frequent = risk_not_active(PARAMS, 50, 60.0, 70.0, 30.0)
    rare = risk_not_active(PARAMS, 3, 60.0, 70.0, 30.0)
    assert frequent > rare


def test_little_history_stays_near_the_population() -> None:
    # Shrinkage: a user seen on 2 days looks like the population, one seen on 60 like itself.
    new = risk_not_active(PARAMS, 2, 1.0, 2.0, 30.0)
    population = risk_not_active(PARAMS, 1, 0.0, 0.0, 30.0)
    regular = risk_not_active(PARAMS, 60, 59.0, 60.0, 30.0)
    assert abs(new - population) < 0.2
    assert regular < 0.05 < population


def test_parameters_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RiskParams(r=0.0)
    with pytest.raises(ValueError):
        RiskParams(alpha=float("nan"))


def simulate_mbg_nbd(params: RiskParams, users: int, days: float, seed: int) -> Summary:
    """Users drawn from the model itself: Poisson active days, dropout after each one."""
    rng = np.random.default_rng(seed)
    rates = rng.gamma(params.r, 1 / params.alpha, users)
    dropouts = rng.beta(params.a, params.b, users)
    x = np.zeros(users)
    t_x = np.zeros(users)
    for user in range(users):
        t = 0.0
        while rng.random() >= dropouts[user]:  # survives the last active day
            t += rng.exponential(1 / rates[user])
            if t > days:
                break
            x[user] += 1
            t_x[user] = t
    return Summary(x=x, t_x=t_x, age=np.full(users, days))


def test_fit_recovers_the_parameters_of_data_drawn_from_the_model() -> None:
    truth = RiskParams(r=0.9, alpha=6.0, a=0.7, b=3.0)
    result = fit(simulate_mbg_nbd(truth, 4_000, 120.0, seed=3), 86_400_000, 0)
    assert result.converged
    fitted = result.params
    assert fitted.r == pytest.approx(truth.r, rel=0.2)
    assert fitted.alpha == pytest.approx(truth.alpha, rel=0.3)
    assert fitted.a / (fitted.a + fitted.b) == pytest.approx(truth.a / (truth.a + truth.b), rel=0.2)
    # The fit is at least as likely as the truth on its own data.
    data = simulate_mbg_nbd(truth, 4_000, 120.0, seed=3)
    assert log_likelihood(fitted, data).sum() >= log_likelihood(truth, data).sum() - 1e-6


def test_risk_is_calibrated_on_data_drawn_from_the_model() -> None:
    truth = RiskParams(r=0.9, alpha=6.0, a=0.7, b=3.0)
    rng = np.random.default_rng(5)
    users, history, horizon = 3_000, 90.0, 30.0
    predicted, observed = [], []
    for _ in range(users):
        rate = rng.gamma(truth.r, 1 / truth.alpha)
        dropout = rng.beta(truth.a, truth.b)
        days, t, alive = [0.0], 0.0, rng.random() >= dropout
        while alive:
            t += rng.exponential(1 / rate)
            if t > history + horizon:
                break
            days.append(t)
            alive = rng.random() >= dropout
        before = [d for d in days if d <= history]
        predicted.append(risk_not_active(truth, len(before), before[-1], history, horizon))
        observed.append(0 if any(history < d <= history + horizon for d in days) else 1)
    assert abs(np.mean(predicted) - np.mean(observed)) < 0.02
    bins = np.digitize(predicted, [0.2, 0.5, 0.8])
    for b in range(4):
        mask = bins == b
        if mask.sum() > 100:
            assert (
                abs(np.mean(np.array(predicted)[mask]) - np.mean(np.array(observed)[mask])) < 0.06
            )


def test_parameter_file_round_trips_and_rescales_alpha_to_the_day_length(tmp_path: Path) -> None:
    result = fit(simulate_mbg_nbd(DEFAULT_PARAMS, 500, 60.0, seed=1), 86_400_000, 123)
    path = tmp_path / "params.json"
    path.write_text(json.dumps(params_document(result)))
    same = load_params(path, 86_400_000)
    assert same.r == pytest.approx(result.params.r)
    assert load_params(path, 1_000).alpha == pytest.approx(result.params.alpha * 86_400)
    path.write_text('{"model": "other"}')
    with pytest.raises(ConfigurationError):
        load_params(path, 1_000)


def test_the_fit_finds_the_best_basin_on_a_history_unlike_the_model(tmp_path: Path) -> None:
    """Many one-time users next to loyal ones: the likelihood has separate basins in
    the dropout parameters; no local search from a grid of starts does better."""
    day_ms, start_ms = 86_400_000, 1_735_689_600_000
    cutoff_ms = start_ms + 90 * day_ms
    path = tmp_path / "stress.jsonl"
    path.write_text("\n".join(stress_history(1_500, 120, 2, start_ms, day_ms)) + "\n")
    config = model_config(load_settings(holdout_salt="salt"))
    states = list(run_history(path, cutoff_ms, config, progress=False).store.states.values())
    data = summarise(states, cutoff_ms, day_ms)
    result = fit(data, day_ms, cutoff_ms)

    def negative(log_params: np.ndarray) -> float:
        r, alpha, a, b = (float(v) for v in np.exp(np.clip(log_params, -12, 12)))
        return -float(log_likelihood(RiskParams(r=r, alpha=alpha, a=a, b=b), data).sum())

    grid = [
        (r, alpha, a, b)
        for r in (0.4, 2.0)
        for alpha in (2.0, 6.0)
        for a, b in ((0.2, 0.3), (3.0, 30.0))
    ]
    best = min(optimize.minimize(negative, np.log(start), method="L-BFGS-B").fun for start in grid)
    assert result.log_likelihood >= -best - 1.0


def test_days_before_the_window_weigh_less_in_the_rate() -> None:
    # everything inside the window: plain MBG/NBD
    assert rate_evidence(5, 20.0, 5, 28.0) == (5.0, 20.0)
    x_rate, t_rate = rate_evidence(40, 100.0, 4, 28.0)
    assert (x_rate, t_rate) == (4 + RATE_DISCOUNT * 36, 28 + RATE_DISCOUNT * 72)
    # recent figures outside 0..x are clamped
    assert rate_evidence(3, 50.0, 9, 28.0)[0] == 3.0
    assert rate_evidence(3, 50.0, -1, 28.0)[0] == RATE_DISCOUNT * 3


def test_a_fading_user_is_riskier_than_a_steady_one_with_the_same_history() -> None:
    # 40 repeat days over 100 days, last seen 3 days ago; steady users had ~11 of
    # them in the last 28 days, a fading one 2, a rising one 25.
    args = (PARAMS, 41, 97.0, 100.0, 30.0)
    steady = risk_not_active(*args, recent_repeat_days=11)
    fading = risk_not_active(*args, recent_repeat_days=2)
    rising = risk_not_active(*args, recent_repeat_days=25)
    assert fading > steady > rising
    assert risk_not_active(*args) == risk_not_active(*args, recent_repeat_days=None)


@settings(max_examples=200, deadline=None)
@given(
    days=st.lists(st.integers(0, 200), min_size=1, max_size=60),
    now_after=st.integers(0, 60),
)
def test_recent_repeat_days_counts_the_state_window(days: list[int], now_after: int) -> None:
    day_ms = 1_000
    config = ModelConfig(
        policy=ThresholdPolicy(defaults_ms=(7_000, 14_000, 30_000), min_ms=1_000, max_ms=90_000),
        lateness_ms=0,
        day_ms=day_ms,
        horizon_ms=30_000,
        holdout_salt="salt",
    )
    state = None
    for n, day in enumerate(sorted(days)):
        event = ModelEvent("u", n, "visit", day * day_ms + 10, day * day_ms + 10)
        state = step_event(state, event, config).state
    assert state is not None
    now_day = max(days) + now_after
    window = {d for d in days if now_day - DAY_WINDOW < d <= now_day}
    expected = len(window) - (1 if min(days) in window else 0)
    assert recent_repeat_days(state, now_day * day_ms + 500, day_ms) == expected


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 40_000), min_size=1, max_size=40),
    after=st.integers(-5_000, 200_000),
    horizon_days=st.integers(1, 120),
    params=st.builds(
        RiskParams,
        r=st.floats(0.01, 20),
        alpha=st.floats(0.01, 200),
        a=st.floats(0.01, 20),
        b=st.floats(0.01, 50),
    ),
)
def test_risk_at_is_exactly_the_composed_model(
    gaps: list[int], after: int, horizon_days: int, params: RiskParams
) -> None:
    """``risk_at`` is written out in one body for speed: the same float as
    ``risk_not_active`` fed the state's figures, for any history and moment
    (before the last event too: it clamps to ``last_seen``)."""
    day_ms = 1_000
    config = ModelConfig(
        policy=ThresholdPolicy(defaults_ms=(7_000, 14_000, 30_000), min_ms=1_000, max_ms=90_000),
        lateness_ms=0,
        day_ms=day_ms,
        horizon_ms=horizon_days * day_ms,
        holdout_salt="salt",
        risk=params,
    )
    state = None
    ts_ms = 1_700_000_000_000
    for n, gap in enumerate(gaps):
        ts_ms += gap
        state = step_event(state, ModelEvent("u", n, "visit", ts_ms, ts_ms), config).state
    assert state is not None
    at_ms = state.last_seen_ms + after
    clamped_ms = max(at_ms, state.last_seen_ms)
    composed = risk_not_active(
        params,
        state.active_days,
        (state.last_seen_ms - state.first_seen_ms) / day_ms,
        (clamped_ms - state.first_seen_ms) / day_ms,
        horizon_days,
        recent_repeat_days(state, clamped_ms, day_ms),
        DAY_WINDOW,
    )
    assert risk_at(state, at_ms, config) == composed
