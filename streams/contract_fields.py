"""What every field of every record means, and its closed value sets, for the JSON Schemas.

``streams/schemas.py`` adds these to the schemas msgspec derives from the
record types: a description on every property (a test fails when a field has
none), the enums of ``tables/vocabulary.py`` and ``schema_version`` as a
required constant. docs/CONTRACTS.md says the same at length, with examples.
"""

from __future__ import annotations

from typing import Final

from tables.vocabulary import (
    GROUPS,
    LIFECYCLE_STAGES,
    REASON_CODES,
    SIGNAL_KINDS,
    THRESHOLD_SOURCES,
    TIERS,
)

_TENANT = "the user's tenant at the time; empty string when none"
_SEGMENT = "the user's segment within the tenant at the time; empty string when none"
_GROUP = "the user's experiment group, by a salted hash of the user id (stable per user)"
_VERSION = "version of this record's schema; always present"
_REASONS = "why: structured codes with a value and a baseline, in a fixed order"
_KID = "id of the key of ENGAGEMENT_CLOCK_KEYS that signed the record"
_SIG = (
    "hex HMAC-SHA256 over '{topic}|{partition}|{header value}|' and the RFC 8785 JSON "
    "of the value without sig"
)

# $defs name (the record type's class name) -> property -> description.
DESCRIPTIONS: Final[dict[str, dict[str, str]]] = {
    "InputEvent": {
        "event_id": "the producer's stable id of this logical event: a re-sent copy carries "
        "the same id; at most ENGAGEMENT_MAX_EVENT_ID_BYTES (128) bytes of UTF-8",
        "user_id": "the user; equal to the record key; at most "
        "ENGAGEMENT_MAX_USER_ID_BYTES (256) bytes of UTF-8",
        "type": "what happened (login, view, purchase, ...); types starting with $ are reserved",
        "ts": "event time: epoch milliseconds or an RFC 3339 string; not before "
        "ENGAGEMENT_MIN_TS (1973-03-03T09:46:40Z) nor after append time + ENGAGEMENT_MAX_FUTURE",
        "tenant": "the user's tenant (sticks to the user); at most "
        "ENGAGEMENT_MAX_LABEL_BYTES (64) bytes of UTF-8",
        "segment": "the user's segment within the tenant (sticks to the user); at most "
        "ENGAGEMENT_MAX_LABEL_BYTES (64) bytes of UTF-8",
        "props": "free properties, not read by the engine; the whole event nests at most "
        "16 levels deep",
    },
    "Tick": {
        "type": "$tick: a clock record a worker writes into each input partition it owns",
        "wall_ms": "the writing worker's wall clock, epoch milliseconds",
        "events_seen_append_ms": "the newest append time of the events the worker has "
        "consumed, epoch milliseconds (0 before any)",
        "kid": _KID,
        "sig": _SIG,
    },
    "Erase": {
        "type": "$erase: an erasure request for one user",
        "user_id": "the user to forget",
        "issued_ms": "wall clock of the tool that wrote the request, epoch milliseconds",
        "kid": _KID,
        "sig": _SIG,
    },
    "ConfigUpdate": {
        "type": "$config: a threshold version forwarded from the config topic",
        "scope": "tenant or tenant/segment",
        "effective_from": "when the version starts to apply (at the earliest), epoch milliseconds",
        "at_risk_ms": "at_risk threshold, milliseconds",
        "dormant_ms": "dormant threshold, milliseconds",
        "churned_ms": "churned threshold, milliseconds",
        "active_types": "the scope's active types; absent: every type not in the other classes",
        "passive_types": "the scope's passive types: counted, never activity",
        "negative_types": "the scope's negative types: never activity, kept as reasons",
        "churn_intent_types": "the scope's churn-intent types: a churn_intent signal at once",
        "tier_min_active_days": "active days a user of the scope needs before tier signals",
        "kid": _KID,
        "sig": _SIG,
    },
    "ThresholdConfig": {
        "at_risk": "at_risk threshold: a duration such as '5d' or integer milliseconds",
        "dormant": "dormant threshold: a duration or integer milliseconds; at least at_risk",
        "churned": "churned threshold: a duration or integer milliseconds; at least dormant",
        "scope": "tenant or tenant/segment; overrides the key's scope",
        "effective_from": "RFC 3339 or epoch milliseconds; overrides the key's instant",
        "tier_min_active_days": "active days a user of the scope needs before tier signals; "
        "absent: the tenant's, else ENGAGEMENT_TIER_MIN_ACTIVE_DAYS",
    },
    "Signal": {
        "signal_id": "{user_id}:{episode}:{kind}: the same signal always has the same id "
        "(after a crash, in a replay); de-duplicate by it",
        "kind": "an inactivity tier that fell due, or reactivated: the return of a user "
        "signalled in this episode",
        "user_id": "the user (also the record key)",
        "tenant": _TENANT,
        "segment": _SEGMENT,
        "episode": "the last_seen that began this silence, epoch milliseconds: one episode "
        "per silence",
        "as_of": "event time the signal is about, epoch milliseconds: a tier's due time "
        "(last_seen + threshold_ms) or the returning event's ts; never the emission time",
        "last_seen": "the user's last event time before the silence, epoch milliseconds "
        "(equal to episode)",
        "inactive_ms": "silence at as_of, milliseconds: as_of - last_seen",
        "threshold_ms": "a tier's threshold that fell due, milliseconds; for reactivated "
        "the threshold of tier_reached",
        "threshold_source": "where the thresholds came from: user = the user's own cadence "
        "(3x/6x/12x the usual gap between active days); segment or tenant = a config "
        "version of the user's tenant/segment or tenant; default = ENGAGEMENT_AT_RISK, "
        "_DORMANT, _CHURNED",
        "risk": "probability (0..1, 6 decimals) that the user has no active day within "
        "horizon_ms after as_of",
        "horizon_ms": "the horizon of risk, milliseconds (ENGAGEMENT_HORIZON)",
        "reasons": _REASONS,
        "group": _GROUP,
        "schema_version": _VERSION,
        "tier_reached": "reactivated only: the highest tier signalled in the episode that closed",
        "churn_intent_as_of": "reactivated only, after a churn_intent: that signal's as_of, "
        "epoch milliseconds",
        "risk_model": "the version of the risk model that scored the signal "
        "(ENGAGEMENT_RISK_PARAMS; mbg_nbd-default without a file)",
        "gap_ms": "reactivated only: the return's ts - last_seen, milliseconds",
        "time_to_return_ms": "reactivated only: the return's ts - the as_of of the "
        "episode's first signal, milliseconds; negative when late",
        "late": "reactivated only: true when the return happened before the episode's "
        "first signal was due (the signal should not have been acted on)",
        "arm": "only with an experiment (ENGAGEMENT_EXPERIMENT_ID): the first of "
        "ENGAGEMENT_EXPERIMENT_REASONS among the episode's reason codes, else other; "
        "group is then the group within this arm",
    },
    "Reason": {
        "code": "what the reason is; the meaning of value and baseline depends on it "
        "(docs/CONTRACTS.md, Reasons)",
        "value": "the user's figure for this code (days are ENGAGEMENT_DAY_MS long)",
        "baseline": "what the figure is compared with, in the same unit; null when none",
    },
    "LifecycleTransition": {
        "transition_id": "{user_id}:{as_of}:{to_stage}: stable like signal_id",
        "user_id": "the user (also the record key)",
        "tenant": _TENANT,
        "segment": _SEGMENT,
        "from_stage": "the stage before; null on the user's first record",
        "to_stage": "the stage after",
        "as_of": "event time of the change, epoch milliseconds",
        "episode": "the user's last_seen when the change was decided, epoch milliseconds",
        "reasons": _REASONS,
        "group": _GROUP,
        "schema_version": _VERSION,
    },
    "UserStatus": {
        "user_id": "the user (also the record key)",
        "stage": "the lifecycle stage as of as_of",
        "tier": "the highest tier signalled in the current episode; null when none. A tier "
        "signal is still current while episode and tier equal the signal's episode and kind",
        "risk": "probability (0..1, 6 decimals) of no active day within ENGAGEMENT_HORIZON "
        "after as_of",
        "episode": "the current episode (= last_seen), epoch milliseconds",
        "last_seen": "the user's newest event time, epoch milliseconds",
        "as_of": "the partition clock when the status was taken, epoch milliseconds; "
        "at least last_seen",
        "tenant": _TENANT,
        "segment": _SEGMENT,
        "schema_version": _VERSION,
    },
    "CohortCount": {
        "tenant": "the users' tenant when they became active in the period; empty when none",
        "segment": "the users' segment when they became active in the period; empty when none",
        "group": "the users' experiment group (without experiment arms)",
        "period_ms": "length of a period: ENGAGEMENT_COHORT_PERIOD_DAYS x ENGAGEMENT_DAY_MS, "
        "milliseconds; periods are aligned to the epoch",
        "cohort_start": "start of the cohort's period (its users' first activity), "
        "epoch milliseconds",
        "period_start": "start of the period counted (at least cohort_start), epoch milliseconds",
        "partition": "the input partition that counted these users; a cell's figure is the "
        "sum over partitions",
        "active": "users of the cohort active in the period (at period_start = cohort_start: "
        "the cohort's new users)",
        "retained": "of them, the users also active in the period before",
        "schema_version": _VERSION,
    },
    "DlqRecord": {
        "reason": "why the record was rejected (docs/CONTRACTS.md, DLQ record)",
        "detail": "a human-readable explanation; its wording may change",
        "topic": "the source topic",
        "partition": "the source record's partition",
        "offset": "the source record's offset",
        "record_ts": "the source record's timestamp (its append time), epoch milliseconds",
        "key_b64": "the source record's key bytes, base64; null when it had none",
        "value_b64": "the source record's value bytes, base64; null when it had none",
        "seen_at": "the worker's wall clock when it rejected the record, epoch milliseconds",
    },
}

# $defs name -> property -> the values a string property may take (the DLQ reason
# codes come with the record type itself, a Literal of streams/records.py).
ENUMS: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "Signal": {
        "kind": SIGNAL_KINDS,
        "threshold_source": THRESHOLD_SOURCES,
        "group": GROUPS,
        "tier_reached": TIERS,
    },
    "Reason": {"code": tuple(REASON_CODES)},
    "LifecycleTransition": {
        "from_stage": LIFECYCLE_STAGES,
        "to_stage": LIFECYCLE_STAGES,
        "group": GROUPS,
    },
    "UserStatus": {"stage": LIFECYCLE_STAGES, "tier": TIERS},
    "CohortCount": {"group": GROUPS},
}
