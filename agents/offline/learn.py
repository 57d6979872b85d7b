"""``engagement fit``: learn the risk model from a history by backtesting.

Up to ``--cutoff`` only: the history is replayed with the worker's engine
to instants ``cutoff - k·STEP`` (k = 1, 2, …); at each instant every user's
``UserState`` gives the features of ``tables.learned_risk`` and the label is
whether the user had no event in the following horizon (the instants whose
horizon ends after the cutoff are not used). Per horizon asked:

1. the newest usable instant is held out; a logistic regression with an L2
   penalty is fitted on the older instants for each strength in
   ``L2_GRID``, and the strength with the lowest log loss on the held-out
   instant is kept (the tuning split). Rows count less the older their
   instant (half as much every ``HALF_LIFE_DAYS``), so the fit leans on the
   behaviour nearest the cutoff;
2. its reliability on the held-out instant (predicted against observed per
   tenth of probability, and the expected calibration error) is written to
   the artifact, so the calibration of each horizon is measured on data
   the weights did not see;
3. the weights are fitted again on every instant with that strength (the
   held-out instant the newest, at full weight). Each horizon has its own
   labels and fit, so its probability is calibrated for that horizon.

The MBG/NBD parameters behind one feature are fitted on the states at the
cutoff (``agents.offline.fit``). The artifact is JSON; the worker loads it
from ``ENGAGEMENT_RISK_PARAMS`` (``streams.risk_params``) and refuses a
horizon it was not fitted for.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
from numpy.typing import NDArray
from scipy import optimize  # type: ignore[import-untyped]

from agents.offline.evaluate import event_times, log_loss, reliability, roc_auc
from agents.offline.fit import fit, summarise
from agents.offline.replay import run_history
from streams.risk_params import LEARNED, version_of
from streams.validate import DEFAULT_EVENT_RULES, EventRules
from tables.errors import ConfigurationError
from tables.learned_risk import FEATURES, LearnedRisk
from tables.model import ModelConfig
from tables.risk import RiskParams
from tables.state import UserState
from tables.user_risk import learned_features

STEP_DAYS: Final = 2
INSTANTS: Final = 10  # training instants per horizon, the held-out one included
L2_GRID: Final = (1e-3, 1e-2, 1e-1, 1.0)
HALF_LIFE_DAYS: Final = 6.0  # the weight of an instant's rows halves with each 6 days of age
Floats = NDArray[np.float64]
Labels = NDArray[np.int64]


def fit_weights(x: Floats, y: Labels, l2: float, row_weights: Floats | None = None) -> Floats:
    """Logistic regression weights (column 0 the bias, not penalised), by L-BFGS-B on
    standardised features; ``row_weights`` (default: all equal) weigh the rows' losses."""
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    scale[0] = 1.0
    centre = x.mean(axis=0)
    centre[0] = 0.0
    z_x = (x - centre) / scale
    z_x[:, 0] = 1.0
    share = np.ones(len(y)) if row_weights is None else row_weights
    share = share / float(share.sum())
    penalty = np.full(x.shape[1], l2)
    penalty[0] = 0.0

    def loss(weights: Floats) -> tuple[float, Floats]:
        z = z_x @ weights
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))
        value = float(np.sum(share * (np.logaddexp(0.0, z) - y * z)))
        value += 0.5 * float(np.sum(penalty * weights * weights))
        grad: Floats = z_x.T @ (share * (p - y)) + penalty * weights
        return value, grad

    start = np.zeros(x.shape[1])
    result = optimize.minimize(loss, start, jac=True, method="L-BFGS-B")
    standard: Floats = result.x
    raw: Floats = standard / scale
    raw[0] = standard[0] - float(np.sum(standard[1:] * centre[1:] / scale[1:]))
    return raw


def age_weights(age_ms: int, day_ms: int, rows: int) -> Floats:
    """The weight of each of ``rows`` rows of an instant ``age_ms`` older than the newest."""
    return np.full(rows, 0.5 ** (age_ms / day_ms / HALF_LIFE_DAYS))


def predict(weights: Floats, x: Floats) -> Floats:
    out: Floats = 1.0 / (1.0 + np.exp(-np.clip(x @ weights, -700, 700)))
    return out


def expected_calibration_error(bins: list[dict[str, float]]) -> float:
    total = sum(b["count"] for b in bins)
    return sum(b["count"] * abs(b["predicted"] - b["observed"]) for b in bins) / max(total, 1)


class Backtest(msgspec.Struct):
    """The states of every user at each instant, and each user's event times."""

    states: dict[int, dict[str, UserState]]
    times: dict[str, list[int]]


def backtest_states(
    events: Path, instants: list[int], config: ModelConfig, rules: EventRules
) -> Backtest:
    times: dict[str, list[int]] = defaultdict(list)
    for user, ts in event_times(events, rules):
        times[user].append(ts)
    states = {
        at: dict(run_history(events, at, config, progress=False, rules=rules).store.states)
        for at in instants
    }
    return Backtest(states, {user: sorted(ts) for user, ts in times.items()})


def quiet_after(times: list[int], start_ms: int, end_ms: int) -> int:
    """1 when no time lies in ``(start_ms, end_ms]``."""
    return 0 if any(start_ms < ts <= end_ms for ts in times) else 1


