"""The record processor run over decoded records, its results in the reference's terms.

``run_engine`` is the one place that drives the processor for the reference
comparison (``tests/unit/test_reference_agreement.py``): records in log
order, as the worker's per-record pipeline treats them, and the final states,
signals and transitions turned into ``reference.records.Outcome``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgspec
from reference.records import (
    Activity,
    Config,
    Erase,
    Event,
    Outcome,
    Record,
    Rules,
    Tick,
    UserView,
)

from streams.decode import id_hash
from streams.model_settings import model_config, record_rules
from streams.records import LifecycleTransition, Signal, encode
from streams.settings import Settings
from tables.activation import ACTIVATED, NOT_ACTIVATED_SIGNALLED
from tables.activity import ActivityTypes
from tables.cadence import NEGATIVE_KINDS
from tables.clock import NEVER
from tables.decline import DECLINE_OPEN
from tables.inputs import ClockTick, EraseRequest, ThresholdUpdate
from tables.lifecycle import STAGES
from tables.model import APPLIED, ModelEvent
from tables.processor import PartitionProcessor
from tables.state import ANONYMOUS, NO_DAY, TIER_NAMES, UserState, pack_state, unpack_state


class PackedStore:
    """States packed as the worker's table holds them (``agents`` ``TableStore``)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def get(self, user_id: str) -> UserState | None:
        blob = self.blobs.get(user_id)
        return None if blob is None else unpack_state(blob)

    def put(self, user_id: str, state: UserState) -> None:
        self.blobs[user_id] = pack_state(state)

    def delete(self, user_id: str) -> None:
        self.blobs.pop(user_id, None)

    def items_list(self) -> list[tuple[str, UserState]]:
        return [(user_id, unpack_state(blob)) for user_id, blob in self.blobs.items()]


def rules_for(settings: Settings, partition: int = 0) -> Rules:
    """The reference's settings from the worker's."""
    config = model_config(settings)
    risk = config.risk
    return Rules(
        partition=partition,
        day_ms=settings.day_ms,
        at_risk_ms=settings.at_risk_ms,
        dormant_ms=settings.dormant_ms,
        churned_ms=settings.churned_ms,
        threshold_min_ms=settings.threshold_min_ms,
        threshold_max_ms=settings.threshold_max_ms,
        adaptive_min_days=settings.adaptive_min_days,
        lateness_ms=settings.lateness_ms,
        stall_guard_ms=settings.stall_guard_ms,
        max_future_ms=settings.max_future_ms,
        horizon_ms=settings.horizon_ms,
        new_days=settings.new_days,
        resurrected_days=settings.resurrected_days,
        holdout_share=settings.holdout_share,
        holdout_salt=settings.holdout_salt.get_secret_value() if settings.holdout_salt else "",
        erasure_suppress_ms=settings.erasure_suppress_ms,
        dedup_ids=settings.dedup_ids,
        risk_r=risk.r,
        risk_alpha=risk.alpha,
        risk_a=risk.a,
        risk_b=risk.b,
        decline_sensitivity=settings.decline_sensitivity,
        activation_types=settings.activation_types,
        activation_days=settings.activation_days,
        activity=_reference_activity(settings),
        intent_grace_ms=settings.intent_grace_days * settings.day_ms,
        anonymous_tiers=settings.anonymous_tiers,
        risk_model=config.risk_model,
        min_risk=config.min_risk,
        population=dict(config.policy.population),
    )


def _reference_activity(settings: Settings) -> Activity:
    """The settings' classes, each left unset keeping the reference's default."""
    given = {
        name: frozenset(types)
        for name, types in (
            ("active", settings.active_types),
            ("passive", settings.passive_types),
            ("negative", settings.negative_types),
            ("churn_intent", settings.churn_intent_types),
        )
        if types is not None
    }
    return replace(Activity(tier_min_active_days=settings.tier_min_active_days), **given)


