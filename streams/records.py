"""Record types on the wire: input events, control records, signals, lifecycle, status, DLQ.

These structs are the contract; ``streams/schemas/*.json`` is generated from
them (``engagement schemas``) and a test fails when the two drift apart.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, get_args

import msgspec

from tables.model import Emission, Reason, Transition

SCHEMA_VERSION: Final = 1
CONTROL_HEADER: Final = "engagement-control"

# The reason codes of the DLQ (docs/CONTRACTS.md); the schema of a DLQ record lists them.
DlqReason = Literal[
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "user_id_too_long",
    "event_id_too_long",
    "tenant_too_long",
    "segment_too_long",
    "ts_non_finite",
    "ts_out_of_range",
    "ts_in_future",
    "too_large",
    "too_deep",
    "key_mismatch",
    "wrong_partition",
    "reserved_type",
    "bad_signature",
]
DLQ_REASONS: Final[tuple[DlqReason, ...]] = get_args(DlqReason)


_LABEL: Final = msgspec.Meta(description="at most ENGAGEMENT_MAX_LABEL_BYTES (64) bytes of UTF-8")


class InputEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """A user event published by a producer; key = ``user_id``."""

    event_id: Annotated[
        str,
        msgspec.Meta(
            min_length=1, description="at most ENGAGEMENT_MAX_EVENT_ID_BYTES (128) bytes of UTF-8"
        ),
    ]
    user_id: Annotated[
        str,
        msgspec.Meta(
            min_length=1, description="at most ENGAGEMENT_MAX_USER_ID_BYTES (256) bytes of UTF-8"
        ),
    ]
    type: Annotated[
        str, msgspec.Meta(min_length=1, description="types starting with $ are reserved")
    ]
    ts: Annotated[
        int | str,
        msgspec.Meta(
            description="epoch ms or RFC 3339; not before ENGAGEMENT_MIN_TS "
            "(1973-03-03T09:46:40Z, 10^11 ms)"
        ),
    ]
    tenant: Annotated[str | None, _LABEL] = None
    segment: Annotated[str | None, _LABEL] = None
    anonymous: Annotated[
        bool | None,
        msgspec.Meta(
            description="true: the user is not identified (no tier signals unless "
            "ENGAGEMENT_ANONYMOUS_TIERS); the last event that carries it sets it"
        ),
    ] = None
    props: Annotated[
        dict[str, Any] | None,
        msgspec.Meta(description="the whole event nests at most 16 levels deep"),
    ] = None


class SegmentCall(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """A Segment/RudderStack call as an input event (``ENGAGEMENT_INPUT_FORMAT=segment``);
    key = ``userId``, else ``anonymousId``. Mapped by ``streams/segment.py``; the
    fields keep Segment's names."""

    messageId: Annotated[str, msgspec.Meta(min_length=1, description="becomes event_id")]
    timestamp: Annotated[
        int | str, msgspec.Meta(description="ISO 8601 with an offset, or epoch ms; becomes ts")
    ]
    type: Annotated[
        Literal["track", "page", "screen"],
        msgspec.Meta(description="other calls (identify, group, alias) go to the DLQ"),
    ] = "track"
    userId: Annotated[
        str | None, msgspec.Meta(description="becomes user_id; null or empty: absent")
    ] = None
    anonymousId: Annotated[
        str | None,
        msgspec.Meta(description="user_id when there is no userId (then anonymous: true)"),
    ] = None
    event: Annotated[
        str | None, msgspec.Meta(description="becomes type; required by a track call")
    ] = None
    properties: Annotated[dict[str, Any] | None, msgspec.Meta(description="becomes props")] = None


class Tick(msgspec.Struct, frozen=True, tag="$tick", tag_field="type"):
    """Clock record a worker writes into each partition it owns."""

    wall_ms: int
    events_seen_append_ms: int
    kid: str = ""
    sig: str = ""


class Erase(msgspec.Struct, frozen=True, tag="$erase", tag_field="type"):
    """Erasure request for one user, written into the user's partition."""

    user_id: str
    issued_ms: int
    kid: str = ""
    sig: str = ""


class ConfigUpdate(
    msgspec.Struct, frozen=True, tag="$config", tag_field="type", omit_defaults=True
):
    """One threshold version forwarded from the config topic into every partition;
    the activity fields only when the version gives them."""

    scope: str
    effective_from: int
    at_risk_ms: int
    dormant_ms: int
    churned_ms: int
    kid: str = ""
    sig: str = ""
    active_types: list[str] | None = None
    passive_types: list[str] | None = None
    negative_types: list[str] | None = None
    churn_intent_types: list[str] | None = None
    tier_min_active_days: Annotated[int, msgspec.Meta(ge=0)] | None = None


ControlRecord = Tick | Erase | ConfigUpdate


class ThresholdConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """A threshold version on the config topic; key = ``tenant[/segment]@effective_from``.

    Durations as ``"3d"`` or int ms; ``scope`` and ``effective_from`` (epoch ms
    or RFC 3339) default to the key's parts. The activity fields, where given,
    set the scope's activity classes (absent: the tenant's, else the settings').
    """

    at_risk: int | str
    dormant: int | str
    churned: int | str
    scope: str | None = None
    effective_from: int | str | None = None
    active_types: Annotated[
        list[str] | None,
        msgspec.Meta(description="the scope's active types; absent: every type not listed below"),
    ] = None
    passive_types: Annotated[
        list[str] | None, msgspec.Meta(description="counted in metrics, never activity")
    ] = None
    negative_types: Annotated[
        list[str] | None, msgspec.Meta(description="never activity, kept as reasons")
    ] = None
    churn_intent_types: Annotated[
        list[str] | None, msgspec.Meta(description="a churn_intent signal, never activity")
    ] = None
    tier_min_active_days: (
        Annotated[
            int, msgspec.Meta(ge=0, description="active days before a user of the scope gets tiers")
        ]
        | None
    ) = None


class Signal(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An inactivity tier, a reactivation, a churn intent, a decline (``declining``) or a
    missed activation deadline (``not_activated``); key = ``user_id``; ``signal_id`` is stable."""

    signal_id: str
    kind: str
    user_id: str
    tenant: str
    segment: str
    episode: int
    as_of: int
    last_seen: int
    inactive_ms: int
    threshold_ms: int
    threshold_source: str
    risk: float
    horizon_ms: int
    reasons: tuple[Reason, ...]
    group: str
    # optional in the schema (a reader of signals from before the field must still
    # decode them); the engine always writes it
    risk_model: str | None = None
    # UNSET only in a record decoded from an older producer: encoded signals
    # always carry it (omit_defaults drops a field equal to its default).
    schema_version: int | msgspec.UnsetType = msgspec.UNSET
    tier_reached: str | None = None
    gap_ms: int | None = None
    time_to_return_ms: int | None = None
    late: bool | None = None
    arm: str | None = None
    churn_intent_as_of: int | None = None

    @classmethod
    def from_emission(cls, emission: Emission) -> Signal:
        return cls(
            signal_id=emission.signal_id,
            schema_version=SCHEMA_VERSION,
            **msgspec.structs.asdict(emission),
        )


class LifecycleTransition(msgspec.Struct, frozen=True, kw_only=True):
    """A lifecycle stage change; key = ``user_id``; ``transition_id`` is stable.

    ``from_stage`` is null for the first record of a user (its arrival as ``new``).
    """

    transition_id: str
    user_id: str
    tenant: str
    segment: str
    from_stage: str | None
    to_stage: str
    as_of: int
    episode: int
    reasons: tuple[Reason, ...]
    group: str
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_transition(cls, transition: Transition) -> LifecycleTransition:
        return cls(transition_id=transition.transition_id, **msgspec.structs.asdict(transition))


class CohortCount(msgspec.Struct, frozen=True, kw_only=True):
    """One cohort cell of one input partition on the compacted cohorts topic.

    Key: JSON ``[tenant, segment, group, cohort_start, period_start, partition]``.
    The figures of a cell are the sum over partitions (docs/CONTRACTS.md).
    """

    tenant: str
    segment: str
    group: str
    period_ms: Annotated[int, msgspec.Meta(gt=0)]
    cohort_start: int
    period_start: int
    partition: Annotated[int, msgspec.Meta(ge=0)]
    active: Annotated[int, msgspec.Meta(ge=0)]
    retained: Annotated[int, msgspec.Meta(ge=0)]
    schema_version: int = SCHEMA_VERSION


class UserStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A user's latest status; key = ``user_id``; ``as_of``: the partition clock it was taken at."""

    user_id: str
    stage: str
    tier: str | None
    risk: float
    episode: int
    last_seen: int
    as_of: int
    tenant: str
    segment: str
    schema_version: int = SCHEMA_VERSION


class DlqRecord(msgspec.Struct, frozen=True):
    """A rejected input record, with why and where it came from."""

    reason: DlqReason
    detail: str
    topic: str
    partition: int
    offset: int
    record_ts: int
    key_b64: str | None
    value_b64: str | None
    seen_at: int


SCHEMA_TYPES: Final[dict[str, Any]] = {
    "input-event": InputEvent,
    "signal": Signal,
    "lifecycle-transition": LifecycleTransition,
    "user-status": UserStatus,
    "dlq-record": DlqRecord,
    "cohort-count": CohortCount,
    "control-record": ControlRecord,
    "threshold-config": ThresholdConfig,
    "segment-call": SegmentCall,
}

_encoder = msgspec.json.Encoder()


def encode(record: msgspec.Struct) -> bytes:
    return _encoder.encode(record)
