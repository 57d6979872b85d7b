"""Experiment arms per reason code: each signal's arm follows its episode's reason
codes, and each arm draws its own hold-out, salted with the experiment id."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from streams.decode import id_hash
from streams.settings import load_settings
from tables.engine import DictStore, PartitionEngine
from tables.errors import ConfigurationError
from tables.model import Emission, ModelConfig, ModelEvent
from tables.thresholds import ThresholdPolicy

DAY_MS = 1_000
T0 = 1_700_000_000_000
BASE = ModelConfig(
    policy=ThresholdPolicy(
        defaults_ms=(7 * DAY_MS, 14 * DAY_MS, 30 * DAY_MS), min_ms=DAY_MS, max_ms=90 * DAY_MS
    ),
    lateness_ms=0,
    day_ms=DAY_MS,
    horizon_ms=30 * DAY_MS,
    holdout_salt="salt",
    holdout_share=0.5,
)
ARMS = msgspec.structs.replace(
    BASE, experiment_id="spring", experiment_reasons=("recent_checkout_failed", "single_visit")
)


def reference_group(user_id: str, salt: str, share: float) -> str:
    """docs/CONTRACTS.md, Groups: written here from the text, not from tables.groups."""
    digest = hashlib.sha256((salt + user_id).encode()).digest()
    return "holdout" if int.from_bytes(digest[:8], "big") / 2**64 < share else "treatment"


def visit(user: str, ts_ms: int, kind: str = "visit") -> ModelEvent:
    return ModelEvent(user, id_hash(f"{user}@{ts_ms}@{kind}"), kind, ts_ms, ts_ms)


def episode_signals(config: ModelConfig, user: str, events: list[ModelEvent]) -> list[Emission]:
    engine = PartitionEngine(0, config, DictStore())
    for e in events:
        engine.on_event(e)
    signals = list(engine.advance_to(events[-1].ts_ms + 20 * DAY_MS))
    signals += engine.on_event(visit(user, events[-1].ts_ms + 25 * DAY_MS)).emissions
    return signals


@pytest.mark.parametrize("user", [f"u{i}" for i in range(12)])
def test_a_single_visit_gets_its_arm_and_that_arms_hold_out(user: str) -> None:
    signals = episode_signals(ARMS, user, [visit(user, T0)])
    assert [s.kind for s in signals] == ["at_risk", "dormant", "reactivated"]
    want = reference_group(user, "salt:spring:single_visit", 0.5)
    assert {(s.arm, s.group) for s in signals} == {("single_visit", want)}


@pytest.mark.parametrize("user", [f"v{i}" for i in range(12)])
def test_the_first_listed_code_wins_and_other_codes_fall_to_other(user: str) -> None:
    failed = [visit(user, T0), visit(user, T0 + DAY_MS, "checkout_failed")]
    signals = episode_signals(ARMS, user, failed)
    want = reference_group(user, "salt:spring:recent_checkout_failed", 0.5)
    assert {(s.arm, s.group) for s in signals} == {("recent_checkout_failed", want)}
    steady = [visit(user, T0 + n * DAY_MS) for n in range(4)]
    other = episode_signals(ARMS, user, steady)
    assert {s.arm for s in other} == {"other"}
    assert {s.group for s in other} == {reference_group(user, "salt:spring:other", 0.5)}


def test_without_an_experiment_signals_carry_no_arm_and_the_users_group() -> None:
    signals = episode_signals(BASE, "w", [visit("w", T0)])
    assert {(s.arm, s.group) for s in signals} == {(None, reference_group("w", "salt", 0.5))}


def test_arms_need_an_experiment_id() -> None:
    with pytest.raises(ConfigurationError, match="EXPERIMENT_ID"):
        load_settings(experiment_reasons="single_visit")
    assert load_settings(experiment_id="x", experiment_reasons="a, b").experiment_reasons == (
        "a",
        "b",
    )


def test_a_lasting_return_cannot_need_more_days_than_its_window() -> None:
    with pytest.raises(ConfigurationError, match="WINBACK_LASTING_DAYS"):
        load_settings(winback_lasting_days=15, winback_window_days=14)
