"""``engagement report``: win-back per group and first tier, intervals, uplift, charts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agents.cli.main import main
from agents.offline.history_facts import HistoryFacts
from agents.offline.report import build_report, episodes_of, lifecycle_counts
from agents.offline.report_files import write_report
from agents.offline.report_stats import (
    bootstrap_difference,
    by_user,
    kaplan_meier,
    newcombe,
    wilson,
)
from streams.records import LifecycleTransition, Signal, encode

DAY_MS = 86_400_000
T0 = 1_700_000_000_000


def tier(
    user: str,
    group: str,
    kind: str,
    episode: int = T0,
    after_days: int = 7,
    arm: str | None = None,
) -> Signal:
    return Signal(
        signal_id=f"{user}:{episode}:{kind}",
        kind=kind,
        user_id=user,
        tenant="",
        segment="",
        episode=episode,
        as_of=episode + after_days * DAY_MS,
        last_seen=episode,
        inactive_ms=after_days * DAY_MS,
        threshold_ms=after_days * DAY_MS,
        threshold_source="default",
        risk=0.5,
        horizon_ms=30 * DAY_MS,
        reasons=(),
        group=group,
        arm=arm,
    )


def back(user: str, group: str, return_day: int, reached: str = "at_risk") -> Signal:
    signal = tier(user, group, "reactivated", after_days=return_day)
    return Signal(
        **{
            **{f: getattr(signal, f) for f in signal.__struct_fields__},
            "tier_reached": reached,
            "gap_ms": return_day * DAY_MS,
            "time_to_return_ms": (return_day - 7) * DAY_MS,
        }
    )


def population() -> list[Signal]:
    """40 treated episodes (20 come back), 20 held out (5 come back), all at_risk."""
    signals = []
    for i in range(40):
        signals.append(tier(f"t{i}", "treatment", "at_risk"))
        if i < 20:
            signals.append(back(f"t{i}", "treatment", 10))
    for i in range(20):
        signals.append(tier(f"h{i}", "holdout", "at_risk"))
        if i < 5:
            signals.append(back(f"h{i}", "holdout", 12))
    # A churned episode that never returns, and one too recent to judge.
    signals += [tier("c", "treatment", "at_risk"), tier("c", "treatment", "churned", after_days=30)]
    signals.append(tier("late", "treatment", "at_risk", episode=T0 + 60 * DAY_MS))
    return signals


def test_rates_intervals_and_uplift_per_group_and_tier() -> None:
    signals = population()
    report = build_report(signals + signals[:5], 30 * DAY_MS)  # duplicates collapse
    assert report["episodes"] == 62
    assert report["eligible_episodes"] == 61  # "late" had no full window
    treated, held = report["groups"]["treatment"], report["groups"]["holdout"]
    assert report["outcome"] == "return"  # no history: any return counts
    assert (treated["episodes"], treated["successes"]) == (41, 20)
    assert (held["episodes"], held["successes"]) == (20, 5)
    assert treated["ci95"] == pytest.approx(list(wilson(20, 41)))
    assert report["uplift"]["difference"] == pytest.approx(20 / 41 - 5 / 20)
    low, high = report["uplift"]["ci95"]
    assert low < report["uplift"]["difference"] < high
    # "c" reached churned, but its episode began (was assigned) at at_risk
    assert report["by_first_tier"]["churned"]["treatment"]["episodes"] == 0
    assert report["by_first_tier"]["at_risk"]["treatment"]["episodes"] == 41
    assert report["by_first_tier"]["at_risk"]["holdout"]["successes"] == 5


def test_an_episode_is_stratified_by_its_first_signal_not_the_tier_at_return() -> None:
    signals = [
        tier("u", "treatment", "at_risk"),
        tier("u", "treatment", "dormant", after_days=14),
        back("u", "treatment", 20, "dormant"),
    ]
    report = build_report(signals, 30 * DAY_MS, as_of_ms=T0 + 60 * DAY_MS)
    assert report["by_first_tier"]["at_risk"]["treatment"]["successes"] == 1
    assert report["by_first_tier"]["dormant"]["treatment"]["episodes"] == 0


def facts(active_days: dict[str, list[int]]) -> HistoryFacts:
    return HistoryFacts(cells={}, active_days=active_days, period_ms=7 * DAY_MS, end_ms=0)


def test_only_a_lasting_return_counts_when_the_history_is_known() -> None:
    day0 = T0 // DAY_MS
    signals = [
        tier("once", "treatment", "at_risk"),
        back("once", "treatment", 10),
        tier("stays", "treatment", "at_risk"),
        back("stays", "treatment", 10),
        tier("slow", "treatment", "at_risk"),
        back("slow", "treatment", 10),
    ]
    history = facts(
        {
            "once": [day0, day0 + 10],  # came back for one day only
            "stays": [day0, day0 + 10, day0 + 12, day0 + 20],  # 3 days within 14 of the return
            "slow": [day0, day0 + 10, day0 + 12, day0 + 24],  # the third is day 14: too late
        }
    )
    report = build_report(signals, 30 * DAY_MS, T0 + 60 * DAY_MS, DAY_MS, history, 3, 14)
    assert report["outcome"] == "lasting_return"
    assert report["groups"]["treatment"]["episodes"] == 3
    assert report["groups"]["treatment"]["successes"] == 1
    # without the history, every return counts
    assert (
        build_report(signals, 30 * DAY_MS, T0 + 60 * DAY_MS)["groups"]["treatment"]["successes"]
        == 3
    )


def test_a_lasting_return_needs_its_window_observed() -> None:
    signals = [tier("u", "treatment", "at_risk")]
    history = facts({"u": [T0 // DAY_MS]})
    # first signal at day 7; window 30 d + 14 d of lasting: eligible from day 51 on
    assert (
        build_report(signals, 30 * DAY_MS, T0 + 50 * DAY_MS, DAY_MS, history)["eligible_episodes"]
        == 0
    )
    assert (
        build_report(signals, 30 * DAY_MS, T0 + 51 * DAY_MS, DAY_MS, history)["eligible_episodes"]
        == 1
    )


def test_the_bootstrap_resamples_users_not_episodes() -> None:
    # treatment: one user wins back 10 times, 9 users fail once; holdout: 10 fail once.
    treated = [("heavy", 1)] * 10 + [(f"t{i}", 0) for i in range(9)]
    held = [(f"h{i}", 0) for i in range(10)]
    low, high = bootstrap_difference(by_user(treated), by_user(held))
    # a resample misses the heavy user with probability 0.9 ** 10 (about 0.35)
    assert low == 0.0 < 10 / 19 < high
    # resampled as 19 independent episodes, the interval would exclude 0
    episodes = [(o, 1) for _u, o in treated]
    assert bootstrap_difference(episodes, by_user(held))[0] > 0.2


def test_each_experiment_arm_has_its_own_uplift() -> None:
    signals = []
    for i in range(10):
        signals.append(tier(f"a{i}", "treatment", "at_risk", arm="single_visit"))
        signals.append(back(f"a{i}", "treatment", 10))
        signals.append(tier(f"b{i}", "holdout", "at_risk", arm="single_visit"))
        signals.append(tier(f"c{i}", "treatment", "at_risk", arm="other"))
        signals.append(tier(f"d{i}", "holdout", "at_risk", arm="other"))
    report = build_report(signals, 30 * DAY_MS, T0 + 60 * DAY_MS)
    assert sorted(report["by_arm"]) == ["other", "single_visit"]
    assert report["by_arm"]["single_visit"]["uplift"]["difference"] == pytest.approx(1.0)
    assert report["by_arm"]["other"]["uplift"]["difference"] == pytest.approx(0.0)


def test_wilson_and_newcombe_match_published_values() -> None:
    # Newcombe (1998): Wilson for 81/263; the difference 56/70 - 48/80 (method 10).
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert newcombe(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)


def test_retention_curve_censors_episodes_still_open() -> None:
    curve = kaplan_meier([2 * DAY_MS, 5 * DAY_MS, 3 * DAY_MS], [True, True, False], DAY_MS, 6)
    assert curve[1] == 0.0
    assert curve[2] == pytest.approx(1 / 3)
    assert curve[5] == pytest.approx(1 - (2 / 3) * (0 / 1))  # last one at risk returns


def test_episodes_keep_the_tier_reached_at_return() -> None:
    episodes = episodes_of(
        [tier("u", "treatment", "at_risk"), back("u", "treatment", 20, "dormant")]
    )
    assert episodes[0].tier_at_return == "dormant"
    assert episodes[0].returned_after_ms == 13 * DAY_MS


def test_declining_and_not_activated_open_no_episode_of_silence() -> None:
    # a decline detected at the user's last event shares that instant with the
    # silence that follows: still only the tiers make the episode
    warned = tier("u", "treatment", "declining", after_days=0)
    late = tier("u", "treatment", "not_activated", after_days=3)
    (episode,) = episodes_of([warned, late, tier("u", "treatment", "at_risk")])
    assert episode.tiers == [(T0 + 7 * DAY_MS, "at_risk")]
    assert episode.first_as_of == T0 + 7 * DAY_MS


def test_activation_rate_per_cohort_is_reported_from_the_lifecycle_file(tmp_path: Path) -> None:
    week = 7 * DAY_MS
    start = T0 // week * week

    def move(user: str, from_stage: str | None, to_stage: str, at: int, code: str = "") -> str:
        reasons = [{"code": code, "value": 1.0, "baseline": None}] if code else []
        return json.dumps(
            {
                "transition_id": f"{user}:{at}:{to_stage}",
                "user_id": user,
                "tenant": "",
                "segment": "",
                "from_stage": from_stage,
                "to_stage": to_stage,
                "as_of": at,
                "episode": at,
                "reasons": reasons,
                "group": "treatment",
            }
        )

    lifecycle = tmp_path / "lifecycle.jsonl"
    lifecycle.write_text(
        "\n".join(
            [
                move("a", None, "new", start),
                move("a", "new", "active", start + DAY_MS, "activated_after_days"),
                move("b", None, "new", start + DAY_MS),
                move("b", "new", "not_activated", start + 8 * DAY_MS),
            ]
        )
        + "\n"
    )
    signals = tmp_path / "signals.jsonl"
    signals.write_bytes(encode(tier("a", "treatment", "at_risk")) + b"\n")
    report = write_report(
        signals,
        tmp_path / "out",
        30 * DAY_MS,
        start + 20 * DAY_MS,
        lifecycle,
        DAY_MS,
        activation_deadline_ms=7 * DAY_MS,
    )
    (cohort,) = report["activation"]
    assert (cohort["users"], cohort["past_deadline"], cohort["activated"]) == (2, 2, 1)
    assert "Activation per weekly cohort" in (tmp_path / "out" / "report.html").read_text()


def test_a_churn_intent_is_no_tier_of_an_episode() -> None:
    """A cancellation's signal opens no tier episode; the tier of the same silence does."""
    intent = tier("u", "treatment", "churn_intent", after_days=1)
    (episode,) = episodes_of([intent, tier("u", "treatment", "at_risk")])
    assert episode.tiers == [(T0 + 7 * DAY_MS, "at_risk")]
    assert episodes_of([intent]) == []


