"""Signals worth acting on: the population cadence of new users, the minimum risk
per tier, and the per-tier figures of ``engagement evaluate``.

A "day" is 1000 ms in the model tests; default tiers 7/14/30 days.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from agents.cli.main import main
from agents.offline.fit import history_cadence
from agents.offline.tier_signals import choose_min_risk, figures, judged_signals
from streams.decode import id_hash
from streams.model_settings import model_config
from streams.risk_params import load_risk_model
from streams.settings import Settings
from tables.engine import DictStore, PartitionEngine
from tables.errors import ConfigurationError
from tables.fold import folds_judging
from tables.judgement import next_change_ms
from tables.lifecycle import STAGE_ACTIVE
from tables.model import Emission, ModelConfig, ModelEvent
from tables.population import population_cadence
from tables.state import TIER_AT_RISK, TIER_NONE, UserState
from tables.thresholds import (
    SOURCE_DEFAULT,
    SOURCE_POPULATION,
    SOURCE_SEGMENT,
    SOURCE_USER,
    ThresholdPolicy,
)

DAY_MS = 1_000
T0 = 1_700_000_000_000
DEFAULTS = (7 * DAY_MS, 14 * DAY_MS, 30 * DAY_MS)
POLICY = ThresholdPolicy(
    defaults_ms=DEFAULTS,
    min_ms=2 * DAY_MS,
    max_ms=120 * DAY_MS,
    user_min_active_days=5,
    day_ms=DAY_MS,
)
CONFIG = ModelConfig(
    policy=POLICY, lateness_ms=0, day_ms=DAY_MS, horizon_ms=30 * DAY_MS, new_days=0
)


def state(active_days: int, gap: int, tenant: str = "", segment: str = "") -> UserState:
    return UserState(
        T0, T0, active_days=active_days, usual_gap_centidays=gap, tenant=tenant, segment=segment
    )


def event(user: str, ts_ms: int, tenant: str = "", segment: str = "") -> ModelEvent:
    return ModelEvent(
        user_id=user,
        id_hash=id_hash(f"{user}@{ts_ms}"),
        type="visit",
        ts_ms=ts_ms,
        append_ms=ts_ms,
        tenant=tenant,
        segment=segment,
    )


# -- the population cadence ------------------------------------------------------


def test_the_cadence_is_the_lower_median_gap_of_users_whose_own_is_known() -> None:
    states = [state(5, gap, "acme", "vip") for gap in (100, 300, 200, 400)]
    states += [state(9, 1_000, "acme") for _ in range(3)]
    states += [state(4, 50, "acme", "vip"), state(9, 0, "acme", "vip")]  # not known yet
    states += [state(6, 700, "globex")]  # too few users
    cadence = population_cadence(states, min_active_days=5, min_users=3)
    # acme/vip: 100 200 300 400 -> the lower middle is 200; acme: those 4 and 3 x 1000
    assert cadence == {"acme/vip": 200, "acme": 400}


def test_thresholds_take_the_population_cadence_after_the_users_own_and_the_versions() -> None:
    policy = msgspec.structs.replace(
        POLICY,
        population={"acme/vip": 200, "acme": 1_000},
        overrides={"globex": (1_000, 2_000, 3_000)},
    )
    # segment cadence, else the tenant's: 3/6/12 gaps within 2..120 days
    assert policy.resolve(state(1, 0, "acme", "vip")) == (
        (6_000, 12_000, 24_000),
        SOURCE_POPULATION,
    )
    assert policy.resolve(state(4, 100, "acme", "pro")) == (
        (30_000, 60_000, 120_000),
        SOURCE_POPULATION,
    )
    assert policy.resolve(state(5, 100, "acme", "vip"))[1] == SOURCE_USER
    assert policy.resolve(state(1, 0, "globex"))[1] != SOURCE_POPULATION  # the version first
    assert policy.resolve(state(1, 0, "initech")) == (DEFAULTS, SOURCE_DEFAULT)
    with_segment = msgspec.structs.replace(policy, overrides={"acme/vip": (1, 2, 3)})
    assert with_segment.resolve(state(1, 0, "acme", "vip"))[1] == SOURCE_SEGMENT


def test_a_monthly_newcomer_is_not_churned_after_thirty_days_of_its_usual_silence() -> None:
    """The issue's case: a monthly population, a new user seen twice a month apart."""
    monthly = msgspec.structs.replace(
        CONFIG, policy=msgspec.structs.replace(POLICY, population={"": 3_000})
    )
    assert not folds_judging(monthly)  # a population cadence is judged event by event
    engine = PartitionEngine(0, monthly, DictStore())
    engine.on_event(event("m", T0))
    engine.on_event(event("m", T0 + 30 * DAY_MS))
    assert engine.advance_to(T0 + 30 * DAY_MS + 60 * DAY_MS) == []  # 60 silent days
    emitted = engine.advance_to(T0 + 30 * DAY_MS + 90 * DAY_MS)
    assert [(e.kind, e.threshold_ms, e.threshold_source) for e in emitted] == [
        ("at_risk", 90 * DAY_MS, SOURCE_POPULATION)
    ]
    plain = PartitionEngine(0, CONFIG, DictStore())
    plain.on_event(event("m", T0))
    plain.on_event(event("m", T0 + 30 * DAY_MS))
    kinds = [e.kind for e in plain.advance_to(T0 + 30 * DAY_MS + 60 * DAY_MS)]
    assert kinds == ["at_risk", "dormant", "churned"]


