"""``engagement evaluate``: the risk score against independent baselines, over several cutoffs.

For each cutoff ``c`` of the backtest:

- the risk model is the file given (``--params``; it should have been fitted
  before the earliest cutoff) or one learned from the events up to ``c``
  (``agents.offline.learn``, which tunes itself on instants before ``c``);
- every user seen up to ``c`` is scored as the worker would score it
  (``tables.user_risk.risk_at`` on the engine's state at ``c``);
- the label is 1 when the user has no event in ``(c, c + horizon]``: data
  the model and the baselines never saw (the report split);
- the baselines of ``agents.offline.baselines`` score the same users from
  the raw history.

Reported per cutoff and averaged over the cutoffs: ROC AUC on every user
and on users with at least two active days, Brier score; for each baseline
the difference (product - baseline) with a 95 % percentile bootstrap
interval over users (``BOOTSTRAP`` resamples, seeded); the baselines that
could not run, and why; the reliability of the product's probability pooled
over the cutoffs (and a PNG of it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
from numpy.typing import NDArray

from agents.offline import baselines
from agents.offline.baselines import BaselineUnavailable, History
from agents.offline.early_warning_run import history_warnings, warning_lines
from agents.offline.evaluate import brier, reliability, roc_auc
from agents.offline.learn import learn
from agents.offline.replay import run_history
from streams.risk_params import RiskModel, load_risk_model, risk_model_of
from streams.validate import DEFAULT_EVENT_RULES, EventRules
from tables.errors import ConfigurationError
from tables.model import ModelConfig
from tables.user_risk import risk_at

BOOTSTRAP: Final = 500
PRODUCT: Final = "risk"
PROBABILITY_BASELINES: Final = ("bg_nbd", "logistic_rft")
Floats = NDArray[np.float64]
Labels = NDArray[np.int64]


class Cutoff(msgspec.Struct):
    """One cutoff's scores, labels and figures."""

    at_ms: int
    labels: Labels
    repeat: NDArray[np.bool_]
    scores: dict[str, Floats]
    report: dict[str, Any]


def _metrics(
    labels: Labels, scores: Floats, repeat: NDArray[np.bool_], probability: bool
) -> dict[str, float]:
    out = {
        "roc_auc": roc_auc(labels, scores),
        "roc_auc_repeat": roc_auc(labels[repeat], scores[repeat]),
    }
    if probability:
        out["brier"] = brier(labels, scores)
    return out


