"""The model's configuration and the record rules' settings, from the settings."""

from __future__ import annotations

import msgspec

from streams.risk_params import load_risk_model
from streams.settings import Settings
from tables.activity import ActivityPolicy, ActivityTypes
from tables.learned_risk import LearnedRisk
from tables.model import DEFAULT_RISK_MODEL, ModelConfig
from tables.processor import RecordRules
from tables.risk import DEFAULT_PARAMS, RiskParams
from tables.thresholds import ThresholdPolicy


def model_config(settings: Settings) -> ModelConfig:
    salt = settings.holdout_salt.get_secret_value() if settings.holdout_salt else ""
    risk: RiskParams = DEFAULT_PARAMS
    learned: LearnedRisk | None = None
    version = DEFAULT_RISK_MODEL
    cadence: dict[str, int] = {}
    if settings.risk_params is not None:
        loaded = load_risk_model(settings.risk_params, settings.day_ms, settings.horizon_ms)
        risk, learned, version = loaded.params, loaded.learned, loaded.version
        cadence = loaded.cadence
    return ModelConfig(
        policy=ThresholdPolicy(
            defaults_ms=settings.tier_thresholds_ms,
            min_ms=settings.threshold_min_ms,
            max_ms=settings.threshold_max_ms,
            user_min_active_days=settings.adaptive_min_days,
            day_ms=settings.day_ms,
            population=cadence,
        ),
        min_risk=settings.tier_min_risks,
        risk=risk,
        learned=learned,
        risk_model=version,
        lateness_ms=settings.lateness_ms,
        day_ms=settings.day_ms,
        horizon_ms=settings.horizon_ms,
        dedup_ids=settings.dedup_ids,
        new_days=settings.new_days,
        resurrected_days=settings.resurrected_days,
        holdout_salt=salt,
        holdout_share=settings.holdout_share,
        decline_sensitivity=settings.decline_sensitivity,
        activation_types=frozenset(settings.activation_types),
        activation_days=settings.activation_days,
        experiment_id=settings.experiment_id or "",
        experiment_reasons=settings.experiment_reasons,
        activity=activity_policy(settings),
    )


def activity_policy(settings: Settings) -> ActivityPolicy:
    """What counts as activity by default, and who gets tiers (``tables.activity``)."""
    defaults = ActivityTypes(tier_min_active_days=settings.tier_min_active_days)
    types = {
        "active": settings.active_types,
        "passive": settings.passive_types,
        "negative": settings.negative_types,
        "churn_intent": settings.churn_intent_types,
    }
    given = {name: frozenset(value) for name, value in types.items() if value is not None}
    return ActivityPolicy(
        defaults=msgspec.structs.replace(defaults, **given),
        intent_grace_ms=settings.intent_grace_days * settings.day_ms,
        anonymous_tiers=settings.anonymous_tiers,
    )


def record_rules(settings: Settings) -> RecordRules:
    """The record processor's settings besides the model's (``tables.processor``)."""
    salt = settings.erasure_salt.get_secret_value() if settings.erasure_salt else ""
    return RecordRules(
        stall_guard_ms=settings.stall_guard_ms,
        max_future_ms=settings.max_future_ms,
        tick_interval_ms=settings.tick_interval_ms,
        erasure_suppress_ms=settings.erasure_suppress_ms,
        erasure_salt=salt.encode(),
    )
