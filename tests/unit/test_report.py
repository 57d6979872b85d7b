"""``engagement report``: reactivation per group and tier, intervals, uplift, charts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agents.cli.main import main
from agents.offline.report import (
    build_report,
    episodes_of,
    kaplan_meier,
    lifecycle_counts,
    newcombe,
    wilson,
)
from streams.records import LifecycleTransition, Signal, encode

DAY_MS = 86_400_000
T0 = 1_700_000_000_000


def tier(user: str, group: str, kind: str, episode: int = T0, after_days: int = 7) -> Signal:
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
    assert (treated["episodes"], treated["reactivated"]) == (41, 20)
    assert (held["episodes"], held["reactivated"]) == (20, 5)
    assert treated["ci95"] == pytest.approx(list(wilson(20, 41)))
    assert report["uplift"]["difference"] == pytest.approx(20 / 41 - 5 / 20)
    low, high = report["uplift"]["ci95"]
    assert low < report["uplift"]["difference"] < high
    assert report["by_tier"]["churned"]["treatment"]["episodes"] == 1
    assert report["by_tier"]["at_risk"]["holdout"]["reactivated"] == 5


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