def run_engine(records: list[Record], settings: Settings, partition: int = 0) -> Outcome:
    """Drive the worker's record processor over packed states, as the worker's runtime does."""
    store = PackedStore()
    processor = PartitionProcessor(
        partition, model_config(settings), store, record_rules(settings), users=store.items_list
    )
    out = Outcome()
    event_ids: dict[int, str] = {}  # the engine keeps hashes of event ids
    for index, record in enumerate(records):
        if isinstance(record, Event):
            event_ids[id_hash(record.event_id)] = record.event_id
            event = ModelEvent(
                user_id=record.user_id,
                id_hash=id_hash(record.event_id),
                type=record.type,
                ts_ms=record.ts_ms,
                append_ms=record.append_ms,
                partition=partition,
                offset=record.offset,
                tenant=record.tenant,
                segment=record.segment,
                anonymous=record.anonymous,
            )
            result = processor.process(event, record.append_ms)
            outcome = result.outcome
        elif isinstance(record, Tick):
            tick = ClockTick(record.wall_ms, record.events_seen_append_ms)
            result = processor.process(tick, record.append_ms)
            outcome = "tick"
        elif isinstance(record, Config):
            tiers = (record.at_risk_ms, record.dormant_ms, record.churned_ms)
            update = ThresholdUpdate(
                record.scope, record.effective_from_ms, tiers, _activity(record.activity)
            )
            result = processor.process(update, record.append_ms)
            outcome = result.outcome
        elif isinstance(record, Erase):
            request = EraseRequest(record.user_id, record.issued_ms)
            result = processor.process(request, record.append_ms)
            outcome = "erased" if result.outcome == APPLIED else result.outcome
        else:
            raise TypeError(f"not a reference record: {type(record).__name__}")
        out.outcomes.append(outcome)
        out.signals += [(index, _wire(Signal.from_emission(e))) for e in result.emissions]
        out.transitions += [
            (index, _wire(LifecycleTransition.from_transition(t))) for t in result.transitions
        ]
    engine = processor.engine
    out.states = {user_id: view_of(state, event_ids) for user_id, state in store.items_list()}
    out.clock_ms = None if engine.high_ms <= NEVER else engine.clock_ms
    return out


def _activity(activity: Activity | None) -> ActivityTypes | None:
    if activity is None:
        return None
    return ActivityTypes(
        activity.active,
        activity.passive,
        activity.negative,
        activity.churn_intent,
        activity.tier_min_active_days,
    )


def _wire(record: msgspec.Struct) -> dict[str, Any]:
    """The record as a consumer reads it from its topic; a signal without
    ``schema_version`` is version 1 (docs/CONTRACTS.md, Signals)."""
    decoded: dict[str, Any] = msgspec.json.decode(encode(record))
    decoded.setdefault("schema_version", 1)
    return decoded


def _kinds(nibble: int) -> frozenset[str]:
    return frozenset(kind for bit, kind in enumerate(NEGATIVE_KINDS) if nibble & (1 << bit))


def view_of(state: UserState, event_ids: dict[int, str]) -> UserView:
    """A user's state in the reference's terms (``event_ids``: id hash -> event id;
    a hash of no known id shows as ``#`` and the hash)."""
    newest_day = state.newest_day
    return UserView(
        first_seen_ms=state.first_seen_ms,
        last_seen_ms=state.last_seen_ms,
        partition=state.partition,
        offset=state.offset,
        recent_event_ids=tuple(event_ids.get(h, f"#{h:016x}") for h in state.recent_ids),
        newest_day=newest_day,
        day_counts={newest_day - age: n for age, n in enumerate(state.day_counts) if n},
        active_days=state.active_days,
        streak_days=state.streak_days,
        usual_gap_centidays=state.usual_gap_centidays,
        events_total=state.events_total,
        tier=TIER_NAMES[state.tier] or None,
        stage=STAGES[state.stage],
        first_signal_as_of_ms=state.first_signal_as_of_ms or None,
        returned_day=None if state.returned_day == NO_DAY else state.returned_day,
        negative_kinds_newest_week=_kinds(state.negative_flags & 0x0F),
        negative_kinds_week_before=_kinds(state.negative_flags >> 4),
        tenant=state.tenant,
        segment=state.segment,
        baseline=state.baseline,
        declining=bool(state.growth_flags & DECLINE_OPEN),
        activated=bool(state.growth_flags & ACTIVATED),
        not_activated_signalled=bool(state.growth_flags & NOT_ACTIVATED_SIGNALLED),
        intent_ms=state.intent_ms or None,
        anonymous=bool(state.activity_flags & ANONYMOUS),
    )
