"""What counts as activity, churn intent and who gets tiers (tables/activity.py,
tables/intent.py), through the record processor under the production defaults."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.config_record import parse_config_record
from streams.control import ControlSigner
from streams.decode import DecodeRules, decode_record, id_hash
from streams.inputs import control_input
from streams.model_settings import model_config
from streams.settings import Settings, load_settings
from streams.validate import Rejected
from tables.activity import ACTIVE, CHURN_INTENT, NEGATIVE, PASSIVE, ActivityTypes
from tables.engine import DictStore
from tables.model import APPLIED, Emission, ModelEvent
from tables.model import PASSIVE as PASSIVE_OUTCOME
from tables.processor import PartitionProcessor, RecordResult

DAY_MS = 86_400_000
T0 = 1_800_000_000_000 // DAY_MS * DAY_MS
SETTINGS = Settings(holdout_salt="s", erasure_salt="e")


class Run:
    """One partition's processor, events fed in order; the signals kept."""

    def __init__(self, settings: Settings = SETTINGS) -> None:
        self.store = DictStore()
        self.processor = PartitionProcessor(0, model_config(settings), self.store)
        self.signals: list[Emission] = []
        self.offset = 0

    def event(
        self,
        type_: str,
        at_ms: int,
        user: str = "u",
        *,
        tenant: str | None = None,
        anonymous: bool | None = None,
    ) -> RecordResult:
        self.offset += 1
        event = ModelEvent(
            user,
            id_hash(f"e{self.offset}"),
            type_,
            at_ms,
            at_ms,
            0,
            self.offset,
            tenant,
            None,
            anonymous,
        )
        result = self.processor.on_event(event)
        self.signals += result.emissions
        return result

    def advance(self, to_ms: int) -> list[Emission]:
        emitted = self.processor.engine.advance_to(to_ms)
        self.signals += emitted
        return emitted

    def kinds(self) -> list[str]:
        return [signal.kind for signal in self.signals]


def daily(run: Run, days: int, start_ms: int = T0, user: str = "u") -> int:
    """``days`` daily visits from ``start_ms``; the last one's time."""
    for day in range(days):
        run.event("view", start_ms + day * DAY_MS + 3_600_000, user)
    return start_ms + (days - 1) * DAY_MS + 3_600_000


# -- classes -----------------------------------------------------------------------


def test_the_default_classes_are_those_of_the_contract() -> None:
    types = model_config(SETTINGS).activity.defaults
    assert types.classify("subscription_cancelled") == CHURN_INTENT
    assert types.classify("unsubscribe") == CHURN_INTENT
    for negative in ("checkout_failed", "support_ticket", "complaint", "refund_requested"):
        assert types.classify(negative) == NEGATIVE
    for active in ("view", "login", "purchase", "push_received", "account_deleted"):
        assert types.classify(active) == ACTIVE


def test_a_type_in_several_classes_takes_the_first_of_intent_negative_passive_active() -> None:
    types = ActivityTypes(
        active=frozenset({"a", "b", "c", "d"}),
        passive=frozenset({"b", "c", "d"}),
        negative=frozenset({"c", "d"}),
        churn_intent=frozenset({"d"}),
    )
    assert [types.classify(t) for t in "abcde"] == [
        ACTIVE,
        PASSIVE,
        NEGATIVE,
        CHURN_INTENT,
        PASSIVE,
    ]


def test_settings_set_the_default_classes_and_an_empty_list_means_none() -> None:
    settings = load_settings(
        holdout_salt="s",
        passive_types=" push_received, email_delivered ,",
        negative_types="",
        churn_intent_types="plan_downgraded",
        intent_grace_days=3,
        day_ms="1h",
    )
    activity = model_config(settings).activity
    assert activity.defaults.passive == {"push_received", "email_delivered"}
    assert activity.defaults.classify("complaint") == ACTIVE
    assert activity.defaults.classify("unsubscribe") == ACTIVE
    assert activity.defaults.classify("plan_downgraded") == CHURN_INTENT
    assert activity.intent_grace_ms == 3 * 3_600_000


# -- passive and negative events ----------------------------------------------------


def test_a_user_whose_only_events_are_passive_has_no_state() -> None:
    run = Run(SETTINGS.model_copy(update={"passive_types": ("push_received",)}))
    for day in range(3):
        assert run.event("push_received", T0 + day * DAY_MS).outcome == PASSIVE_OUTCOME
    run.advance(T0 + 60 * DAY_MS)
    assert run.store == {}
    assert run.signals == []


def test_negative_events_move_no_clock_of_the_user_but_stay_as_reasons() -> None:
    run = Run()
    last_ms = daily(run, 3)
    result = run.event("checkout_failed", last_ms + 2 * DAY_MS)
    assert result.outcome == APPLIED
    assert result.state is not None and result.state.last_seen_ms == last_ms
    assert result.state.active_days == 3
    (at_risk,) = run.advance(last_ms + 7 * DAY_MS)
    assert at_risk.kind == "at_risk" and at_risk.as_of == last_ms + 7 * DAY_MS
    assert "recent_checkout_failed" in {reason.code for reason in at_risk.reasons}


