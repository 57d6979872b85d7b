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
over time. The statistics are in ``agents.offline.report_stats``, the files
written in ``agents.offline.report_files``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import msgspec

from agents.offline.history_facts import HistoryFacts
from agents.offline.report_stats import (
    bootstrap_difference,
    by_user,
    kaplan_meier,
    newcombe,
    wilson,
)
from streams.records import LifecycleTransition, Signal
from tables.cohorts import growth, retention
from tables.lifecycle import STAGES
from tables.state import TIER_NAMES

GROUPS: Final = ("treatment", "holdout")
TIERS: Final = TIER_NAMES[1:]


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