def _bootstrap(
    labels: Labels,
    repeat: NDArray[np.bool_],
    product: Floats,
    baseline: Floats,
    probability: bool,
    rng: np.random.Generator,
    samples: int,
) -> dict[str, list[float]]:
    """95 % percentile intervals of product - baseline for each metric."""
    draws: dict[str, list[float]] = {"roc_auc": [], "roc_auc_repeat": []}
    if probability:
        draws["brier"] = []
    count = len(labels)
    for _ in range(samples):
        pick = rng.integers(0, count, count)
        ours = _metrics(labels[pick], product[pick], repeat[pick], probability)
        theirs = _metrics(labels[pick], baseline[pick], repeat[pick], probability)
        for name in draws:
            difference = ours[name] - theirs[name]
            if math.isfinite(difference):
                draws[name].append(difference)
    return {
        name: [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
        if values
        else [math.nan, math.nan]
        for name, values in draws.items()
    }


def _with_model(config: ModelConfig, model: RiskModel, horizon_ms: int) -> ModelConfig:
    return msgspec.structs.replace(
        config,
        horizon_ms=horizon_ms,
        risk=model.params,
        learned=model.learned,
        risk_model=model.version,
    )


Baseline = Callable[[History, list[str], int, int, int], tuple[Floats, dict[str, Any]]]
BASELINES: Final[dict[str, Baseline]] = {
    "bg_nbd": baselines.bg_nbd,
    "logistic_rft": baselines.logistic_rft,
}


def evaluate_cutoff(
    events: Path,
    history: History,
    cutoff_ms: int,
    horizon_ms: int,
    config: ModelConfig,
    params: Path | None,
    rules: EventRules,
    rng: np.random.Generator,
    samples: int,
) -> Cutoff:
    day_ms = config.day_ms
    if params is not None:
        model = load_risk_model(params, day_ms, horizon_ms)
    else:
        model = risk_model_of(
            learn(events, cutoff_ms, [horizon_ms], config, rules), day_ms, horizon_ms
        )
    scored = _with_model(config, model, horizon_ms)
    states = run_history(events, cutoff_ms, scored, progress=False, rules=rules).store.states
    seen = history.users_at(cutoff_ms)
    # the users the engine tracks: a user whose events were all passive, negative or
    # churn intents has no state (docs/CONTRACTS.md, Activity) and is not scored
    users = [user for user in seen if user in states]
    if len(users) != len(states):
        raise ConfigurationError(
            f"the engine and the raw history disagree on the users at {cutoff_ms}"
            f" ({len(states)} and {len(users)}): evaluate reads integer ts only"
        )
    labels = history.quiet(users, cutoff_ms, horizon_ms)
    summary = history.summary(users, cutoff_ms, day_ms)
    repeat = summary["active"] >= 2
    scores = {
        PRODUCT: np.array([risk_at(states[u], cutoff_ms, scored) for u in users], dtype=float),
        "days_since_last_event": summary["recency"],
    }
    not_run: dict[str, str] = {}
    fitted: dict[str, Any] = {}
    for name, baseline in BASELINES.items():
        try:
            scores[name], fitted[name] = baseline(history, users, cutoff_ms, horizon_ms, day_ms)
        except BaselineUnavailable as exc:
            not_run[name] = str(exc)
    product = scores[PRODUCT]
    figures = {
        name: _metrics(labels, values, repeat, name != "days_since_last_event")
        for name, values in scores.items()
    }
    differences = {
        name: {
            "difference": {
                metric: figures[PRODUCT][metric] - value for metric, value in figures[name].items()
            },
            "interval_95": _bootstrap(
                labels, repeat, product, values, name in PROBABILITY_BASELINES, rng, samples
            ),
        }
        for name, values in scores.items()
        if name != PRODUCT
    }
    report = {
        "cutoff_ms": cutoff_ms,
        "users": len(users),
        "users_without_state": len(seen) - len(users),
        "repeat_users": int(repeat.sum()),
        "inactive_share": float(labels.mean()) if len(labels) else math.nan,
        "risk_model": model.version,
        "figures": figures,
        "product_minus_baseline": differences,
        "baselines_fitted": fitted,
        "baselines_not_run": not_run,
    }
    return Cutoff(cutoff_ms, labels, repeat, scores, report)


def evaluate(
    events: Path,
    cutoffs_ms: list[int],
    horizon_ms: int,
    config: ModelConfig,
    params: Path | None = None,
    rules: EventRules = DEFAULT_EVENT_RULES,
    samples: int = BOOTSTRAP,
    seed: int = 7,
) -> tuple[dict[str, Any], list[Cutoff]]:
    """The backtest report (a JSON document) and each cutoff's scores."""
    if not cutoffs_ms:
        raise ConfigurationError("no cutoff to evaluate")
    history = History(events)
    latest_ms = max((times[-1] for times in history.times.values()), default=0)
    late = [c for c in cutoffs_ms if c + horizon_ms > latest_ms]
    if late:
        raise ConfigurationError(
            f"cutoffs {late}: the history ends at {latest_ms}, before their horizon does"
        )
    rng = np.random.default_rng(seed)
    cutoffs = [
        evaluate_cutoff(events, history, c, horizon_ms, config, params, rules, rng, samples)
        for c in sorted(cutoffs_ms)
    ]
    names = list(cutoffs[0].scores)
    mean = {
        name: {
            metric: float(np.nanmean([c.report["figures"][name][metric] for c in cutoffs]))
            for metric in cutoffs[0].report["figures"][name]
        }
        for name in names
    }
    below: dict[str, dict[str, int]] = {}
    for name in names[1:]:
        below[name] = {}
        for metric in cutoffs[0].report["product_minus_baseline"][name]["difference"]:
            worse = 0
            for c in cutoffs:
                part = c.report["product_minus_baseline"][name]
                low, high = part["interval_95"][metric]
                # lower is better for Brier: worse means the difference's interval lies above 0
                worse += int(low > 0) if metric == "brier" else int(high < 0)
            below[name][metric] = worse
    labels = np.concatenate([c.labels for c in cutoffs])
    pooled = np.concatenate([c.scores[PRODUCT] for c in cutoffs])
    report = {
        "horizon_ms": horizon_ms,
        "cutoffs_ms": sorted(cutoffs_ms),
        "bootstrap_samples": samples,
        "mean_over_cutoffs": mean,
        "cutoffs_worse_than_baseline": below,
        "baselines_not_run": sorted({n for c in cutoffs for n in c.report["baselines_not_run"]}),
        "reliability": reliability(labels, pooled),
        "cutoffs": [c.report for c in cutoffs],
        **history_warnings(events, config, horizon_ms, rules),
    }
    return report, cutoffs


def plot_reliability(cutoffs: list[Cutoff], path: Path, title: str = "") -> Path:
    """Predicted against observed inactivity, pooled over the cutoffs (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.concatenate([c.labels for c in cutoffs])
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    top.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    for name, marker in ((PRODUCT, "o"), ("bg_nbd", "s"), ("logistic_rft", "^")):
        if not all(name in c.scores for c in cutoffs):
            continue
        bins = reliability(labels, np.concatenate([c.scores[name] for c in cutoffs]))
        top.plot(
            [b["predicted"] for b in bins], [b["observed"] for b in bins], marker=marker, label=name
        )
    top.set_ylabel("observed share inactive in the horizon")
    top.set_title(title or "Reliability of P(no activity within the horizon)")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.hist(np.concatenate([c.scores[PRODUCT] for c in cutoffs]), bins=10, range=(0, 1))
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("users x cutoffs")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A short human-readable table: mean over the cutoffs, per model."""
    lines = []
    for name, figures in report["mean_over_cutoffs"].items():
        parts = [f"{metric}={value:.4f}" for metric, value in figures.items()]
        worse = report["cutoffs_worse_than_baseline"].get(name)
        tail = f"  (cutoffs where risk is worse beyond the interval: {worse})" if worse else ""
        lines.append(f"{name:<22} " + " ".join(parts) + tail)
    for name in report["baselines_not_run"]:
        lines.append(f"{name}: not run")
    if "early_warning" in report:
        lines.extend(warning_lines(report))
    return lines
