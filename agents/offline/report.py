"""``engagement report``: does win-back work? Reactivation by group, with intervals and uplift.

Input: a signals file (JSON Lines, from the signals topic or ``engagement
replay --signals``) and optionally a lifecycle file (``--lifecycle``).

An *episode* is one silence of one user (``signal_id`` prefix
``user:episode``). It enters the analysis at its first tier signal and is
*reactivated* when a ``reactivated`` signal closes it within ``window`` of
that first signal. Only episodes whose first signal is at least ``window``
before the end of the observation (``--as-of``, default: the newest
``as_of`` in the file) are counted, so every episode had the same chance to
return. The tier reached is the highest tier signalled within the window
(for a return: the tier at return).

Per group (treatment / holdout) and tier: episodes, reactivated, the rate
with a 95 % Wilson interval; the uplift (treatment - holdout) with
Newcombe's hybrid score interval and a seeded bootstrap interval. Charts
(PNG, and one HTML page holding everything): reactivation rate by tier and
group, retention curves (share returned by days since the first signal,
Kaplan-Meier, censored at the end of observation), lifecycle stage counts
over time.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np

from streams.records import LifecycleTransition, Signal
from tables.lifecycle import STAGES
from tables.state import TIER_NAMES

Z_95: Final = 1.959963984540054
BOOTSTRAP_SAMPLES: Final = 2_000
GROUPS: Final = ("treatment", "holdout")
TIERS: Final = TIER_NAMES[1:]
_signal_decoder = msgspec.json.Decoder(Signal)
_transition_decoder = msgspec.json.Decoder(LifecycleTransition)


class Episode(msgspec.Struct):
    user_id: str
    episode: int
    group: str
    first_as_of: int
    tiers: list[tuple[int, str]] = msgspec.field(default_factory=list)  # (as_of, kind)
    returned_after_ms: int | None = None
    tier_at_return: str | None = None


def read_jsonl(path: Path, decoder: Any) -> list[Any]:
    out = []
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                try:
                    out.append(decoder.decode(line))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
    return out


def episodes_of(signals: Iterable[Signal]) -> list[Episode]:
    """One entry per silence that got at least one tier signal (duplicates collapse)."""
    by_key: dict[tuple[str, int], Episode] = {}
    seen: set[str] = set()
    returns: list[Signal] = []
    for signal in sorted(signals, key=lambda s: (s.as_of, s.signal_id)):
        if signal.signal_id in seen:
            continue
        seen.add(signal.signal_id)
        if signal.kind == "reactivated":
            returns.append(signal)
            continue
        if signal.kind not in TIERS:  # e.g. churn_intent: not an inactivity tier
            continue
        key = (signal.user_id, signal.episode)
        episode = by_key.get(key)
        if episode is None:
            episode = by_key[key] = Episode(
                signal.user_id, signal.episode, signal.group, signal.as_of
            )
        episode.tiers.append((signal.as_of, signal.kind))
    for signal in returns:
        found = by_key.get((signal.user_id, signal.episode))
        if found is not None:
            found.returned_after_ms = (
                signal.time_to_return_ms
                if signal.time_to_return_ms is not None
                else signal.as_of - found.first_as_of
            )
            found.tier_at_return = signal.tier_reached
    return list(by_key.values())


# -- statistics ----------------------------------------------------------------


def wilson(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if trials == 0:
        return (float("nan"), float("nan"))
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int
) -> tuple[float, float]:
    """Newcombe's hybrid score interval of ``p_a - p_b`` (method 10)."""
    if trials_a == 0 or trials_b == 0:
        return (float("nan"), float("nan"))
    p_a, p_b = successes_a / trials_a, successes_b / trials_b
    low_a, high_a = wilson(successes_a, trials_a)
    low_b, high_b = wilson(successes_b, trials_b)
    difference = p_a - p_b
    low = difference - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2)
    high = difference + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2)
    return (low, high)


