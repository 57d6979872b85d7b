"""The early-warning figures of ``engagement evaluate``: the whole history through
the record processor, then ``declining`` against the halved-28-day rule, with
activation types set the activation rate per weekly cohort
(``agents.offline.early_warning``), and the per-tier figures of the tier signals
(``agents.offline.tier_signals``). The run is today's behaviour: no population
cadence, no minimum risk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.offline.early_warning import activation_cohorts, activation_marks, warning_report
from agents.offline.evaluate import event_times
from agents.offline.replay import run_history
from agents.offline.tier_signals import tier_lines, tier_signal_report, today_config
from streams.validate import EventRules
from tables.model import Emission, ModelConfig, Transition


def history_warnings(
    events: Path, config: ModelConfig, horizon_ms: int, rules: EventRules
) -> dict[str, Any]:
    """``{"early_warning": ..., "tier_signals": ..., "activation": ...}`` over the
    whole history."""
    times = list(event_times(events, rules))
    first_ts = min((ts for _user, ts in times), default=0)
    last_ts = max((ts for _user, ts in times), default=0)
    emissions: list[Emission] = []
    transitions: list[Transition] = []
    run_history(
        events,
        last_ts,
        today_config(config),
        on_signals=emissions.extend,
        on_transitions=transitions.extend,
        progress=False,
        rules=rules,
    )
    day_ms = config.day_ms
    out: dict[str, Any] = {
        "early_warning": warning_report(
            times, emissions, day_ms, horizon_ms, config.policy.defaults_ms[2]
        ),
        "tier_signals": tier_signal_report(
            events, config, emissions, horizon_ms, rules, (first_ts, last_ts)
        ),
    }
    if config.activation_types:
        deadline_ms = config.activation_days * day_ms
        out["activation"] = activation_cohorts(
            activation_marks(transitions), day_ms, deadline_ms, last_ts
        )
    return out


def warning_lines(report: dict[str, Any]) -> list[str]:
    """The early-warning part of the summary ``engagement evaluate`` prints."""
    lines = []
    for name, figures in report["early_warning"].items():
        if isinstance(figures, dict) and "warnings" in figures:
            lines.append(
                f"early warning {name}: warnings={figures['warnings']} "
                f"scored={figures['scored']} precision={figures['precision']:.3f} "
                f"lead days median={figures['lead_days_median']:.1f} "
                f"churn episodes warned={figures['churn_episodes_warned']}"
                f"/{figures['churn_episodes']}"
            )
    paired = report["early_warning"]["paired"]
    lines.append(
        f"early warning, both warned: churn episodes={paired['churn_episodes']} lead days median "
        f"declining={paired['declining_lead_days_median']:.1f} "
        f"rule={paired['halved_28_day_rule_lead_days_median']:.1f}"
    )
    if "tier_signals" in report:
        lines.extend(tier_lines(report["tier_signals"]))
    for cohort in report.get("activation", []):
        lines.append(
            f"activation cohort {cohort['cohort_start_ms']}: users={cohort['users']} "
            f"activated={cohort['activated']}/{cohort['past_deadline']}"
        )
    return lines