def test_a_negative_event_from_an_unknown_user_makes_no_user() -> None:
    run = Run()
    assert run.event("complaint", T0).outcome == PASSIVE_OUTCOME
    assert run.store == {}


# -- churn intent ------------------------------------------------------------------


def test_a_cancellation_is_a_churn_intent_at_once_and_never_a_return() -> None:
    run = Run()
    last_ms = daily(run, 5)
    cancel_ms = last_ms + 6 * 3_600_000
    result = run.event("subscription_cancelled", cancel_ms)
    (intent,) = result.emissions
    assert intent.kind == "churn_intent"
    assert intent.as_of == cancel_ms and intent.episode == last_ms
    assert intent.signal_id == f"u:{last_ms}:churn_intent"
    codes = [reason.code for reason in intent.reasons]
    assert codes[:4] == [
        "intent_subscription_cancelled",
        "days_since_active",
        "recent_active_days",
        "active_days",
    ]
    assert {r.code: r.value for r in intent.reasons}["recent_active_days"] == 5.0
    assert result.state is not None and result.state.last_seen_ms == last_ms
    # the silence clock runs from the last activity, not from the cancellation
    (at_risk,) = run.advance(last_ms + 3 * DAY_MS)
    assert at_risk.kind == "at_risk" and at_risk.as_of == last_ms + 3 * DAY_MS  # 3 x 1-day gap


def test_churn_intent_comes_once_per_episode_also_from_a_silent_user() -> None:
    run = Run()
    last_ms = daily(run, 2)
    run.advance(last_ms + 8 * DAY_MS)
    assert run.kinds() == ["at_risk"]
    run.event("unsubscribe", last_ms + 9 * DAY_MS)
    run.event("subscription_cancelled", last_ms + 9 * DAY_MS + 60_000)
    run.event("unsubscribe", last_ms + 12 * DAY_MS)
    assert run.kinds() == ["at_risk", "churn_intent"]
    state = run.store["u"]
    assert state.tier == 1 and state.stage == 2  # still at_risk: not a return


def test_activity_within_the_grace_is_neither_activity_nor_a_return() -> None:
    run = Run()
    last_ms = daily(run, 4)
    run.advance(last_ms + 5 * DAY_MS)
    cancel_ms = last_ms + 5 * DAY_MS
    run.event("subscription_cancelled", cancel_ms)
    for minutes in (1, 30, 600):
        result = run.event("view", cancel_ms + minutes * 60_000)
        assert result.outcome == PASSIVE_OUTCOME
        assert result.emissions == []
    assert run.store["u"].last_seen_ms == last_ms
    assert "reactivated" not in run.kinds()


def test_the_first_activity_after_the_grace_is_a_reactivation_after_the_intent() -> None:
    run = Run()
    last_ms = daily(run, 5)
    run.advance(last_ms + 4 * DAY_MS)  # at_risk after 3 days of a daily user
    cancel_ms = last_ms + 4 * DAY_MS
    run.event("subscription_cancelled", cancel_ms)
    back_ms = cancel_ms + DAY_MS  # the grace is one day: this is after it
    result = run.event("login", back_ms)
    back = result.emissions[-1]
    assert back.kind == "reactivated"
    assert back.churn_intent_as_of == cancel_ms
    assert back.episode == last_ms and back.tier_reached == "at_risk"
    assert {r.code: r.value for r in back.reasons}["after_churn_intent"] == 1.0
    state = run.store["u"]
    assert state.intent_ms == 0 and state.tier == 0 and state.last_seen_ms == back_ms
    # a new episode: a new cancellation is a new intent
    assert run.event("unsubscribe", back_ms + 60_000).emissions[0].kind == "churn_intent"


def test_a_return_after_an_intent_without_a_tier_changes_no_stage() -> None:
    run = Run()
    last_ms = daily(run, 2)
    run.event("unsubscribe", last_ms + 60_000)
    result = run.event("view", last_ms + 60_000 + DAY_MS)
    (back,) = result.emissions
    assert back.kind == "reactivated" and back.tier_reached is None
    assert back.time_to_return_ms == DAY_MS
    assert result.transitions == []


# -- who gets tiers ----------------------------------------------------------------


def test_anonymous_users_get_no_tiers_but_keep_their_lifecycle() -> None:
    run = Run()
    run.event("view", T0, "anon", anonymous=True)
    run.event("view", T0 + DAY_MS, "anon")
    run.advance(T0 + 90 * DAY_MS)
    assert run.signals == []
    assert run.store["anon"].stage == 1  # new -> active by time
    assert [t.to_stage for t in run.processor.engine.take_transitions()] == ["active"]


def test_an_anonymous_user_who_signs_in_gets_tiers_again() -> None:
    run = Run()
    run.event("view", T0, "v", anonymous=True)
    run.event("view", T0 + DAY_MS, "v", anonymous=False)
    run.advance(T0 + 60 * DAY_MS)
    assert run.kinds() == ["at_risk", "dormant", "churned"]


