"""Metrics of the risk evaluation, and a generated history that breaks the model's assumptions.

The metrics (ROC AUC, Brier, log loss, reliability bins) serve ``engagement
fit`` (``agents.offline.learn``) and ``engagement evaluate``
(``agents.offline.backtest``).

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
from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy import stats  # type: ignore[import-untyped]

from agents.offline.history_formats import history_lines
from agents.offline.history_lines import read_lines
from streams.validate import EventRules

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
