"""Per-user state: the packed form round-trips, fits the budget, reads every older
version, refuses newer versions and foreign blobs."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.state_v1 import StateV1, pack_v1

from tables.errors import NewerStateError, StateFormatError
from tables.state import (
    DAY_WINDOW,
    ID_SLOTS,
    NO_DAY,
    STATE_VERSION,
    TIER_AT_RISK,
    TIER_CHURNED,
    TIER_NONE,
    UserState,
    counts_by_age,
    pack_state,
    unpack_state,
)

I32 = st.integers(-(2**31), 2**31 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
U16 = st.integers(0, 2**16 - 1)
U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)


def names(max_bytes: int) -> st.SearchStrategy[str]:
    return st.text(max_size=max_bytes).filter(lambda text: len(text.encode()) <= max_bytes)


def user_states(
    name_bytes: int = 255, version: int = STATE_VERSION
) -> st.SearchStrategy[UserState]:
    """States whose fields fit the packed form; the fields added after ``version``
    at their defaults."""
    added = {}
    if version >= 3:
        added = {
            "baseline": U16,
            "growth_flags": st.integers(0, 255),
            "intent_ms": I64,
            "activity_flags": st.integers(0, 255),
        }
    return st.builds(
        UserState,
        first_seen_ms=I64,
        last_seen_ms=I64,
        partition=U16,
        offset=I64,
        recent_ids=st.lists(U64, max_size=ID_SLOTS).map(tuple),
        newest_day=I32,
        day_counts=st.binary(min_size=DAY_WINDOW, max_size=DAY_WINDOW),
        active_days=U32,
        streak_days=U16,
        usual_gap_centidays=U16,
        events_total=U32,
        tier=st.integers(TIER_NONE, TIER_CHURNED),
        stage=st.integers(0, 6),
        first_signal_as_of_ms=I64,
        returned_day=I32,
        negative_flags=st.integers(0, 255),
        tenant=names(name_bytes),
        segment=names(name_bytes),
        **added,
    )


def v1_fields(state: UserState) -> StateV1:
    """The fields a version-1 state has."""
    fields = msgspec.structs.asdict(state)
    return StateV1(**{field.name: fields[field.name] for field in dataclasses.fields(StateV1)})


def v3_extension(state: UserState) -> bytes:
    """Version 3's extension, written out: the baseline (u16), the growth flags (u8),
    the churn intent (i64), the activity flags (u8)."""
    return (
        state.baseline.to_bytes(2, "little")
        + bytes([state.growth_flags])
        + state.intent_ms.to_bytes(8, "little", signed=True)
        + bytes([state.activity_flags])
    )


@settings(max_examples=300, deadline=None)
@given(state=user_states())
def test_packed_state_round_trips(state: UserState) -> None:
    assert unpack_state(pack_state(state)) == state


@settings(max_examples=200, deadline=None)
@given(state=user_states())
def test_packed_state_costs_132_bytes_and_its_labels(state: UserState) -> None:
    # docs/CONTRACTS.md: version 3 is 132 bytes plus the UTF-8 of tenant and segment
    labels = len(state.tenant.encode()) + len(state.segment.encode())
    assert len(pack_state(state)) == 132 + labels


def test_tenant_and_segment_of_8_characters_each_cost_exactly_their_bytes() -> None:
    # labels cost exactly their UTF-8 bytes (documented in tables/state.py)
    bare = UserState(first_seen_ms=1, last_seen_ms=2, recent_ids=(1, 2, 3, 4))
    labelled = msgspec.structs.replace(bare, tenant="tenant01", segment="segment1")
    assert len(pack_state(labelled)) == len(pack_state(bare)) + 16
    assert unpack_state(pack_state(labelled)) == labelled


@settings(max_examples=200, deadline=None)
@given(state=user_states())
def test_a_state_costs_at_most_160_bytes_besides_its_tenant_and_segment(state: UserState) -> None:
    # docs/CONTRACTS.md: later format versions extend the state within this budget
    labels = len(state.tenant.encode()) + len(state.segment.encode())
    assert len(pack_state(state)) - labels <= 160


def test_default_state_without_tenant_fits_the_budget() -> None:
    state = UserState(
        first_seen_ms=1_700_000_000_000,
        last_seen_ms=1_700_000_000_000,
        partition=7,
        offset=123_456_789,
        recent_ids=(2**64 - 1,) * ID_SLOTS,
        newest_day=19_675,
        day_counts=bytes(range(DAY_WINDOW)),
        active_days=100,
        streak_days=3,
        usual_gap_centidays=250,
        events_total=5_000,
        intent_ms=1_700_000_000_000,
        activity_flags=1,
    )
    assert len(pack_state(state)) <= 160


# A user state as a version-1 worker stored it, field by field (tests/support/state_v1.py).
V1_BLOB = bytes.fromhex(
    "01"  # version
    "09"  # tier 1 (at_risk), stage 2 (at_risk) << 2
    "05"  # negative flags
    "02"  # two event-id hashes in use
    "0068e5cf8b010000"  # first seen 1_700_000_000_000
    "80561cd08b010000"  # last seen 1_700_003_600_000
    "0300"  # partition 3
    "2900000000000000"  # offset 41
    "efcdab8967452301"  # hash 0x0123456789ABCDEF
    "ffffffffffffffff"  # hash 2**64 - 1
    "0000000000000000"  # unused slot
    "0000000000000000"  # unused slot
    "db4c0000"  # newest day 19_675
    "05000200000000000000000000000000000000000000000000000000"  # day counts 5, 0, 2, 0…
    "09000000"  # active days 9
    "0200"  # streak 2
    "9600"  # usual gap 1.50 days
    "11000000"  # events 17
    "0049dbd58b010000"  # first signal as of 1_700_100_000_000
    "904c0000"  # returned on day 19_600
    "0461636d65"  # tenant "acme"
    "0370726f"  # segment "pro"
)
V1_STATE = UserState(
    first_seen_ms=1_700_000_000_000,
    last_seen_ms=1_700_003_600_000,
    partition=3,
    offset=41,
    recent_ids=(0x0123456789ABCDEF, 2**64 - 1),
    newest_day=19_675,
    day_counts=bytes([5, 0, 2]) + bytes(DAY_WINDOW - 3),
    active_days=9,
    streak_days=2,
    usual_gap_centidays=150,
    events_total=17,
    tier=TIER_AT_RISK,
    stage=2,
    first_signal_as_of_ms=1_700_100_000_000,
    returned_day=19_600,
    negative_flags=0b101,
    tenant="acme",
    segment="pro",
)


# The same state as version 2 wrote it: the version byte, then version 1's bytes
# and an empty extension.
V2_BLOB = bytes.fromhex("02") + V1_BLOB[1:]
# As version 3 wrote it: version 2's bytes and the extension (baseline 0.6543,
# growth flags 0b011, a churn intent at 1_700_200_000_000, the anonymous flag).
V3_BLOB = bytes.fromhex("03") + V1_BLOB[1:] + bytes.fromhex("8f1903002ad1db8b01000001")
V3_STATE = msgspec.structs.replace(
    V1_STATE, baseline=6_543, growth_flags=0b011, intent_ms=1_700_200_000_000, activity_flags=1
)


@pytest.mark.parametrize(
    ("blob", "state"),
    [(V1_BLOB, V1_STATE), (V2_BLOB, V1_STATE), (V3_BLOB, V3_STATE)],
    ids=["version-1", "version-2", "version-3"],
)
def test_a_frozen_blob_of_every_version_reads_as_its_state(blob: bytes, state: UserState) -> None:
    assert unpack_state(blob) == state


@pytest.mark.parametrize("blob", [V1_BLOB, V2_BLOB], ids=["version-1", "version-2"])
def test_an_older_state_is_written_back_in_the_current_version(blob: bytes) -> None:
    upgraded = pack_state(unpack_state(blob))
    assert upgraded[0] == STATE_VERSION == 3
    assert unpack_state(upgraded) == V1_STATE
    assert upgraded == V3_BLOB[:-12] + bytes(12)  # the version-3 fields start at zero


@settings(max_examples=300, deadline=None)
@given(state=user_states(version=1))
def test_any_state_an_independent_version_1_packer_wrote_reads_the_same(state: UserState) -> None:
    assert unpack_state(pack_v1(v1_fields(state))) == state


@settings(max_examples=100, deadline=None)
@given(state=user_states())
def test_version_3_is_the_version_1_layout_with_its_extension(state: UserState) -> None:
    # the fixed part keeps its offsets, so a later version only appends
    assert pack_state(state) == pack_v1(v1_fields(state), version=3) + v3_extension(state)


@pytest.mark.parametrize("version", [STATE_VERSION + 1, 255])
def test_a_newer_version_is_refused_naming_its_version(version: int) -> None:
    blob = bytes([version]) + pack_state(V1_STATE)[1:] + bytes(40)  # more fields appended
    with pytest.raises(NewerStateError, match=f"format version {version}, newer") as caught:
        unpack_state(blob)
    assert caught.value.version == version
    assert isinstance(caught.value, StateFormatError)


@pytest.mark.parametrize("version", [1, 2, STATE_VERSION])
def test_bytes_beyond_a_versions_extension_are_refused(version: int) -> None:
    blob = V3_BLOB if version == 3 else bytes([version]) + V1_BLOB[1:]
    unpack_state(blob)
    with pytest.raises(StateFormatError, match="bad length"):
        unpack_state(blob + b"\x00")


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x01",
        bytes([STATE_VERSION]) + bytes(40),  # right version, too short
        bytes([0]) + bytes(200),  # no version 0 ever existed
        b'{"first_seen_ms": 1, "last_seen_ms": 2}' + bytes(100),  # JSON, not packed
    ],
    ids=["empty", "version-only", "too-short", "version-0", "json"],
)
def test_foreign_blob_raises_state_format_error(blob: bytes) -> None:
    with pytest.raises(StateFormatError):
        unpack_state(blob)


def test_truncated_blob_raises_state_format_error() -> None:
    blob = pack_state(UserState(1, 2, tenant="acme", segment="pro"))
    with pytest.raises(StateFormatError):
        unpack_state(blob[: -len("pro") - 1])


def test_counts_by_age_shifts_the_window_to_the_requested_day() -> None:
    state = UserState(0, 0, newest_day=10, day_counts=bytes([5, 4, 3]) + bytes(DAY_WINDOW - 3))
    assert counts_by_age(state, 10)[:4] == [5, 4, 3, 0]
    assert counts_by_age(state, 12)[:5] == [0, 0, 5, 4, 3]
    assert counts_by_age(state, 9)[:3] == [4, 3, 0]
    assert counts_by_age(state, 10 + DAY_WINDOW) == [0] * DAY_WINDOW
    assert counts_by_age(UserState(0, 0, newest_day=NO_DAY), 3) == [0] * DAY_WINDOW


def test_field_order_that_the_hot_path_builds_positionally() -> None:
    """``step_event`` and replay build these structs positionally for speed:
    a reordered or inserted field must fail here, not silently swap values."""
    from tables.model import ModelEvent

    assert UserState.__struct_fields__ == (
        "first_seen_ms",
        "last_seen_ms",
        "partition",
        "offset",
        "recent_ids",
        "newest_day",
        "day_counts",
        "active_days",
        "streak_days",
        "usual_gap_centidays",
        "events_total",
        "tier",
        "stage",
        "first_signal_as_of_ms",
        "returned_day",
        "negative_flags",
        "tenant",
        "segment",
        "baseline",
        "growth_flags",
        "intent_ms",
        "activity_flags",
    )
    assert ModelEvent.__struct_fields__ == (
        "user_id",
        "id_hash",
        "type",
        "ts_ms",
        "append_ms",
        "partition",
        "offset",
        "tenant",
        "segment",
        "anonymous",
    )