def test_a_setting_asks_for_tiers_of_anonymous_users() -> None:
    run = Run(SETTINGS.model_copy(update={"anonymous_tiers": True}))
    run.event("view", T0, "anon", anonymous=True)
    run.advance(T0 + 60 * DAY_MS)
    assert run.kinds() == ["at_risk", "dormant", "churned"]


def test_tiers_wait_for_the_minimum_of_active_days() -> None:
    run = Run(SETTINGS.model_copy(update={"tier_min_active_days": 3}))
    daily(run, 2, user="two")
    last_ms = daily(run, 3, user="three")
    run.advance(last_ms + 60 * DAY_MS)
    assert {signal.user_id for signal in run.signals} == {"three"}


# -- scoped classes through the config versions --------------------------------------


def test_a_config_version_sets_a_tenants_classes() -> None:
    value = msgspec.json.encode(
        {
            "at_risk": "7d",
            "dormant": "14d",
            "churned": "30d",
            "passive_types": ["push_received"],
            "churn_intent_types": ["plan_cancelled"],
            "tier_min_active_days": 2,
        }
    )
    update = parse_config_record(b"acme@2020-01-01T00:00:00Z", value)
    assert update is not None
    signer = ControlSigner({"k": b"k" * 32}, "k")
    wire, headers = signer.sign("engagement.events", 0, update)
    decoded = decode_record(
        None, wire, headers, 0, T0, 0, DecodeRules("engagement.events", 1, signer=signer)
    )
    assert not isinstance(decoded, Rejected | ModelEvent)
    run = Run()
    run.processor.process(control_input(decoded.record), T0)
    run.event("view", T0, "a", tenant="acme")
    assert run.event("push_received", T0 + DAY_MS, "a").outcome == PASSIVE_OUTCOME
    assert run.event("unsubscribe", T0 + DAY_MS, "a").emissions == []  # active for acme
    assert run.event("plan_cancelled", T0 + 2 * DAY_MS, "a").emissions[0].kind == "churn_intent"
    run.event("view", T0, "b", tenant="other")
    assert run.event("unsubscribe", T0 + DAY_MS, "b").emissions[0].kind == "churn_intent"
    run.advance(T0 + 60 * DAY_MS)
    # acme needs 2 active days before tiers; "a" had 2 (the unsubscribe was active)
    assert {s.user_id for s in run.signals if s.kind == "churned"} == {"a", "b"}


# -- the input field ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["yes", 1, [], {}])
def test_an_anonymous_field_that_is_not_a_boolean_is_refused(value: object) -> None:
    raw = msgspec.json.encode(
        {"event_id": "e", "user_id": "u", "type": "view", "ts": T0, "anonymous": value}
    )
    decoded = decode_record(b"u", raw, None, 0, T0, 0, DecodeRules("t", 1))
    assert isinstance(decoded, Rejected) and decoded.reason == "wrong_type"


def test_an_anonymous_field_reaches_the_model() -> None:
    raw = msgspec.json.encode(
        {"event_id": "e", "user_id": "u", "type": "view", "ts": T0, "anonymous": True}
    )
    decoded = decode_record(b"u", raw, None, 0, T0, 0, DecodeRules("t", 1))
    assert isinstance(decoded, ModelEvent) and decoded.anonymous is True


# -- properties over generated histories -----------------------------------------------

PROPERTY_TYPES = ("view", "login", "unsubscribe", "subscription_cancelled", "complaint", "ping")
PROPERTY_SETTINGS = SETTINGS.model_copy(update={"passive_types": ("ping",)})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(("ana", "bo", "cy")),
            st.sampled_from(PROPERTY_TYPES),
            st.integers(0, 40 * 24),  # hours from T0
        ),
        min_size=1,
        max_size=60,
    )
)
def test_churn_intents_and_returns_keep_their_rules(
    items: list[tuple[str, str, int]],
) -> None:
    """Whatever the history: one churn_intent per episode of a user; a return after
    an intent comes at least the grace after it and after activity only; a user with
    no active event has no state; no reactivated without a tier or an intent."""
    run = Run(PROPERTY_SETTINGS)
    for user, type_, hour in sorted(items, key=lambda item: item[2]):
        run.event(type_, T0 + hour * 3_600_000, user)
    run.advance(T0 + 90 * DAY_MS)
    intents = [(s.user_id, s.episode) for s in run.signals if s.kind == "churn_intent"]
    assert len(intents) == len(set(intents))
    opened = {(s.user_id, s.episode) for s in run.signals if s.kind != "reactivated"}
    for signal in run.signals:
        if signal.kind != "reactivated":
            continue
        assert (signal.user_id, signal.episode) in opened
        if signal.churn_intent_as_of is not None:
            assert signal.as_of >= signal.churn_intent_as_of + DAY_MS
            assert (signal.user_id, signal.episode) in intents
    active_users = {user for user, type_, _hour in items if type_ in ("view", "login")}
    assert set(run.store) == active_users
