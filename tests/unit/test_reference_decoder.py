"""The reference's own reading of raw input records agrees with the worker's decoder:
the same DLQ reason code, or the same event or control record."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference.log import LogRules, decode
from reference.records import Config, Erase, Event, Tick

from agents.simulation.population import POISON_REASONS, poison_record
from streams.control import ControlSigner
from streams.decode import Control, DecodeRules, decode_record, id_hash, partition_for
from streams.records import CONTROL_HEADER, ConfigUpdate
from streams.records import Erase as EraseRecord
from streams.records import Tick as TickRecord
from streams.validate import EventRules, Rejected

TOPIC = "engagement.events"
PARTITIONS = 4
NOW_MS = 1_800_000_000_000
KEYS = {"k1": b"first secret", "k2": b"second secret"}
SIGNER = ControlSigner(KEYS, "k1")
RULES = DecodeRules(
    topic=TOPIC,
    partitions=PARTITIONS,
    event=EventRules(max_event_bytes=2_048, max_future_ms=3_600_000),
    signer=SIGNER,
)
LOG_RULES = LogRules(topic=TOPIC, partitions=PARTITIONS, keys=KEYS, max_event_bytes=2_048)
USERS = ("alice", "bob", "u00034")


@dataclass(frozen=True)
class Raw:
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    partition: int
    offset: int = 7
    timestamp_ms: int = NOW_MS


def engine_view(raw: Raw) -> Any:
    got = decode_record(
        raw.key, raw.value, list(raw.headers), raw.partition, NOW_MS, raw.offset, RULES
    )
    if isinstance(got, Rejected):
        return got.reason
    if isinstance(got, Control):
        record = got.record
        if isinstance(record, TickRecord):
            return ("tick", record.wall_ms, record.events_seen_append_ms)
        if isinstance(record, EraseRecord):
            return ("erase", record.user_id, record.issued_ms)
        return ("config", record.scope, record.effective_from, record.at_risk_ms)
    return ("event", got.user_id, got.id_hash, got.type, got.ts_ms, got.tenant, got.segment)


def reference_view(raw: Raw) -> Any:
    got = decode(raw, LOG_RULES)
    if isinstance(got, str):
        return got
    if isinstance(got, Tick):
        return ("tick", got.wall_ms, got.events_seen_append_ms)
    if isinstance(got, Erase):
        return ("erase", got.user_id, got.issued_ms)
    if isinstance(got, Config):
        return ("config", got.scope, got.effective_from_ms, got.at_risk_ms)
    assert isinstance(got, Event)
    return (
        "event",
        got.user_id,
        id_hash(got.event_id),
        got.type,
        got.ts_ms,
        got.tenant,
        got.segment,
    )


def agree(raw: Raw) -> Any:
    mine = engine_view(raw)
    assert reference_view(raw) == mine, raw
    return mine


TEXT = st.text(st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)), max_size=10)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=30,
)
FIELD_VALUES = st.one_of(
    JSON_VALUES,
    st.sampled_from(
        [*USERS, "$tick", "visit", "2027-01-15T08:00:00Z", "2027-01-15 08:00:00", "NaN", "-inf"]
    ),
    # at and past the length caps (bytes of UTF-8) and the lower bound of ts
    st.sampled_from(["x" * 257, "x" * 128, "é" * 65, "é" * 32, "é" * 33, "€" * 22]),
    st.sampled_from([99_999_999_999, 100_000_000_000, "1995-06-01T00:00:00Z"]),
    st.integers(NOW_MS - 10**12, NOW_MS + 10**7),
    st.floats(allow_nan=True, allow_infinity=True),
)
FIELDS = ("event_id", "user_id", "type", "ts", "tenant", "segment", "props")


@st.composite
def raws(draw: st.DrawFn) -> Raw:
    user = draw(st.sampled_from(USERS))
    obj: dict[str, Any] = {"event_id": "e-1", "user_id": user, "type": "visit", "ts": NOW_MS - 5}
    obj.update(draw(st.dictionaries(st.sampled_from(FIELDS), FIELD_VALUES, max_size=3)))
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=2)):
        obj.pop(name, None)
    value = draw(
        st.one_of(
            st.just(json.dumps(obj).encode()),
            st.just(json.dumps(obj).encode()),
            JSON_VALUES.map(lambda v: json.dumps(v).encode()),
            st.binary(max_size=64),
            st.integers(14, 19).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
        )
    )
    key = draw(st.sampled_from((user.encode(), b"mallory", None)))
    home = partition_for(user.encode(), PARTITIONS)
    partition = draw(st.sampled_from((home, home, (home + 1) % PARTITIONS)))
    headers = draw(st.sampled_from(((), (("other", b"x"),), ((CONTROL_HEADER, b"tick"),))))
    return Raw(key, value, headers, partition)


@st.composite
def controls(draw: st.DrawFn) -> Raw:
    record = draw(
        st.one_of(
            st.builds(
                TickRecord,
                wall_ms=st.integers(0, 2**53 - 1),
                events_seen_append_ms=st.integers(0, 2**53 - 1),
            ),
            st.builds(
                EraseRecord, user_id=st.text(max_size=8), issued_ms=st.integers(0, 2**53 - 1)
            ),
            st.builds(
                ConfigUpdate,
                scope=st.sampled_from(("acme", "acme/vip", "")),
                effective_from=st.integers(0, 2**53 - 1),
                at_risk_ms=st.integers(0, 10**9),
                dormant_ms=st.integers(0, 10**9),
                churned_ms=st.integers(0, 10**9),
            ),
        )
    )
    partition = draw(st.integers(0, PARTITIONS - 1))
    signer = draw(st.sampled_from((SIGNER, ControlSigner(KEYS, "k2"))))
    value, headers = signer.sign(TOPIC, partition, record)
    body = json.loads(value)
    change = draw(st.sampled_from(("none", "none", "field", "kid", "sig", "header", "partition")))
    if change == "field":
        name = draw(st.sampled_from(sorted(set(body) - {"kid", "sig"})))
        body[name] = draw(FIELD_VALUES)
    elif change == "kid":
        body["kid"] = draw(st.sampled_from(("k9", 3, None)))
    elif change == "sig":
        body["sig"] = draw(st.sampled_from(("0" * 64, "é" * 64, 5)))
    elif change == "header":
        headers = [(CONTROL_HEADER, draw(st.sampled_from((b"tick", b"erase", b"config", b"\xff"))))]
    value = json.dumps(body).encode()
    at = partition if change != "partition" else (partition + 1) % PARTITIONS
    return Raw(None, value, tuple(headers), at)


DECODER = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@DECODER
@given(raws())
def test_events_and_rejections_read_alike(raw: Raw) -> None:
    agree(raw)


@DECODER
@given(controls())
def test_control_records_verify_alike(raw: Raw) -> None:
    agree(raw)


def test_every_poison_record_earns_its_reason_from_the_reference() -> None:
    for index in range(len(POISON_REASONS) * 8):
        bad = poison_record(index, seed=11, now_ms=NOW_MS)
        partition = partition_for(bad.key, PARTITIONS) if bad.key else 0
        reason = agree(Raw(bad.key, bad.value, (), partition))
        assert reason == bad.reason
