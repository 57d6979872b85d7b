"""The declining signal (tables.decline): a fading user is warned of before silence.

Production settings throughout (days of 24 h, 7/14/30-day tiers, per-user
thresholds from 5 active days, sensitivity ``ENGAGEMENT_DECLINE_SENSITIVITY``'s
default); the expected figures are worked out by hand from docs/MODEL.md.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.decode import id_hash
from streams.model_settings import model_config
from streams.settings import Settings
from tables.decline import (
    BASELINE_STEP,
    BASELINE_UNITS,
    baseline_rate,
    judge_decline,
    next_baseline,
    recent_days,
)
from tables.engine import DictStore
from tables.history import run_records, run_users
from tables.model import Emission, ModelConfig, ModelEvent
from tables.processor import PartitionProcessor

DAY_MS = 86_400_000
T0 = 1_800_000_000_000 // DAY_MS * DAY_MS
CONFIG = model_config(Settings(holdout_salt="s"))


def visit(user: str, day: int, hour: int = 10) -> ModelEvent:
    ts = T0 + day * DAY_MS + hour * 3_600_000
    return ModelEvent(user, id_hash(f"{user}-{day}-{hour}"), "view", ts, ts)


def fader_days() -> list[int]:
    """Daily for 40 days, then every 2 days for a month, then every 3 days."""
    return list(range(40)) + list(range(40, 70, 2)) + list(range(70, 160, 3))


def run(days_by_user: dict[str, list[int]], config: ModelConfig = CONFIG) -> list[Emission]:
    events = sorted(
        (visit(user, day) for user, days in days_by_user.items() for day in days),
        key=lambda e: e.ts_ms,
    )
    processor = PartitionProcessor(0, config, DictStore())
    out: list[Emission] = []
    for event in events:
        out.extend(processor.process(event, event.append_ms).emissions)
    out.extend(processor.engine.advance_to(events[-1].ts_ms))
    return out


def test_the_default_sensitivity_is_on() -> None:
    assert 0 < CONFIG.decline_sensitivity < 1


def test_a_fading_user_gets_declining_before_any_at_risk_and_a_steady_one_nothing() -> None:
    emissions = run({"fader": fader_days(), "steady": list(range(160))})
    assert [e for e in emissions if e.user_id == "steady"] == []
    fader = [(e.kind, (e.as_of - T0) // DAY_MS) for e in emissions if e.user_id == "fader"]
    assert fader and fader[0][0] == "declining"
    # after the fade began, within a month of the every-third-day rhythm
    assert 40 < fader[0][1] <= 100
    assert [kind for kind, _day in fader].count("declining") == 1


def test_the_adaptive_thresholds_alone_never_flag_the_fader() -> None:
    # the usual gap follows the fader within a few gaps: without the decline
    # rule it is never at risk, which is why the rule exists
    off = model_config(Settings(holdout_salt="s", decline_sensitivity=0))
    assert run({"fader": fader_days()}, off) == []


def test_declining_carries_its_figures_and_a_stable_id() -> None:
    (signal,) = [e for e in run({"fader": fader_days()}) if e.kind == "declining"]
    day = (signal.as_of - T0) // DAY_MS
    recent = sum(1 for d in fader_days() if day - 14 < d <= day)
    assert signal.signal_id == f"fader:{signal.as_of}:declining"
    assert signal.episode == signal.as_of == signal.last_seen
    assert signal.inactive_ms == 0
    codes = {r.code: r for r in signal.reasons}
    assert codes["recent_active_days"].value == recent
    assert codes["active_day_rate"].value == round(recent / 14, 3)
    # the baseline still remembers the daily rhythm: well above the recent rate
    baseline = codes["active_day_rate"].baseline
    assert baseline is not None and recent / 14 < CONFIG.decline_sensitivity * baseline
    assert 1 / 3 < baseline < 1.0


def test_the_episode_ends_when_the_rate_recovers_and_a_new_decline_fires_again() -> None:
    days = (
        list(range(40))
        + list(range(40, 70, 3))  # fades
        + list(range(70, 110))  # back to daily: the episode closes
        + list(range(110, 160, 4))  # fades again
    )
    declines = [(e.as_of - T0) // DAY_MS for e in run({"u": days}) if e.kind == "declining"]
    assert len(declines) == 2
    assert 40 < declines[0] < 70 and 110 < declines[1] < 160


def test_a_user_with_a_short_history_is_not_judged() -> None:
    # a fast fade within the first 28 days: too little history for a baseline
    assert [e for e in run({"u": [*range(10), 12, 15, 19, 24]}) if e.kind == "declining"] == []


def test_the_offline_fast_path_decides_the_same_as_the_processor() -> None:
    events = sorted(
        (
            visit(user, day)
            for user, days in {"fader": fader_days(), "steady": list(range(160))}.items()
            for day in days
        ),
        key=lambda e: e.ts_ms,
    )
    end = events[-1].ts_ms + 40 * DAY_MS
    by_user = run_users(events, CONFIG, end)
    by_record = run_records(events, CONFIG, end)
    assert by_user.emissions == by_record.emissions
    assert by_user.states == dict(by_record.states)
    assert any(e.kind == "declining" for e in by_user.emissions)


# -- the arithmetic --------------------------------------------------------------


def test_the_baseline_decays_over_silent_days_and_adds_the_new_day() -> None:
    assert next_baseline(0, 1) == BASELINE_STEP
    assert next_baseline(5_000, 1) == round(5_000 * 0.98) + 200
    assert next_baseline(5_000, 3) == round(5_000 * 0.98**3) + 200
    assert next_baseline(BASELINE_UNITS, 1) == BASELINE_UNITS  # a daily user's fixed point


@given(history=st.integers(1, 2_000))
@settings(max_examples=200, deadline=None)
def test_an_always_active_user_has_a_baseline_rate_of_about_one(history: int) -> None:
    baseline = BASELINE_STEP
    for _day in range(history - 1):
        baseline = next_baseline(baseline, 1)
    # rounding to whole units keeps it within a few units of 1 per day
    assert baseline_rate(baseline, history) == pytest.approx(1.0, abs=0.02)


def test_recent_days_counts_active_days_in_the_14_days_ending_on_a_day() -> None:
    counts = bytes([1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 5]) + bytes(13)
    assert recent_days(counts) == 3  # the fifth, 14 days back, is outside
    assert recent_days(counts, 1) == 2
    assert recent_days(counts, 14) == 0


@pytest.mark.parametrize(
    ("is_open", "recent", "expected"),
    [
        (False, 5, True),  # 5 < 0.6 * 14 * B = 8.4
        (False, 9, False),
        (True, 10, True),  # still below (1 + 0.6) / 2 * 14 = 11.2
        (True, 12, False),  # recovered
    ],
)
def test_an_episode_opens_below_the_sensitivity_and_closes_halfway_back(
    is_open: bool, recent: int, expected: bool
) -> None:
    full = BASELINE_UNITS  # B = 1 with a long history
    assert judge_decline(is_open, recent, full, 2_000, 0.6) is expected


def test_nothing_is_judged_off_or_before_28_days_or_on_a_thin_baseline() -> None:
    assert judge_decline(False, 0, BASELINE_UNITS, 2_000, 0.0) is False
    assert judge_decline(False, 0, BASELINE_UNITS, 27, 0.6) is False
    # a baseline of 0.2 active days a day expects 2.8 days in 14: too thin to judge
    assert judge_decline(False, 0, 2_000, 2_000, 0.6) is False
