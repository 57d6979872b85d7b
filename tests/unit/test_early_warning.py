"""The early-warning figures of ``engagement evaluate`` and the activation cohorts,
on small histories worked out by hand."""

from __future__ import annotations

import math

from agents.offline.early_warning import (
    activation_cohorts,
    churn_starts,
    halved_rule,
    score_warnings,
    warning_report,
)
from streams.decode import id_hash
from streams.model_settings import model_config
from streams.settings import Settings
from tables.history import run_users
from tables.model import ModelEvent

DAY_MS = 86_400_000


def test_churn_starts_are_active_days_followed_by_a_long_enough_silence() -> None:
    assert churn_starts([0, 1, 40, 41], 100, 30) == [1, 41]
    assert churn_starts([0, 31], 60, 30) == [0]  # 31 - 0 > 30: no activity in days 1..30
    assert churn_starts([0, 30], 59, 30) == []  # day 30 is inside the window; 59 - 30 < 30


def test_the_halved_rule_warns_once_when_28_days_hold_half_the_28_before() -> None:
    # active every day 0..55, then every third day
    days = [*range(56), *range(58, 120, 3)]

    def holds(day: int) -> bool:
        recent = sum(1 for d in days if day - 28 < d <= day)
        before = sum(1 for d in days if day - 56 < d <= day - 28)
        return before > 0 and 2 * recent <= before

    warned = halved_rule(days, 120)
    assert warned
    # each warning starts a run of days on which the condition holds
    assert [day for day in range(55, 121) if holds(day) and not holds(day - 1)] == warned
    # a steady user never triggers it; nor before 56 days of history
    assert halved_rule(list(range(200)), 200) == []
    assert halved_rule([0, 1, 2], 40) == []


def test_a_warning_is_a_hit_when_churn_starts_within_the_horizon() -> None:
    days = {"gone": [*range(50), 60], "stays": list(range(200))}
    warnings = {"gone": [55 * DAY_MS], "stays": [100 * DAY_MS, 190 * DAY_MS]}
    at_risk = {("gone", 60): 63 * DAY_MS}
    figures = score_warnings(warnings, days, at_risk, 200, 30, 30, DAY_MS)
    # the warning at day 190 cannot be scored (its label lies past the end)
    assert (figures["warnings"], figures["scored"], figures["hits"]) == (3, 2, 1)
    assert figures["precision"] == 0.5
    assert figures["lead_days_median"] == 8.0  # at_risk on day 63, warned on day 55
    assert figures["churn_episodes"] == 1 and figures["churn_episodes_warned"] == 1


def test_the_report_pairs_leads_on_churn_episodes_both_methods_warned_of() -> None:
    config = model_config(Settings(holdout_salt="s"))
    days = [*range(60), *range(60, 100, 3)]  # daily, then every third day, then gone
    events = [
        ModelEvent("u", id_hash(f"u{d}"), "view", d * DAY_MS + 1, d * DAY_MS + 1) for d in days
    ]
    end_ms = 200 * DAY_MS
    history = run_users(events, config, end_ms)
    times = [(e.user_id, e.ts_ms) for e in events] + [("other", end_ms)]
    report = warning_report(times, history.emissions, DAY_MS, 30 * DAY_MS, 30 * DAY_MS)
    ours, rule, paired = report["declining"], report["halved_28_day_rule"], report["paired"]
    assert ours["hits"] == ours["scored"] == 1 and rule["hits"] >= 1
    assert paired["churn_episodes"] == 1
    # the slow baseline notices the fade before the 28-day count halves
    assert paired["declining_lead_days_median"] > paired["halved_28_day_rule_lead_days_median"]


def test_activation_rate_per_weekly_cohort_counts_users_past_the_deadline() -> None:
    week = 7 * DAY_MS
    marks = [
        ("a", "new", 0),
        ("a", "activated", 2 * DAY_MS),
        ("b", "new", DAY_MS),
        ("b", "not_activated", 4 * DAY_MS),
        ("c", "new", 2 * DAY_MS),
        ("c", "activated", 6 * DAY_MS),  # after its 3-day deadline
        ("d", "new", week + DAY_MS),
        ("d", "activated", week + DAY_MS),
        ("e", "new", 2 * week - DAY_MS),  # deadline after the end
    ]
    first, second = activation_cohorts(marks, DAY_MS, 3 * DAY_MS, 2 * week)
    assert (first["users"], first["past_deadline"], first["activated"]) == (3, 3, 1)
    assert math.isclose(first["activation_rate"], 1 / 3)
    assert (second["cohort_start_ms"], second["users"], second["past_deadline"]) == (week, 2, 1)
    assert second["activation_rate"] == 1.0