def test_a_population_cadence_counts_with_the_users_own_thresholds_off() -> None:
    """With per-user thresholds off, the due time and the judgement both take the
    population's tiers (the due time once took the defaults: the judgement never
    found its tier and looped)."""
    policy = msgspec.structs.replace(POLICY, user_min_active_days=0, population={"": 3_000})
    config = msgspec.structs.replace(CONFIG, policy=policy)
    user = msgspec.structs.replace(state(1, 0), stage=STAGE_ACTIVE)
    assert next_change_ms(user, config) == T0 + 90 * DAY_MS  # 3 days' gap x 30
    engine = PartitionEngine(0, config, DictStore())
    engine.on_event(event("p", T0))
    assert engine.advance_to(T0 + 89 * DAY_MS) == []
    emitted = engine.advance_to(T0 + 200 * DAY_MS)
    assert [(e.kind, e.threshold_source) for e in emitted] == [
        ("at_risk", SOURCE_POPULATION),
        ("dormant", SOURCE_POPULATION),
        ("churned", SOURCE_POPULATION),
    ]


def test_fit_learns_the_cadence_of_a_history(tmp_path: Path) -> None:
    history = tmp_path / "events.jsonl"
    day = 86_400_000
    lines = [
        {"event_id": f"{user}-{n}", "user_id": user, "type": "visit", "ts": T0 + n * gap * day}
        for user, gap in [(f"u{i}", 2 + i % 3) for i in range(25)]
        for n in range(8)
    ]
    history.write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = model_config(Settings())
    cadence = history_cadence(history, T0 + 40 * day, config)
    # gaps 2, 3, 4 days for 9, 8, 8 users: the lower median is 3 days
    assert cadence == {"": 300}
    out = tmp_path / "risk-params.json"
    args = ["fit", str(history), "--cutoff", str(T0 + 40 * day), "--model", "mbg_nbd"]
    done = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert json.loads(out.read_text())["cadence"] == {"": 300}
    assert load_risk_model(out, day, None).cadence == {"": 300}


def test_a_model_file_carries_the_cadence_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "risk-params.json"
    document = {"model": "mbg_nbd", "r": 0.5, "alpha": 3.0, "a": 0.5, "b": 3.0}
    path.write_text(json.dumps({**document, "cadence": {"acme": 700}}))
    assert load_risk_model(path, 86_400_000, None).cadence == {"acme": 700}
    config = model_config(Settings(risk_params=str(path)))
    assert config.policy.population == {"acme": 700}
    for bad in ({"acme": 0}, {"acme": 70_000}, ["acme"]):
        path.write_text(json.dumps({**document, "cadence": bad}))
        with pytest.raises(ConfigurationError):
            load_risk_model(path, 86_400_000, None)


# -- the minimum risk per tier ---------------------------------------------------


def test_settings_give_the_minimum_risks_and_refuse_one_outside_zero_to_one() -> None:
    assert model_config(Settings()).min_risk == (0.0, 0.0, 0.0)
    settings = Settings(min_risk_at_risk=0.2, min_risk_dormant=0.3, min_risk_churned=0.4)
    assert model_config(settings).min_risk == (0.2, 0.3, 0.4)
    with pytest.raises(ValueError, match="min_risk"):
        Settings(min_risk_churned=1.5)