def rows_at(
    backtest: Backtest, at_ms: int, horizon_ms: int, day_ms: int, mbg: RiskParams
) -> tuple[Floats, Labels]:
    """Features (as the worker computes them) and labels of every user at ``at_ms``."""
    template = LearnedRisk("", horizon_ms, day_ms, (0.0,) * len(FEATURES), mbg)
    users = sorted(backtest.states[at_ms])
    x = np.array(
        [learned_features(backtest.states[at_ms][u], at_ms, template) for u in users],
        dtype=np.float64,
    ).reshape(len(users), len(FEATURES))
    y = np.array(
        [quiet_after(backtest.times[u], at_ms, at_ms + horizon_ms) for u in users], dtype=np.int64
    )
    return x, y


def fit_horizon(
    backtest: Backtest, instants: list[int], horizon_ms: int, day_ms: int, mbg: RiskParams
) -> dict[str, Any]:
    """One horizon's weights, tuned and measured as the module docstring says."""
    held_out, *older = instants
    if not older:
        raise ConfigurationError(
            f"horizon {horizon_ms} ms: the history before the cutoff is too short to backtest"
        )
    parts = [rows_at(backtest, at, horizon_ms, day_ms, mbg) for at in older]
    x_train = np.vstack([x for x, _y in parts])
    y_train = np.concatenate([y for _x, y in parts])
    x_valid, y_valid = rows_at(backtest, held_out, horizon_ms, day_ms, mbg)
    if len(set(y_train.tolist())) < 2:
        raise ConfigurationError(f"horizon {horizon_ms} ms: every backtest label is the same")
    w_train = np.concatenate(
        [
            age_weights(older[0] - at, day_ms, len(y))
            for at, (_x, y) in zip(older, parts, strict=True)
        ]
    )
    w_all = np.concatenate(
        [age_weights(0, day_ms, len(y_valid))]
        + [
            age_weights(held_out - at, day_ms, len(y))
            for at, (_x, y) in zip(older, parts, strict=True)
        ]
    )
    losses = {
        l2: log_loss(y_valid, predict(fit_weights(x_train, y_train, l2, w_train), x_valid))
        for l2 in L2_GRID
    }
    l2 = min(losses, key=lambda choice: losses[choice])
    valid_p = predict(fit_weights(x_train, y_train, l2, w_train), x_valid)
    bins = reliability(y_valid, valid_p)
    x_all = np.vstack([x_valid, x_train])
    weights = fit_weights(x_all, np.concatenate([y_valid, y_train]), l2, w_all)
    return {
        "horizon_ms": horizon_ms,
        "weights": [float(w) for w in weights],
        "l2": l2,
        "half_life_days": HALF_LIFE_DAYS,
        "instants_ms": instants,
        "rows": int(len(y_train) + len(y_valid)),
        "held_out": {
            "at_ms": held_out,
            "users": len(y_valid),
            "roc_auc": roc_auc(y_valid, valid_p),
            "brier": float(np.mean((valid_p - y_valid) ** 2)),
            "log_loss": losses[l2],
            "expected_calibration_error": expected_calibration_error(bins),
            "reliability": bins,
        },
    }


def instants_for(cutoff_ms: int, horizon_ms: int, day_ms: int, first_ms: int) -> list[int]:
    """Backtest instants of one horizon, newest first: their horizon ends by the cutoff."""
    step = STEP_DAYS * day_ms
    newest = cutoff_ms - horizon_ms
    return [newest - k * step for k in range(INSTANTS) if newest - k * step > first_ms + step]


def learn(
    events: Path,
    cutoff_ms: int,
    horizons_ms: list[int],
    config: ModelConfig,
    rules: EventRules = DEFAULT_EVENT_RULES,
) -> dict[str, Any]:
    """The artifact (a JSON document) learned from ``events`` up to ``cutoff_ms``."""
    if not horizons_ms:
        raise ConfigurationError("no horizon to fit")
    day_ms = config.day_ms
    at_cutoff = run_history(events, cutoff_ms, config, progress=False, rules=rules).store.states
    if not at_cutoff:
        raise ConfigurationError("no users before the cutoff: nothing to fit")
    mbg = fit(summarise(list(at_cutoff.values()), cutoff_ms, day_ms), day_ms, cutoff_ms).params
    first_ms = min(state.first_seen_ms for state in at_cutoff.values())
    per_horizon = {h: instants_for(cutoff_ms, h, day_ms, first_ms) for h in horizons_ms}
    for horizon_ms, instants in per_horizon.items():
        if len(instants) < 2:
            raise ConfigurationError(
                f"horizon {horizon_ms} ms: the history before the cutoff is too short to backtest"
                f" (two instants {STEP_DAYS} days apart, each a horizon before the cutoff)"
            )
    every_instant = sorted({at for instants in per_horizon.values() for at in instants})
    backtest = backtest_states(events, every_instant, config, rules)
    document: dict[str, Any] = {
        "model": LEARNED,
        "features": list(FEATURES),
        "day_ms": day_ms,
        "cutoff_ms": cutoff_ms,
        "users": len(at_cutoff),
        "mbg_nbd": {**msgspec.to_builtins(mbg), "day_ms": day_ms},
        "horizons": [
            fit_horizon(backtest, per_horizon[h], h, day_ms, mbg) for h in sorted(set(horizons_ms))
        ],
    }
    document["version"] = version_of(document)
    return document


def write_model(path: Path, document: dict[str, Any]) -> None:
    """The artifact as JSON; an undefined figure (an AUC with one class) as null."""
    cleaned = json.loads(json.dumps(document), parse_constant=lambda _constant: None)
    path.write_text(json.dumps(cleaned, indent=2, sort_keys=True) + "\n")
