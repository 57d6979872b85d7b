"""Are the tier signals worth acting on? Per-tier figures of ``engagement evaluate``.

The history is split at ``split_ms`` (by default the middle of its time
span): the population cadence (``tables.population``) is learned from the
users as they stand at the split, the minimum risks are chosen on the
signals before it (*tune*) and reported on those after it (*report*).

Per tier signal (``at_risk``, ``dormant``, ``churned``) whose ``as_of +
horizon`` lies inside the history, with the user's active events (the
settings' default activity classes):

- **precision**: the share of signals after which the user stays inactive
  through the horizon (no active event in ``(as_of, as_of + horizon]``);
- **returned within one threshold**: the share followed by an active event
  in ``(as_of, as_of + threshold_ms]``, a signal the user made moot.

Runs compared: ``today`` (no population cadence, no minimum risk: the
behaviour before either existed), ``population_cadence`` (new users start
from their population's cadence learned at the split) and, for each, the
minimum risks. A minimum risk withholds a tier signal without changing any
state (``tables.model.advance_user``), so the signals it keeps are exactly
those of the run with a risk at or above it: the figures of every candidate
minimum come from one run. The chosen minimum of a tier is the highest
candidate that keeps at least ``KEEP_SHARE`` of the tune split's signalled
users who stay inactive (the users worth a message are not lost for a
tidier list); the report split shows what it does on data it did not see.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import msgspec

from agents.offline.fit import history_cadence
from agents.offline.history_formats import history_lines
from agents.offline.history_lines import read_lines
from agents.offline.replay import run_history
from streams.validate import EventRules
from tables.activity import ACTIVE
from tables.model import Emission, ModelConfig
from tables.vocabulary import TIERS

CANDIDATE_MIN_RISKS: Final = tuple(step / 20 for step in range(19))  # 0, 0.05, ..., 0.9
KEEP_SHARE: Final = 0.8
TODAY: Final = "today"
POPULATION: Final = "population_cadence"


def today_config(config: ModelConfig) -> ModelConfig:
    """``config`` without a population cadence or a minimum risk."""
    return msgspec.structs.replace(
        config,
        policy=msgspec.structs.replace(config.policy, population={}),
        min_risk=(0.0, 0.0, 0.0),
    )


def active_times(events: Path, config: ModelConfig, rules: EventRules) -> dict[str, list[int]]:
    """Sorted times of each user's active events (the default activity classes)."""
    types = config.activity.defaults
    times: defaultdict[str, list[int]] = defaultdict(list)
    with history_lines(events) as lines:
        for event in read_lines(lines, rules, Counter()):
            if types.classify(event.type) == ACTIVE:
                times[event.user_id].append(event.ts)
    return {user: sorted(found) for user, found in times.items()}


def judged_signals(
    emissions: Iterable[Emission], times: dict[str, list[int]], horizon_ms: int, end_ms: int
) -> list[tuple[str, int, float, bool, bool]]:
    """``(tier, as_of, risk, stayed inactive, returned within one threshold)`` of
    each tier signal whose horizon ends inside the history."""
    out = []
    for emission in emissions:
        if emission.kind not in TIERS or emission.as_of + horizon_ms > end_ms:
            continue
        found = times.get(emission.user_id, [])
        after = bisect_right(found, emission.as_of)
        following = found[after] if after < len(found) else None
        out.append(
            (
                emission.kind,
                emission.as_of,
                emission.risk,
                following is None or following > emission.as_of + horizon_ms,
                following is not None and following <= emission.as_of + emission.threshold_ms,
            )
        )
    return out


def figures(judged: list[tuple[str, int, float, bool, bool]], min_risk: float) -> dict[str, Any]:
    """Signals, precision and the share returned within one threshold, among the
    signals with a risk at or above ``min_risk``."""
    kept = [item for item in judged if item[2] >= min_risk]
    stayed = sum(1 for item in kept if item[3])
    returned = sum(1 for item in kept if item[4])
    return {
        "min_risk": min_risk,
        "signals": len(kept),
        "stayed_inactive": stayed,
        "precision": stayed / len(kept) if kept else float("nan"),
        "returned_within_threshold": returned / len(kept) if kept else float("nan"),
    }


def choose_min_risk(judged: list[tuple[str, int, float, bool, bool]]) -> float:
    """The highest candidate keeping ``KEEP_SHARE`` of the users who stay inactive."""
    worth = figures(judged, 0.0)["stayed_inactive"]
    chosen = 0.0
    for candidate in CANDIDATE_MIN_RISKS:
        if figures(judged, candidate)["stayed_inactive"] >= KEEP_SHARE * worth:
            chosen = candidate
    return chosen


def tier_report(
    judged: list[tuple[str, int, float, bool, bool]],
    split_ms: int,
    settings_min_risk: tuple[float, float, float],
) -> dict[str, dict[str, Any]]:
    """Per tier: the figures on each split without a minimum, with the minimum chosen
    on the tune split, and with the settings' minimum."""
    out: dict[str, dict[str, Any]] = {}
    for tier, configured in zip(TIERS, settings_min_risk, strict=True):
        tune = [item for item in judged if item[0] == tier and item[1] < split_ms]
        report = [item for item in judged if item[0] == tier and item[1] >= split_ms]
        chosen = choose_min_risk(tune)
        out[tier] = {
            "chosen_min_risk": chosen,
            **{
                name: {
                    "no_minimum": figures(part, 0.0),
                    "chosen": figures(part, chosen),
                    "settings": figures(part, configured),
                }
                for name, part in (("tune", tune), ("report", report))
            },
        }
    return out


def tier_signal_report(
    events: Path,
    config: ModelConfig,
    today: list[Emission],
    horizon_ms: int,
    rules: EventRules,
    span_ms: tuple[int, int],
    split_ms: int | None = None,
) -> dict[str, Any]:
    """The per-tier figures (module docstring); ``today`` are the signals of a run
    under ``today_config(config)`` over the whole history, ``span_ms`` its first and
    last event."""
    first_ms, end_ms = span_ms
    split = (first_ms + end_ms) // 2 if split_ms is None else split_ms
    plain = today_config(config)
    cadence = history_cadence(events, split, plain, rules)
    learned = msgspec.structs.replace(
        plain, policy=msgspec.structs.replace(plain.policy, population=cadence)
    )
    with_cadence: list[Emission] = []
    run_history(
        events, end_ms, learned, on_signals=with_cadence.extend, progress=False, rules=rules
    )
    times = active_times(events, config, rules)
    runs = {TODAY: today, POPULATION: with_cadence}
    return {
        "split_ms": split,
        "keep_share": KEEP_SHARE,
        "learned_cadence": cadence,
        **{
            name: tier_report(
                judged_signals(emissions, times, horizon_ms, end_ms), split, config.min_risk
            )
            for name, emissions in runs.items()
        },
    }


def tier_lines(report: dict[str, Any]) -> list[str]:
    """The per-tier part of the summary ``engagement evaluate`` prints."""
    lines = []
    for name in (TODAY, POPULATION):
        for tier, parts in report[name].items():
            for split in ("tune", "report"):
                plain, chosen = parts[split]["no_minimum"], parts[split]["chosen"]
                lines.append(
                    f"tier {tier} ({name}, {split}): signals={plain['signals']} "
                    f"precision={plain['precision']:.3f} "
                    f"returned within threshold={plain['returned_within_threshold']:.3f}; "
                    f"min risk {parts['chosen_min_risk']:.2f}: signals={chosen['signals']} "
                    f"precision={chosen['precision']:.3f} "
                    f"returned={chosen['returned_within_threshold']:.3f}"
                )
    return lines
