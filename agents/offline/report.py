"""``engagement report``: does win-back work? Lasting returns by group, uplift with intervals;
cohort retention and growth accounting.

Input: a signals file (JSON Lines, from the signals topic or ``engagement
replay --signals``), optionally the event history (``--history``, JSON
Lines) and a lifecycle file (``--lifecycle``).

An *episode* is one silence of one user (``signal_id`` prefix
``user:episode``). It enters the analysis at its first tier signal, which is
when it is assigned: its stratum is the tier of that *first* signal (a later
tier is partly the treatment's doing) and its group is that signal's group.
Its outcome is a *lasting return*: a ``reactivated`` signal within
``window`` of the first signal, after which the user is active on at least
``K`` model days (``ENGAGEMENT_WINBACK_LASTING_DAYS``, the return's day
included) within ``W`` model days (``ENGAGEMENT_WINBACK_WINDOW_DAYS``) from
the return. The active days come from the history (``--history``); without
it the outcome is any return (``outcome`` says which). Only episodes whose
first signal is at least ``window`` (plus ``W`` days for a lasting return)
before the end of the observation (``--as-of``, default: the newest time in
the inputs) are counted, so every episode had the same chance.

Per group (treatment / holdout) and first tier: episodes, successes, the rate
with a 95 % Wilson interval; the uplift (treatment - holdout) with Newcombe's
hybrid score interval and a bootstrap interval over *users* (a user's
episodes are resampled together: they are not independent). With experiment
arms (signals carrying ``arm``, ``ENGAGEMENT_EXPERIMENT_ID``), the same per
arm, each against its own hold-out. With ``--history``, cohort retention and
growth accounting per tenant, segment and group (``tables.cohorts``). Charts
(PNG, and one HTML page holding everything): success rate by tier and group,
retention curves (share returned by days since the first signal,
Kaplan-Meier, censored at the end of observation), lifecycle stage counts
over time.
"""

from __future__ import annotations

import base64
import html
import json
import math
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np

from agents.offline.early_warning import activation_cohorts, activation_marks
from agents.offline.history_facts import HistoryFacts
from streams.records import LifecycleTransition, Signal
from tables.cohorts import growth, retention
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
    returned_at_ms: int | None = None
    tier_at_return: str | None = None
    arm: str | None = None

    @property
    def first_tier(self) -> str:
        return self.tiers[0][1]


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
        if signal.kind not in TIERS:
            continue  # churn_intent, declining, not_activated: not a silence's tiers
        key = (signal.user_id, signal.episode)
        episode = by_key.get(key)
        if episode is None:
            episode = by_key[key] = Episode(
                signal.user_id, signal.episode, signal.group, signal.as_of, arm=signal.arm
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
            found.returned_at_ms = signal.as_of
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
    a: list[tuple[int, int]],
    b: list[tuple[int, int]],
    seed: int = 7,
    samples: int = BOOTSTRAP_SAMPLES,
) -> tuple[float, float]:
    """Percentile bootstrap interval of rate(a) - rate(b), resampling *users*:
    each item is one user's ``(successes, episodes)``, kept together."""
    if not a or not b:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)

    def rates(users: list[tuple[int, int]]) -> Any:
        counts = np.asarray(users, dtype=np.float64)
        picks = rng.integers(0, len(counts), size=(samples, len(counts)))
        return counts[picks, 0].sum(axis=1) / counts[picks, 1].sum(axis=1)

    low, high = np.percentile(rates(a) - rates(b), [2.5, 97.5])
    return (float(low), float(high))


def by_user(outcomes: list[tuple[str, int]]) -> list[tuple[int, int]]:
    """``(user, 0/1)`` per episode -> ``(successes, episodes)`` per user."""
    totals: dict[str, list[int]] = {}
    for user_id, outcome in outcomes:
        row = totals.setdefault(user_id, [0, 0])
        row[0] += outcome
        row[1] += 1
    return [(row[0], row[1]) for row in totals.values()]


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


class Outcome(msgspec.Struct, frozen=True):
    """What counts as a successful win-back: a return within ``window_ms`` of the
    first signal, lasting (``lasting_days`` active days within ``lasting_window_days``
    of the return) when the active days are known."""

    window_ms: int
    day_ms: int = 86_400_000
    lasting_days: int = 3
    lasting_window_days: int = 14
    active_days: dict[str, list[int]] | None = None

    @property
    def name(self) -> str:
        return "return" if self.active_days is None else "lasting_return"

    @property
    def observed_ms(self) -> int:
        """How long after the first signal an episode must be observed."""
        extra = 0 if self.active_days is None else self.lasting_window_days * self.day_ms
        return self.window_ms + extra

    def of(self, episode: Episode) -> int:
        after = episode.returned_after_ms
        if after is None or after > self.window_ms:
            return 0
        if self.active_days is None or episode.returned_at_ms is None:
            return 1
        first = episode.returned_at_ms // self.day_ms
        days = self.active_days.get(episode.user_id, [])
        start = bisect_left(days, first)
        end = bisect_left(days, first + self.lasting_window_days)
        return int(end - start >= self.lasting_days)