def test_lifecycle_counts_follow_the_transitions() -> None:
    def move(user: str, old: str | None, new: str, day: int) -> LifecycleTransition:
        return LifecycleTransition(
            transition_id=f"{user}:{T0 + day * DAY_MS}:{new}",
            user_id=user,
            tenant="",
            segment="",
            from_stage=old,
            to_stage=new,
            as_of=T0 + day * DAY_MS,
            episode=T0,
            reasons=(),
            group="treatment",
        )

    times, series = lifecycle_counts(
        [move("a", None, "new", 0), move("b", None, "new", 1), move("a", "new", "active", 2)],
        DAY_MS,
    )
    assert len(times) == 3
    assert series["new"] == [1, 2, 1]
    assert series["active"] == [0, 0, 1]


def test_cli_writes_json_charts_and_html(tmp_path: Path) -> None:
    signals = tmp_path / "signals.jsonl"
    signals.write_bytes(b"".join(encode(s) + b"\n" for s in population()))
    lifecycle = tmp_path / "lifecycle.jsonl"
    lifecycle.write_bytes(
        encode(
            LifecycleTransition(
                transition_id="a:1:new",
                user_id="a",
                tenant="",
                segment="",
                from_stage=None,
                to_stage="new",
                as_of=T0,
                episode=T0,
                reasons=(),
                group="holdout",
            )
        )
        + b"\n"
    )
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main, ["report", str(signals), "--lifecycle", str(lifecycle), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["groups"]["holdout"]["episodes"] == 20
    for name in ("reactivation.png", "retention.png", "lifecycle.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert json.loads((out / "report.json").read_text())["eligible_episodes"] == 61


def test_cli_with_a_history_measures_lasting_returns_with_the_settings(tmp_path: Path) -> None:
    def line(user: str, day: int) -> str:
        ts = T0 + day * DAY_MS
        return json.dumps({"event_id": f"{user}-{day}", "user_id": user, "type": "login", "ts": ts})

    signals = tmp_path / "signals.jsonl"
    signals.write_bytes(
        b"".join(
            encode(s) + b"\n"
            for user in ("twice", "once")
            for s in (tier(user, "treatment", "at_risk"), back(user, "treatment", 10))
        )
    )
    history = tmp_path / "events.jsonl"
    days = {"twice": [0, 10, 11], "once": [0, 10]}
    history.write_text("".join(line(u, d) + "\n" for u, ds in days.items() for d in ds))
    out = tmp_path / "report"
    args = ["report", str(signals), "--history", str(history), "--out", str(out)]
    args += ["--as-of", str(T0 + 60 * DAY_MS)]
    env = {"ENGAGEMENT_WINBACK_LASTING_DAYS": "2", "ENGAGEMENT_WINBACK_WINDOW_DAYS": "7"}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["outcome"] == "lasting_return"
    assert summary["groups"]["treatment"]["successes"] == 1  # "once" came back for a day
    report = json.loads((out / "report.json").read_text())
    assert report["lasting_days"] == 2 and report["lasting_window_days"] == 7
    week_rows = report["cohorts"]["retention"]
    assert sum(row["size"] for row in week_rows) == 2
    assert "Cohort retention" in (out / "report.html").read_text()