def _engine(min_risk: tuple[float, float, float]) -> tuple[PartitionEngine, DictStore]:
    store = DictStore()
    config = msgspec.structs.replace(CONFIG, min_risk=min_risk)
    engine = PartitionEngine(0, config, store, users=store.items_list)
    for day in range(10):
        engine.on_event(event("u", T0 + day * DAY_MS))
    return engine, store


def test_a_tier_below_its_minimum_moves_the_stage_without_a_signal() -> None:
    reference, _ = _engine((0.0, 0.0, 0.0))
    # a daily user: its own tiers after 3, 6 and 12 silent days
    risks = {e.kind: e.risk for e in reference.advance_to(T0 + 9 * DAY_MS + 13 * DAY_MS)}
    # a minimum just above the at_risk signal's risk and at the dormant one's
    gates = (risks["at_risk"] + 0.01, risks["dormant"], 1.0)
    engine, store = _engine(gates)
    emitted = engine.advance_to(T0 + 9 * DAY_MS + 4 * DAY_MS)
    assert emitted == []
    user = store.get("u")
    assert user is not None and user.tier == TIER_AT_RISK and user.first_signal_as_of_ms == 0
    moved = engine.take_transitions()
    assert [t.to_stage for t in moved] == ["new", "active", "at_risk"]
    later = engine.advance_to(T0 + 9 * DAY_MS + 13 * DAY_MS)
    assert [e.kind for e in later] == ["dormant"]  # the churned one is below 1.0
    assert [t.to_stage for t in engine.take_transitions()] == ["dormant", "churned"]
    user = store.get("u")
    assert user is not None and user.first_signal_as_of_ms == later[0].as_of


def test_a_return_from_an_episode_without_a_signal_is_no_reactivated() -> None:
    engine, store = _engine((1.0, 1.0, 1.0))
    assert engine.advance_to(T0 + 9 * DAY_MS + 40 * DAY_MS) == []
    engine.take_transitions()
    result = engine.on_event(event("u", T0 + 50 * DAY_MS))
    assert result.emissions == []
    assert [t.to_stage for t in engine.take_transitions()] == ["resurrected"]
    user = store.get("u")
    assert user is not None and user.tier == TIER_NONE


# -- the per-tier figures --------------------------------------------------------


def _signal(kind: str, user: str, as_of: int, risk: float, threshold_ms: int) -> Emission:
    return Emission(
        kind=kind,
        user_id=user,
        tenant="",
        segment="",
        episode=0,
        as_of=as_of,
        last_seen=0,
        inactive_ms=0,
        threshold_ms=threshold_ms,
        threshold_source=SOURCE_DEFAULT,
        risk=risk,
        horizon_ms=30,
        reasons=(),
        group="treatment",
    )


def test_tier_figures_count_users_who_stay_inactive_and_returns_within_a_threshold() -> None:
    times = {"back": [0, 105], "late": [0, 125], "gone": [0], "beyond": [0, 500]}
    signals = [
        _signal("at_risk", "back", 100, 0.1, 7),  # returns at 105: within 7, within 30
        _signal("at_risk", "late", 100, 0.5, 7),  # returns at 125: after 7, within 30
        _signal("at_risk", "gone", 100, 0.9, 7),  # never returns
        _signal("dormant", "beyond", 100, 0.6, 14),  # returns after the horizon
        _signal("churned", "gone", 990, 0.9, 30),  # its horizon outlasts the history
        _signal("reactivated", "back", 105, 0.1, 7),  # not a tier
    ]
    judged = judged_signals(signals, times, horizon_ms=30, end_ms=1_000)
    assert judged == [
        ("at_risk", 100, 0.1, False, True),
        ("at_risk", 100, 0.5, False, False),
        ("at_risk", 100, 0.9, True, False),
        ("dormant", 100, 0.6, True, False),
    ]
    at_risk = judged[:3]
    assert figures(at_risk, 0.0) | {"precision": None} == {
        "min_risk": 0.0,
        "signals": 3,
        "stayed_inactive": 1,
        "precision": None,
        "returned_within_threshold": pytest.approx(1 / 3),
    }
    assert figures(at_risk, 0.5)["precision"] == pytest.approx(0.5)
    # the one user who stays inactive has risk 0.9: every candidate up to 0.9 keeps them
    assert choose_min_risk(at_risk) == pytest.approx(0.9)