def _rates(items: list[Episode], outcome: Outcome) -> dict[str, Any]:
    trials = len(items)
    successes = sum(outcome.of(e) for e in items)
    low, high = wilson(successes, trials)
    return {
        "episodes": trials,
        "users": len({e.user_id for e in items}),
        "successes": successes,
        "rate": successes / trials if trials else float("nan"),
        "ci95": [low, high],
    }


def _uplift(treated: list[Episode], held: list[Episode], outcome: Outcome) -> dict[str, Any]:
    a = [(e.user_id, outcome.of(e)) for e in treated]
    b = [(e.user_id, outcome.of(e)) for e in held]
    if not a or not b:
        return {"difference": float("nan"), "ci95": [float("nan")] * 2}
    hits_a, hits_b = sum(o for _u, o in a), sum(o for _u, o in b)
    difference = hits_a / len(a) - hits_b / len(b)
    return {
        "difference": difference,
        "ci95": list(newcombe(hits_a, len(a), hits_b, len(b))),
        "bootstrap_users_ci95": list(bootstrap_difference(by_user(a), by_user(b))),
        "relative": difference / (hits_b / len(b)) if hits_b else float("nan"),
    }


def _comparison(items: list[Episode], outcome: Outcome) -> dict[str, Any]:
    """Per group and first tier, with uplift (one experiment arm, or all episodes)."""
    by_group: dict[str, list[Episode]] = defaultdict(list)
    by_tier: dict[tuple[str, str], list[Episode]] = defaultdict(list)
    for episode in items:
        by_group[episode.group].append(episode)
        by_tier[(episode.first_tier, episode.group)].append(episode)
    return {
        "groups": {group: _rates(by_group.get(group, []), outcome) for group in GROUPS},
        "uplift": _uplift(by_group.get("treatment", []), by_group.get("holdout", []), outcome),
        "by_first_tier": {
            tier: {
                **{group: _rates(by_tier.get((tier, group), []), outcome) for group in GROUPS},
                "uplift": _uplift(
                    by_tier.get((tier, "treatment"), []),
                    by_tier.get((tier, "holdout"), []),
                    outcome,
                ),
            }
            for tier in TIERS
        },
    }


def cohort_section(facts: HistoryFacts, end_ms: int) -> dict[str, Any]:
    """Retention and growth accounting of the history, periods as epoch ms."""
    period_ms = facts.period_ms
    last = end_ms // period_ms
    return {
        "period_ms": period_ms,
        "retention": [
            {
                **msgspec.structs.asdict(row),
                "cohort": row.cohort * period_ms,
            }
            for row in retention(facts.cells, last)
        ],
        "growth": [
            {**msgspec.structs.asdict(row), "period": row.period * period_ms}
            for row in growth(facts.cells, last)
        ],
    }


def build_report(
    signals: list[Signal],
    window_ms: int,
    as_of_ms: int | None = None,
    day_ms: int = 86_400_000,
    facts: HistoryFacts | None = None,
    lasting_days: int = 3,
    lasting_window_days: int = 14,
) -> dict[str, Any]:
    """Win-back success per group and first tier (and arm), with intervals and uplift;
    cohorts when the history's ``facts`` are given."""
    episodes = episodes_of(signals)
    newest = max((s.as_of for s in signals), default=0)
    if facts is not None:
        newest = max(newest, facts.end_ms)
    end_ms = as_of_ms if as_of_ms is not None else newest
    outcome = Outcome(
        window_ms,
        day_ms,
        lasting_days,
        lasting_window_days,
        None if facts is None else facts.active_days,
    )
    eligible = [e for e in episodes if e.first_as_of + outcome.observed_ms <= end_ms]
    horizon_days = max(1, math.ceil(window_ms / day_ms))
    retention_by_day = {}
    for group in GROUPS:
        items = [e for e in episodes if e.group == group]
        durations = [
            e.returned_after_ms
            if e.returned_after_ms is not None
            else max(0, end_ms - e.first_as_of)
            for e in items
        ]
        retention_by_day[group] = kaplan_meier(
            durations, [e.returned_after_ms is not None for e in items], day_ms, horizon_days
        )
    arms: dict[str, list[Episode]] = defaultdict(list)
    for episode in eligible:
        if episode.arm is not None:
            arms[episode.arm].append(episode)
    report: dict[str, Any] = {
        "window_ms": window_ms,
        "as_of_ms": end_ms,
        "outcome": outcome.name,
        "lasting_days": lasting_days if facts is not None else None,
        "lasting_window_days": lasting_window_days if facts is not None else None,
        "episodes": len(episodes),
        "eligible_episodes": len(eligible),
        **_comparison(eligible, outcome),
        "by_arm": {arm: _comparison(items, outcome) for arm, items in sorted(arms.items())},
        "retention_by_day": retention_by_day,
        "signals": dict(Counter(s.kind for s in signals)),
    }
    if facts is not None:
        report["cohorts"] = cohort_section(facts, end_ms)
    return report


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
            cell = report["by_first_tier"][tier][group]
            rate = cell["rate"] if cell["episodes"] else 0.0
            low, high = cell["ci95"] if cell["episodes"] else (0.0, 0.0)
            rates.append(rate)
            errors[0].append(max(0.0, rate - low))
            errors[1].append(max(0.0, high - rate))
        positions = [i + offset for i in range(len(TIERS))]
        axis.bar(positions, rates, width, yerr=errors, capsize=4, label=group)
    axis.set_xticks(range(len(TIERS)), TIERS)
    outcome = report["outcome"].replace("_", " ")
    axis.set_ylabel(f"{outcome} within {report['window_ms'] / 86_400_000:g} days")
    axis.set_title("Win-back success by the first signal's tier (95 % Wilson intervals)")
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


