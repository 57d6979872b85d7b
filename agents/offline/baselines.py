"""The baselines ``engagement evaluate`` compares the risk score with, sharing no code with it.

They read the history themselves (``json`` per record: ``user_id`` and an
integer ``ts``; a CSV or Parquet history comes as JSON objects through
``agents.offline.history_formats``, the format conversion only), not through
the engine's decoder, state or model, and are
fitted by the libraries of the ``eval`` extra:

- ``days_since_last_event``: recency as a score (ranking only);
- ``bg_nbd``: BG/NBD (Fader, Hardie & Lee 2005) fitted by ``lifetimes`` on
  the users' repeat active days, the age of their last active day and their
  age at the split; P(no active day within the horizon) = 1 - P(alive) ·
  (1 - ((alpha + T) / (alpha + T + h))^(r + x)) with ``lifetimes``'
  P(alive) and parameters;
- ``logistic_rft``: ``sklearn.linear_model.LogisticRegression`` on
  log recency, log frequency (active days) and log tenure, trained on the
  split one horizon earlier (features then, labels in the horizon after).

A baseline whose library is missing raises ``BaselineUnavailable``; the
evaluation reports it as not run.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from agents.offline.history_formats import history_lines

Floats = NDArray[np.float64]
PENALIZERS: Final = (0.0, 0.001, 0.01, 0.1)  # lifetimes' advice when the fit does not converge


class BaselineUnavailable(Exception):
    """A baseline could not run (its library is not installed, or its fit failed)."""


class History:
    """Each user's event times (ms), sorted, read straight from the history's records."""

    def __init__(self, path: Path) -> None:
        times: dict[str, list[int]] = defaultdict(list)
        with history_lines(path) as lines:  # JSON Lines, CSV or Parquet
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(record, dict):
                    continue
                user, ts = record.get("user_id"), record.get("ts")
                if isinstance(user, str) and isinstance(ts, int) and not isinstance(ts, bool):
                    times[user].append(ts)
        self.times = {user: sorted(values) for user, values in times.items()}

    def users_at(self, at_ms: int) -> list[str]:
        return sorted(user for user, values in self.times.items() if values[0] <= at_ms)

    def quiet(self, users: list[str], at_ms: int, horizon_ms: int) -> NDArray[np.int64]:
        """1 for a user with no event in ``(at_ms, at_ms + horizon_ms]``."""
        end_ms = at_ms + horizon_ms
        return np.array(
            [0 if any(at_ms < ts <= end_ms for ts in self.times[u]) else 1 for u in users],
            dtype=np.int64,
        )

    def summary(self, users: list[str], at_ms: int, day_ms: int) -> dict[str, Floats]:
        """Per user as of ``at_ms``: recency, active days, repeat days, t_x and age (days)."""
        recency, active, t_x, age = [], [], [], []
        for user in users:
            seen = [ts for ts in self.times[user] if ts <= at_ms]
            days = sorted({ts // day_ms for ts in seen})
            recency.append((at_ms - seen[-1]) / day_ms)
            active.append(float(len(days)))
            t_x.append(float(days[-1] - days[0]))
            age.append(max(at_ms / day_ms - days[0], float(days[-1] - days[0])))
        out = {"recency": recency, "active": active, "t_x": t_x, "age": age}
        return {name: np.array(values, dtype=np.float64) for name, values in out.items()}


def days_since_last_event(history: History, users: list[str], at_ms: int, day_ms: int) -> Floats:
    return history.summary(users, at_ms, day_ms)["recency"]


def bg_nbd(
    history: History, users: list[str], at_ms: int, horizon_ms: int, day_ms: int
) -> tuple[Floats, dict[str, Any]]:
    """P(quiet within the horizon) by BG/NBD fitted with ``lifetimes``, and its parameters."""
    try:
        from lifetimes import BetaGeoFitter  # type: ignore[import-untyped]
        from lifetimes.utils import ConvergenceError  # type: ignore[import-untyped]
    except ImportError as exc:
        missing = f"lifetimes is not installed ({exc}): pip install '.[eval]'"
        raise BaselineUnavailable(missing) from exc
    data = history.summary(users, at_ms, day_ms)
    frequency, recency, age = data["active"] - 1, data["t_x"], data["age"]
    for penalizer in PENALIZERS:
        fitter = BetaGeoFitter(penalizer_coef=penalizer)
        try:
            # the optimiser probes parameters where the likelihood overflows: noise, not news
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)
                fitter.fit(frequency, recency, age)
        except ConvergenceError:
            continue
        break
    else:
        raise BaselineUnavailable("BG/NBD did not converge with any penalizer")
    params = {name: float(fitter.params_[name]) for name in ("r", "alpha", "a", "b")}
    alive = np.asarray(fitter.conditional_probability_alive(frequency, recency, age), dtype=float)
    horizon = horizon_ms / day_ms
    r, alpha = params["r"], params["alpha"]
    quiet_if_alive = ((alpha + age) / (alpha + age + horizon)) ** (r + frequency)
    quiet: Floats = 1.0 - alive * (1.0 - quiet_if_alive)
    return quiet, {**params, "penalizer": penalizer}


def _rft(data: dict[str, Floats]) -> Floats:
    out: Floats = np.column_stack(
        [np.log1p(data["recency"]), np.log(data["active"]), np.log1p(data["age"])]
    )
    return out


def logistic_rft(
    history: History, users: list[str], at_ms: int, horizon_ms: int, day_ms: int
) -> tuple[Floats, dict[str, Any]]:
    """P(quiet within the horizon) by scikit-learn's logistic regression on recency,
    frequency and tenure, trained one horizon before ``at_ms``."""
    try:
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
    except ImportError as exc:
        missing = f"scikit-learn is not installed ({exc}): pip install '.[eval]'"
        raise BaselineUnavailable(missing) from exc
    train_at = at_ms - horizon_ms
    train_users = history.users_at(train_at)
    labels = history.quiet(train_users, train_at, horizon_ms)
    if len(set(labels.tolist())) < 2:
        raise BaselineUnavailable("one horizon before the cutoff, every label is the same")
    model = LogisticRegression(max_iter=1_000)
    model.fit(_rft(history.summary(train_users, train_at, day_ms)), labels)
    quiet_column = list(model.classes_).index(1)
    scores: Floats = model.predict_proba(_rft(history.summary(users, at_ms, day_ms)))[
        :, quiet_column
    ]
    coefficients = [float(c) for c in model.coef_[0]]
    return scores, {"trained_on": len(train_users), "coefficients": coefficients}
