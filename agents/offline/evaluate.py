"""``engagement evaluate``: how well ``risk`` predicts real inactivity, against baselines.

Splits a history at ``--cutoff``: the model (and the risk parameters, fitted
with ``agents.offline.fit`` on the data before the cutoff unless a file is given)
sees only events up to the cutoff; a user's label is 1 when the user has no
event in ``(cutoff, cutoff + horizon]``. Every user seen before the cutoff is
scored. Reported for the engine and for baselines:

- ``risk``: the engine's probability (ROC AUC, Brier, log loss, reliability);
- ``days_since_last_event``: recency as a score (ROC AUC only);
- ``recency_logistic``: a logistic fit on recency alone (``log1p(d)``, so
  it stays monotone when it extrapolates), trained on the split one horizon earlier (features at
  ``cutoff - horizon``, labels in ``(cutoff - horizon, cutoff]``);
- ``base_rate``: the share of inactive users among the scored ones, as a
  constant forecast (the best constant there is, so a strict bar);
- precision/recall of the engine's at-risk flag (tier reached at the
  cutoff, with per-user thresholds) and of a fixed at-risk threshold.

A reliability plot (PNG) shows predicted against observed inactivity.

``stress_history`` writes a history whose generating process breaks the
model's assumptions on purpose (users keep joining, many one-time users,
rates that drift, weekly seasonality and campaign bursts, dropout by time
rather than after an active day, some churned users who come back):
``python -m agents.offline.evaluate stress-history OUT.jsonl --users N --days N``.
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
from numpy.typing import NDArray
from scipy import optimize, stats  # type: ignore[import-untyped]

from agents.offline.fit import fit, summarise
from agents.offline.history_formats import history_lines
from agents.offline.history_lines import read_lines
from agents.offline.replay import run_history
from streams.validate import DEFAULT_EVENT_RULES, EventRules
from tables.errors import ConfigurationError
from tables.model import ModelConfig, risk_at
from tables.risk import RiskParams
from tables.state import TIER_NONE, UserState

Floats = NDArray[np.float64]
RELIABILITY_BINS: Final = 10
_EPS: Final = 1e-9


def event_times(path: Path, rules: EventRules) -> Iterator[tuple[str, int]]:
    """``(user_id, ts_ms)`` of every event line a worker would accept."""
    with history_lines(path) as lines:
        for event in read_lines(lines, rules, Counter()):
            yield event.user_id, event.ts


# -- metrics -----------------------------------------------------------------


def roc_auc(labels: NDArray[np.int64], scores: Floats) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = stats.rankdata(scores)
    rank_sum = float(ranks[labels == 1].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def brier(labels: NDArray[np.int64], probabilities: Floats) -> float:
    return float(np.mean((probabilities - labels) ** 2))


def log_loss(labels: NDArray[np.int64], probabilities: Floats) -> float:
    p = np.clip(probabilities, _EPS, 1 - _EPS)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def precision_recall(labels: NDArray[np.int64], flags: NDArray[np.bool_]) -> dict[str, float]:
    flagged = int(flags.sum())
    hits = int((flags & (labels == 1)).sum())
    positives = int(labels.sum())
    return {
        "flagged": flagged,
        "precision": hits / flagged if flagged else float("nan"),
        "recall": hits / positives if positives else float("nan"),
    }


def reliability(labels: NDArray[np.int64], probabilities: Floats) -> list[dict[str, float]]:
    """Per bin of predicted probability: mean prediction, observed rate, count."""
    edges = np.linspace(0.0, 1.0, RELIABILITY_BINS + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, RELIABILITY_BINS - 1)
    out = []
    for index in range(RELIABILITY_BINS):
        mask = which == index
        count = int(mask.sum())
        if count:
            out.append(
                {
                    "low": float(edges[index]),
                    "high": float(edges[index + 1]),
                    "predicted": float(probabilities[mask].mean()),
                    "observed": float(labels[mask].mean()),
                    "count": count,
                }
            )
    return out


# -- the recency-only logistic baseline --------------------------------------


def _recency_features(days: Floats) -> Floats:
    out: Floats = np.column_stack([np.ones_like(days), np.log1p(days)])
    return out


def fit_logistic(days: Floats, labels: NDArray[np.int64]) -> Floats:
    """Coefficients of ``P(inactive) = sigmoid(w · [1, log1p(d)])``, lightly regularised."""
    features = _recency_features(days)
    scale = np.maximum(features.std(axis=0), 1.0)

    def loss(weights: Floats) -> tuple[float, Floats]:
        z = (features / scale) @ weights
        p = 1.0 / (1.0 + np.exp(-z))
        nll = float(np.sum(np.logaddexp(0.0, z) - labels * z)) + 1e-4 * float(weights @ weights)
        grad = (features / scale).T @ (p - labels) + 2e-4 * weights
        return nll, grad

    result = optimize.minimize(loss, np.zeros(features.shape[1]), jac=True, method="L-BFGS-B")
    weights: Floats = result.x / scale
    return weights


def predict_logistic(weights: Floats, days: Floats) -> Floats:
    out: Floats = 1.0 / (1.0 + np.exp(-(_recency_features(days) @ weights)))
    return out


# -- the evaluation ------------------------------------------------------------


class Evaluation(msgspec.Struct):
    """What ``engagement evaluate`` reports (``report`` is the JSON document)."""

    report: dict[str, Any]
    labels: NDArray[np.int64]
    risk: Floats
    logistic: Floats


def _states_at(
    events: Path, at_ms: int, config: ModelConfig, rules: EventRules
) -> dict[str, UserState]:
    return dict(run_history(events, at_ms, config, progress=False, rules=rules).store.states)


def _active_between(times: list[tuple[str, int]], start_ms: int, end_ms: int) -> set[str]:
    return {user for user, ts in times if start_ms < ts <= end_ms}


def _recency_days(states: list[UserState], at_ms: int, day_ms: int) -> Floats:
    return np.array([max(0, at_ms - s.last_seen_ms) / day_ms for s in states], dtype=np.float64)


def evaluate(
    events: Path,
    cutoff_ms: int,
    horizon_ms: int,
    config: ModelConfig,
    params: RiskParams | None = None,
    rules: EventRules = DEFAULT_EVENT_RULES,
) -> Evaluation:
    """Score every user seen before the cutoff and compare with what happened next."""
    config = msgspec.structs.replace(config, horizon_ms=horizon_ms)
    day_ms = config.day_ms
    times = list(event_times(events, rules))
    # Tiers and stages do not depend on the risk parameters: one replay serves both.
    states_by_user = _states_at(events, cutoff_ms, config, rules)
    if not states_by_user:
        raise ConfigurationError("no users before the cutoff: nothing to evaluate")
    users = sorted(states_by_user)
    states = [states_by_user[u] for u in users]
    fitted = None
    if params is None:
        fitted = fit(summarise(states, cutoff_ms, day_ms), day_ms, cutoff_ms)
        params = fitted.params
    config = msgspec.structs.replace(config, risk=params)
    returned = _active_between(times, cutoff_ms, cutoff_ms + horizon_ms)
    labels = np.array([0 if u in returned else 1 for u in users], dtype=np.int64)
    risk = np.array([risk_at(s, cutoff_ms, config) for s in states], dtype=np.float64)
    recency = _recency_days(states, cutoff_ms, day_ms)
    engine_flag = np.array([s.tier > TIER_NONE for s in states], dtype=np.bool_)
    fixed_days = config.policy.defaults_ms[0] / day_ms
    fixed_flag = recency >= fixed_days

    # The logistic baseline learns on the split one horizon earlier.
    earlier_ms = cutoff_ms - horizon_ms
    earlier = _states_at(events, earlier_ms, config, rules)
    earlier_users = sorted(earlier)
    if earlier_users:
        back = _active_between(times, earlier_ms, cutoff_ms)
        train_labels = np.array([0 if u in back else 1 for u in earlier_users], dtype=np.int64)
        train_days = _recency_days([earlier[u] for u in earlier_users], earlier_ms, day_ms)
        weights = fit_logistic(train_days, train_labels)
        logistic = predict_logistic(weights, recency)
    else:
        train_labels = np.zeros(0, dtype=np.int64)
        logistic = np.full(len(users), float(labels.mean()))
    base = float(labels.mean())
    last_ts = max((ts for _user, ts in times), default=cutoff_ms)
    single = np.array([s.active_days == 1 for s in states], dtype=np.bool_)

    def scores(mask: NDArray[np.bool_]) -> dict[str, Any]:
        y = labels[mask]
        if len(y) == 0:
            return {"users": 0}
        rate = float(y.mean())
        return {
            "users": len(y),
            "inactive_share": rate,
            "risk": {
                "roc_auc": roc_auc(y, risk[mask]),
                "brier": brier(y, risk[mask]),
                "log_loss": log_loss(y, risk[mask]),
                "mean": float(risk[mask].mean()),
            },
            "days_since_last_event": {"roc_auc": roc_auc(y, recency[mask])},
            "recency_logistic": {
                "roc_auc": roc_auc(y, logistic[mask]),
                "brier": brier(y, logistic[mask]),
                "log_loss": log_loss(y, logistic[mask]),
            },
            "base_rate": {"brier": rate * (1 - rate)},
        }

    everyone = np.ones(len(users), dtype=np.bool_)
    report: dict[str, Any] = {
        "cutoff_ms": cutoff_ms,
        "horizon_ms": horizon_ms,
        "horizon_complete": last_ts >= cutoff_ms + horizon_ms,
        "params": msgspec.to_builtins(params),
        "params_fitted": fitted is not None,
        "base_rate": base,
        "all": scores(everyone),
        "single_active_day": scores(single),
        "repeat_users": scores(~single),
        "at_risk_flag": {
            "engine": precision_recall(labels, engine_flag),
            f"fixed_{fixed_days:g}_days": precision_recall(labels, fixed_flag),
        },
        "reliability": reliability(labels, risk),
        "logistic_trained_on": len(train_labels),
    }
    return Evaluation(report=report, labels=labels, risk=risk, logistic=logistic)


def plot_reliability(evaluation: Evaluation, path: Path) -> Path:
    """A reliability diagram (PNG) of the engine's risk and the logistic baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    top.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    for name, values, marker in (
        ("engine risk", evaluation.risk, "o"),
        ("recency logistic", evaluation.logistic, "s"),
    ):
        bins = reliability(evaluation.labels, values)
        top.plot(
            [b["predicted"] for b in bins],
            [b["observed"] for b in bins],
            marker=marker,
            label=name,
        )
    top.set_ylabel("observed share inactive in the horizon")
    top.set_title("Reliability of P(no activity within the horizon)")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.hist(evaluation.risk, bins=RELIABILITY_BINS, range=(0, 1), color="C0")
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("users")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A short human-readable table of the main figures."""
    lines = []
    for subset in ("all", "single_active_day", "repeat_users"):
        part = report[subset]
        if not part.get("users"):
            continue
        lines.append(
            f"{subset}: users={part['users']} inactive={part['inactive_share']:.3f} "
            f"AUC risk={part['risk']['roc_auc']:.3f} "
            f"recency={part['days_since_last_event']['roc_auc']:.3f} "
            f"logistic={part['recency_logistic']['roc_auc']:.3f} | "
            f"Brier risk={part['risk']['brier']:.4f} "
            f"logistic={part['recency_logistic']['brier']:.4f} "
            f"base={part['base_rate']['brier']:.4f}"
        )
    for name, figures in report["at_risk_flag"].items():
        precision, recall = figures["precision"], figures["recall"]
        lines.append(
            f"at-risk flag {name}: flagged={figures['flagged']} "
            f"precision={precision:.3f} recall={recall:.3f}"
            if not (math.isnan(precision) or math.isnan(recall))
            else f"at-risk flag {name}: flagged={figures['flagged']}"
        )
    return lines


# -- a history that breaks the model's assumptions ---------------------------

STRESS_TYPES: Final = ("login", "view", "view", "add_to_cart", "purchase", "checkout_failed")


def stress_history(users: int, days: int, seed: int, start_ms: int, day_ms: int) -> list[str]:
    """JSON lines of a seeded population unlike MBG/NBD (see the module docstring)."""
    rng = random.Random(seed)
    burst_days = {d for start in range(10, days, 21) for d in range(start, start + 3)}
    lines: list[tuple[int, str]] = []
    for index in range(users):
        user = f"s{index:06d}"
        joined = rng.randrange(days)
        kind = rng.random()
        if kind < 0.35:  # one visit, never again
            active = [joined]
        else:
            base = rng.choice((0.7, 0.35, 0.12, 0.04)) * rng.uniform(0.5, 1.2)
            drift = rng.gauss(0.0, 0.6) / 30  # per day, log scale
            hazard = rng.uniform(0.0, 0.04)  # per calendar day, not per active day
            churn_day = joined + int(rng.expovariate(hazard)) if hazard > 0 else days
            comeback = churn_day + rng.randint(20, 60) if rng.random() < 0.1 else days
            active = [joined]
            for day in range(joined + 1, days):
                if churn_day <= day < comeback:
                    continue
                p = base * math.exp(drift * (day - joined))
                p *= 1.5 if (day + 3) % 7 >= 5 else 1.0  # weekends
                p *= 3.0 if day in burst_days else 1.0
                if rng.random() < min(p, 0.98):
                    active.append(day)
        for day in active:
            for number in range(1 + int(rng.expovariate(1.0))):
                ts = start_ms + day * day_ms + rng.randrange(day_ms)
                event = {
                    "event_id": f"{user}-{day}-{number}",
                    "user_id": user,
                    "type": rng.choice(STRESS_TYPES),
                    "ts": ts,
                }
                lines.append((ts, json.dumps(event, separators=(",", ":"))))
    lines.sort()
    return [line for _ts, line in lines]


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m agents.offline.evaluate")
    sub = parser.add_subparsers(dest="command", required=True)
    stress = sub.add_parser("stress-history", help="write a history that breaks MBG/NBD")
    stress.add_argument("out", type=Path)
    stress.add_argument("--users", type=int, default=5_000)
    stress.add_argument("--days", type=int, default=180)
    stress.add_argument("--seed", type=int, default=11)
    stress.add_argument("--start-ms", type=int, default=1_735_689_600_000)  # 2025-01-01
    stress.add_argument("--day-ms", type=int, default=86_400_000)
    args = parser.parse_args(argv)
    lines = stress_history(args.users, args.days, args.seed, args.start_ms, args.day_ms)
    args.out.write_text("\n".join(lines) + "\n")
    print(json.dumps({"history": str(args.out), "lines": len(lines)}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