def bootstrap_difference(
    a: list[int], b: list[int], seed: int = 7, samples: int = BOOTSTRAP_SAMPLES
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b) (0/1 outcomes)."""
    if not a or not b:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    arr_a, arr_b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    means_a = rng.binomial(len(arr_a), arr_a.mean(), samples) / len(arr_a)
    means_b = rng.binomial(len(arr_b), arr_b.mean(), samples) / len(arr_b)
    low, high = np.percentile(means_a - means_b, [2.5, 97.5])
    return (float(low), float(high))


def kaplan_meier(
    durations_ms: list[int], returned: list[bool], day_ms: int, days: int
) -> list[float]:
    """Share returned by day 0..days (1 - survival), censoring the rest."""
    if not durations_ms:
        return [0.0] * (days + 1)
    events: Counter[int] = Counter()
    censored: Counter[int] = Counter()
    for duration, came_back in zip(durations_ms, returned, strict=True):
        day = max(0, math.ceil(duration / day_ms))
        (events if came_back else censored)[day] += 1
    at_risk = len(durations_ms)
    survival = 1.0
    curve = []
    for day in range(days + 1):
        if at_risk > 0 and events[day]:
            survival *= 1 - events[day] / at_risk
        curve.append(1 - survival)
        at_risk -= events[day] + censored[day]
    return curve


# -- the report ------------------------------------------------------------------


def _tier_within(episode: Episode, window_ms: int) -> str:
    if episode.returned_after_ms is not None and episode.returned_after_ms <= window_ms:
        return episode.tier_at_return or episode.tiers[-1][1]
    reached = [kind for as_of, kind in episode.tiers if as_of <= episode.first_as_of + window_ms]
    return max(reached, key=TIERS.index) if reached else episode.tiers[0][1]


def _rates(items: list[Episode], window_ms: int) -> dict[str, Any]:
    trials = len(items)
    successes = sum(
        1 for e in items if e.returned_after_ms is not None and e.returned_after_ms <= window_ms
    )
    low, high = wilson(successes, trials)
    return {
        "episodes": trials,
        "reactivated": successes,
        "rate": successes / trials if trials else float("nan"),
        "ci95": [low, high],
    }


def build_report(
    signals: list[Signal],
    window_ms: int,
    as_of_ms: int | None = None,
    day_ms: int = 86_400_000,
) -> dict[str, Any]:
    """Reactivation rates per group and tier, with intervals and uplift."""
    episodes = episodes_of(signals)
    end_ms = as_of_ms if as_of_ms is not None else max((s.as_of for s in signals), default=0)
    eligible = [e for e in episodes if e.first_as_of + window_ms <= end_ms]
    outcome = {
        id(e): int(e.returned_after_ms is not None and e.returned_after_ms <= window_ms)
        for e in eligible
    }
    by_group: dict[str, list[Episode]] = defaultdict(list)
    by_tier: dict[tuple[str, str], list[Episode]] = defaultdict(list)
    for episode in eligible:
        by_group[episode.group].append(episode)
        by_tier[(_tier_within(episode, window_ms), episode.group)].append(episode)

    def uplift(treated: list[Episode], held: list[Episode]) -> dict[str, Any]:
        a = [outcome[id(e)] for e in treated]
        b = [outcome[id(e)] for e in held]
        if not a or not b:
            return {"difference": float("nan"), "ci95": [float("nan")] * 2}
        difference = sum(a) / len(a) - sum(b) / len(b)
        return {
            "difference": difference,
            "ci95": list(newcombe(sum(a), len(a), sum(b), len(b))),
            "bootstrap_ci95": list(bootstrap_difference(a, b)),
            "relative": difference / (sum(b) / len(b)) if sum(b) else float("nan"),
        }

    groups = {group: _rates(by_group.get(group, []), window_ms) for group in GROUPS}
    tiers = {
        tier: {
            **{group: _rates(by_tier.get((tier, group), []), window_ms) for group in GROUPS},
            "uplift": uplift(
                by_tier.get((tier, "treatment"), []), by_tier.get((tier, "holdout"), [])
            ),
        }
        for tier in TIERS
    }
    horizon_days = max(1, math.ceil(window_ms / day_ms))
    retention = {}
    for group in GROUPS:
        items = [e for e in episodes if e.group == group]
        durations = [
            e.returned_after_ms
            if e.returned_after_ms is not None
            else max(0, end_ms - e.first_as_of)
            for e in items
        ]
        retention[group] = kaplan_meier(
            durations, [e.returned_after_ms is not None for e in items], day_ms, horizon_days
        )
    return {
        "window_ms": window_ms,
        "as_of_ms": end_ms,
        "episodes": len(episodes),
        "eligible_episodes": len(eligible),
        "groups": groups,
        "uplift": uplift(by_group.get("treatment", []), by_group.get("holdout", [])),
        "by_tier": tiers,
        "retention_by_day": retention,
        "signals": dict(Counter(s.kind for s in signals)),
    }


def lifecycle_counts(
    transitions: list[LifecycleTransition], day_ms: int
) -> tuple[list[int], dict[str, list[int]]]:
    """Users per stage at the end of each day, replaying transitions in time order."""
    if not transitions:
        return [], {stage: [] for stage in STAGES}
    ordered = sorted(transitions, key=lambda t: (t.as_of, t.transition_id))
    first_day, last_day = ordered[0].as_of // day_ms, ordered[-1].as_of // day_ms
    stage_of: dict[str, str] = {}
    counts: Counter[str] = Counter()
    days = list(range(first_day, last_day + 1))
    series: dict[str, list[int]] = {stage: [] for stage in STAGES}
    position = 0
    for day in days:
        while position < len(ordered) and ordered[position].as_of // day_ms <= day:
            t = ordered[position]
            old = stage_of.get(t.user_id)
            if old is not None:
                counts[old] -= 1
            stage_of[t.user_id] = t.to_stage
            counts[t.to_stage] += 1
            position += 1
        for stage in STAGES:
            series[stage].append(counts[stage])
    return [day * day_ms for day in days], series


# -- charts ----------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_reactivation(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    width = 0.38
    for offset, group in ((-width / 2, "treatment"), (width / 2, "holdout")):
        rates: list[float] = []
        errors: list[list[float]] = [[], []]
        for tier in TIERS:
            cell = report["by_tier"][tier][group]
            rate = cell["rate"] if cell["episodes"] else 0.0
            low, high = cell["ci95"] if cell["episodes"] else (0.0, 0.0)
            rates.append(rate)
            errors[0].append(max(0.0, rate - low))
            errors[1].append(max(0.0, high - rate))
        positions = [i + offset for i in range(len(TIERS))]
        axis.bar(positions, rates, width, yerr=errors, capsize=4, label=group)
    axis.set_xticks(range(len(TIERS)), TIERS)
    axis.set_ylabel(f"reactivated within {report['window_ms'] / 86_400_000:g} days")
    axis.set_title("Reactivation rate by tier reached (95 % Wilson intervals)")
    axis.set_ylim(0, 1)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_retention(report: dict[str, Any], path: Path, day_ms: int) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    for group, curve in report["retention_by_day"].items():
        axis.step(range(len(curve)), curve, where="post", label=group)
    axis.set_xlabel(f"days since the first signal (day = {day_ms / 86_400_000:g} d)")
    axis.set_ylabel("share returned (Kaplan-Meier)")
    axis.set_title("Return after the first inactivity signal")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_lifecycle(times_ms: list[int], series: dict[str, list[int]], path: Path) -> Path:
    plt = _pyplot()
    import datetime as dt

    figure, axis = plt.subplots(figsize=(8, 4))
    when = [dt.datetime.fromtimestamp(t / 1000, tz=dt.UTC) for t in times_ms]
    axis.stackplot(when, *[series[s] for s in STAGES], labels=list(STAGES))
    axis.set_ylabel("users")
    axis.set_title("Users per lifecycle stage")
    axis.legend(loc="upper left", fontsize="small")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f} %"


def write_html(report: dict[str, Any], charts: list[Path], path: Path) -> Path:
    rows = []
    for tier in TIERS:
        cells = report["by_tier"][tier]
        parts = [f"<td>{tier}</td>"]
        for group in GROUPS:
            c = cells[group]
            parts.append(
                f"<td>{c['reactivated']}/{c['episodes']}</td><td>{_percent(c['rate'])} "
                f"[{_percent(c['ci95'][0])}, {_percent(c['ci95'][1])}]</td>"
            )
        up = cells["uplift"]
        parts.append(
            f"<td>{_percent(up['difference'])} [{_percent(up['ci95'][0])}, "
            f"{_percent(up['ci95'][1])}]</td>"
        )
        rows.append("<tr>" + "".join(parts) + "</tr>")
    images = "".join(
        f'<p><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"></p>'
        for p in charts
    )
    total = report["uplift"]
    body = f"""<!doctype html><html><head><meta charset="utf-8">
