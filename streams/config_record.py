"""Threshold versions from the config topic: key ``tenant[/segment]@effective_from``,
value JSON ``{"at_risk": "3d", "dormant": "7d", "churned": "21d"}`` (durations or
int ms), optionally with ``scope`` and ``effective_from`` overriding the key's parts
and the scope's activity classes (docs/CONTRACTS.md)."""

from __future__ import annotations

import msgspec

from streams.records import ConfigUpdate, ThresholdConfig
from tables.durations import parse_duration_ms, parse_instant_ms
from tables.errors import ConfigurationError, EngagementError

_config_decoder = msgspec.json.Decoder(ThresholdConfig)


class BadConfigRecord(ConfigurationError):
    """A config topic record that cannot be turned into a threshold version."""


def parse_config_record(key: bytes | None, value: bytes | None) -> ConfigUpdate | None:
    """The version a config record holds (``None`` for a tombstone); raises ``BadConfigRecord``."""
    if value is None:
        return None
    try:
        body = _config_decoder.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadConfigRecord(f"config value is not a threshold version: {exc}") from exc
    key_scope, _sep, key_from = (key or b"").decode(errors="replace").partition("@")
    scope = body.scope or key_scope
    effective = body.effective_from if body.effective_from is not None else key_from
    if not scope:
        raise BadConfigRecord("config record names no scope (key tenant[/segment]@from)")
    try:
        effective_from = (
            effective if isinstance(effective, int) else parse_instant_ms(str(effective))
        )
        tiers = [
            parse_duration_ms(raw) if isinstance(raw, str) else int(raw)
            for raw in (body.at_risk, body.dormant, body.churned)
        ]
    except EngagementError as exc:
        raise BadConfigRecord(f"config record for {scope!r}: {exc}") from exc
    if not 0 < tiers[0] <= tiers[1] <= tiers[2]:
        raise BadConfigRecord(f"config record for {scope!r}: tiers must be positive and grow")
    return ConfigUpdate(
        scope=scope,
        effective_from=effective_from,
        at_risk_ms=tiers[0],
        dormant_ms=tiers[1],
        churned_ms=tiers[2],
        active_types=body.active_types,
        passive_types=body.passive_types,
        negative_types=body.negative_types,
        churn_intent_types=body.churn_intent_types,
        tier_min_active_days=body.tier_min_active_days,
    )