def _cohort_html(report: dict[str, Any]) -> str:
    """The retention table (share of each cohort active per period since it began)."""
    cohorts = report.get("cohorts")
    if not cohorts:
        return ""
    rows = []
    for row in cohorts["retention"]:
        labels = " / ".join(html.escape(row[k] or "-") for k in ("tenant", "segment", "group"))
        shares = "".join(
            f"<td>{'n/a' if v is None else f'{100 * v:.0f} %'}</td>" for v in row["share"]
        )
        rows.append(
            f"<tr><td>{labels}</td><td>{row['cohort']}</td><td>{row['size']}</td>{shares}</tr>"
        )
    return (
        "<h2>Cohort retention</h2><table><tr><th>tenant / segment / group</th>"
        "<th>cohort (epoch ms)</th><th>users</th><th>active per period since</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def write_html(report: dict[str, Any], charts: list[Path], path: Path) -> Path:
    rows = []
    for tier in TIERS:
        cells = report["by_first_tier"][tier]
        parts = [f"<td>{tier}</td>"]
        for group in GROUPS:
            c = cells[group]
            parts.append(
                f"<td>{c['successes']}/{c['episodes']}</td><td>{_percent(c['rate'])} "
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
{report["window_ms"] / 86_400_000:g}-day window (of {report["episodes"]}); outcome:
{report["outcome"].replace("_", " ")}.
Overall uplift (treatment - holdout): <b>{_percent(total["difference"])}</b>
[{_percent(total["ci95"][0])}, {_percent(total["ci95"][1])}] (95 %, Newcombe).</p>
<table><tr><th>first tier</th><th>treatment</th><th>rate</th><th>holdout</th>
<th>rate</th><th>uplift</th></tr>{"".join(rows)}</table>{images}
{_activation_table(report)}
{_cohort_html(report)}
<pre>{html.escape(json.dumps(report["groups"], indent=2))}</pre></body></html>
"""
    path.write_text(body)
    return path


def _activation_table(report: dict[str, Any]) -> str:
    cohorts = report.get("activation")
    if not cohorts:
        return ""
    rows = "".join(
        f"<tr><td>{c['cohort_start_ms']}</td><td>{c['users']}</td>"
        f"<td>{c['activated']}/{c['past_deadline']}</td><td>{_percent(c['activation_rate'])}</td></tr>"
        for c in cohorts
    )
    return (
        "<h2>Activation per weekly cohort</h2><table><tr><th>cohort start (ms)</th>"
        f"<th>users</th><th>activated by the deadline</th><th>rate</th></tr>{rows}</table>"
    )


def write_report(
    signals_path: Path,
    out_dir: Path,
    window_ms: int,
    as_of_ms: int | None = None,
    lifecycle_path: Path | None = None,
    day_ms: int = 86_400_000,
    facts: HistoryFacts | None = None,
    lasting_days: int = 3,
    lasting_window_days: int = 14,
    activation_deadline_ms: int | None = None,
) -> dict[str, Any]:
    """Build the report, write ``report.json``, the PNG charts and ``report.html``;
    with lifecycle records and an activation deadline (activation on), the
    activation rate per weekly cohort (``agents.offline.early_warning``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    signals = read_jsonl(signals_path, _signal_decoder)
    report = build_report(
        signals, window_ms, as_of_ms, day_ms, facts, lasting_days, lasting_window_days
    )
    charts = [
        plot_reactivation(report, out_dir / "reactivation.png"),
        plot_retention(report, out_dir / "retention.png", day_ms),
    ]
    if lifecycle_path is not None:
        transitions = read_jsonl(lifecycle_path, _transition_decoder)
        times, series = lifecycle_counts(transitions, day_ms)
        if times:
            charts.append(plot_lifecycle(times, series, out_dir / "lifecycle.png"))
        if activation_deadline_ms is not None and transitions:
            end_ms = as_of_ms if as_of_ms is not None else max(t.as_of for t in transitions)
            report["activation"] = activation_cohorts(
                activation_marks(transitions), day_ms, activation_deadline_ms, end_ms
            )
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    write_html(report, charts, out_dir / "report.html")
    report["files"] = [str(p) for p in [*charts, out_dir / "report.json", out_dir / "report.html"]]
    return report