<title>Win-back report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
td,th{{padding:.3em .8em;border-bottom:1px solid #ddd}}</style></head><body>
<h1>Win-back report</h1>
<p>{report["eligible_episodes"]} episodes of silence with a full
{report["window_ms"] / 86_400_000:g}-day window (of {report["episodes"]}).
Overall uplift (treatment - holdout): <b>{_percent(total["difference"])}</b>
[{_percent(total["ci95"][0])}, {_percent(total["ci95"][1])}] (95 %, Newcombe).</p>
<table><tr><th>tier reached</th><th>treatment</th><th>rate</th><th>holdout</th>
<th>rate</th><th>uplift</th></tr>{"".join(rows)}</table>{images}
<pre>{html.escape(json.dumps(report["groups"], indent=2))}</pre></body></html>
"""
    path.write_text(body)
    return path


def write_report(
    signals_path: Path,
    out_dir: Path,
    window_ms: int,
    as_of_ms: int | None = None,
    lifecycle_path: Path | None = None,
    day_ms: int = 86_400_000,
) -> dict[str, Any]:
    """Build the report, write ``report.json``, the PNG charts and ``report.html``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    signals = read_jsonl(signals_path, _signal_decoder)
    report = build_report(signals, window_ms, as_of_ms, day_ms)
    charts = [
        plot_reactivation(report, out_dir / "reactivation.png"),
        plot_retention(report, out_dir / "retention.png", day_ms),
    ]
    if lifecycle_path is not None:
        transitions = read_jsonl(lifecycle_path, _transition_decoder)
        times, series = lifecycle_counts(transitions, day_ms)
        if times:
            charts.append(plot_lifecycle(times, series, out_dir / "lifecycle.png"))
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    write_html(report, charts, out_dir / "report.html")
    report["files"] = [str(p) for p in [*charts, out_dir / "report.json", out_dir / "report.html"]]
    return report
