"""ENGAGEMENT_INPUT_FORMAT=segment: Segment/RudderStack calls accepted as they are,
judged live and offline alike, with DLQ reasons for bad calls.

Each accepted call is compared with the engine-shaped event written out by
hand in the test (docs/CONTRACTS.md, "The Segment shape"), not with the
mapping's own output."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agents.offline.history_lines import LineEvent, read_lines
from streams.control import ControlSigner
from streams.decode import Control, DecodeRules, decode_record, partition_for
from streams.records import Tick
from streams.segment import engine_event
from streams.validate import EventRules, Rejected
from tables.durations import parse_rfc3339_ms
from tables.model import ModelEvent

TOPIC = "engagement.events"
PARTITIONS = 8
NOW_MS = 1_788_250_000_000  # the broker's append time of every record here
SEGMENT = EventRules(input_format="segment")
SIGNER = ControlSigner({"k1": b"s" * 32}, "k1")
RULES = DecodeRules(topic=TOPIC, partitions=PARTITIONS, event=SEGMENT, signer=SIGNER)
NATIVE = DecodeRules(topic=TOPIC, partitions=PARTITIONS, signer=SIGNER)
ANONYMOUS_ID = "0b9a2c1e-5d7f-4a8e-9c3b-2f6d1e0a7b54"
# 1_788_250_000_000 - 1000 ms
TIMESTAMP = "2026-09-01T08:06:39.000Z"
TS_MS = NOW_MS - 1_000


def track(**changes: Any) -> dict[str, Any]:
    call: dict[str, Any] = {
        "type": "track",
        "messageId": "ajs-next-1d5c1f1e6f9c4b0e",
        "userId": "u00034",
        "anonymousId": ANONYMOUS_ID,
        "event": "Order Completed",
        "timestamp": TIMESTAMP,
        "properties": {"revenue": 42.5},
        "context": {"library": {"name": "analytics.js", "version": "2.11.1"}},
        "sentAt": "2026-09-01T08:06:39.500Z",
    }
    call.update(changes)
    return {k: v for k, v in call.items() if v is not DROP}


DROP = object()


def decode(call: dict[str, Any], key: str, rules: DecodeRules = RULES) -> Any:
    partition = partition_for(key.encode(), PARTITIONS)
    value = json.dumps(call).encode()
    return decode_record(key.encode(), value, None, partition, NOW_MS, 7, rules)


def test_a_track_call_is_the_event_a_native_producer_would_send() -> None:
    from_segment = decode(track(), "u00034")
    native = {
        "event_id": "ajs-next-1d5c1f1e6f9c4b0e",
        "user_id": "u00034",
        "type": "Order Completed",
        "ts": TS_MS,
        "props": {"revenue": 42.5},
    }
    assert isinstance(from_segment, ModelEvent)
    assert from_segment == decode(native, "u00034", NATIVE)
    assert from_segment.ts_ms == TS_MS


def test_an_anonymous_call_is_keyed_by_its_anonymous_id_and_marked() -> None:
    for call in (track(userId=DROP), track(userId=None), track(userId="")):
        assert engine_event(call) == {
            "event_id": "ajs-next-1d5c1f1e6f9c4b0e",
            "user_id": ANONYMOUS_ID,
            "type": "Order Completed",
            "ts": TIMESTAMP,
            "props": {"revenue": 42.5},
            "anonymous": True,
        }
        decoded = decode(call, ANONYMOUS_ID)
        assert isinstance(decoded, ModelEvent) and decoded.user_id == ANONYMOUS_ID


def test_a_known_user_is_not_marked_anonymous() -> None:
    assert "anonymous" not in engine_event(track())  # type: ignore[operator]


@pytest.mark.parametrize(("kind", "event_type"), [("page", "page"), ("screen", "screen")])
def test_page_and_screen_calls_are_events_of_their_kind(kind: str, event_type: str) -> None:
    decoded = decode(track(type=kind, event=DROP, name="Pricing"), "u00034")
    assert isinstance(decoded, ModelEvent) and decoded.type == event_type


def test_a_call_without_a_type_is_a_track_call() -> None:
    decoded = decode(track(type=DROP), "u00034")
    assert isinstance(decoded, ModelEvent) and decoded.type == "Order Completed"


def test_epoch_ms_timestamps_are_accepted() -> None:
    decoded = decode(track(timestamp=TS_MS), "u00034")
    assert isinstance(decoded, ModelEvent) and decoded.ts_ms == TS_MS


# Each bad call, its key and the DLQ reason a worker gives it; the detail names
# the Segment field.
BAD_CALLS: dict[str, tuple[dict[str, Any], str, str, str]] = {
    "identify": (
        track(type="identify", event=DROP, traits={"plan": "pro"}),
        "u00034",
        "wrong_type",
        "identify",
    ),
    "alias": (track(type="alias", previousId=ANONYMOUS_ID), "u00034", "wrong_type", "alias"),
    "type-not-text": (track(type=7), "u00034", "wrong_type", "type"),
    "no-message-id": (track(messageId=DROP), "u00034", "missing_field", "messageId"),
    "no-timestamp": (track(timestamp=None), "u00034", "missing_field", "timestamp"),
    "no-event": (track(event=DROP), "u00034", "missing_field", "event"),
    "no-identity": (track(userId=DROP, anonymousId=DROP), "u00034", "missing_field", "anonymousId"),
    "user-id-number": (track(userId=34), "34", "wrong_type", "userId"),
    "naive-timestamp": (track(timestamp="2026-09-01T08:06:39"), "u00034", "wrong_type", "RFC 3339"),
    "properties-list": (track(properties=[1, 2]), "u00034", "wrong_type", "props"),
    "message-id-too-long": (track(messageId="m" * 129), "u00034", "event_id_too_long", "bytes"),
    "ancient": (track(timestamp="1970-01-02T00:00:00Z"), "u00034", "ts_out_of_range", "ts"),
    "reserved-event": (track(event="$tick"), "u00034", "reserved_type", "reserved"),
}


@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_bad_calls_get_a_dlq_reason_live_and_offline(name: str) -> None:
    call, key, reason, detail_word = BAD_CALLS[name]
    live = decode(call, key)
    assert isinstance(live, Rejected)
    assert (live.reason, detail_word in live.detail) == (reason, True), live
    rejected: Counter[str] = Counter()
    line = json.dumps(call).encode() + b"\n"
    assert list(read_lines([line], SEGMENT, rejected)) == []
    assert rejected == Counter({reason: 1})


def test_the_key_must_be_the_user_id_not_the_anonymous_id() -> None:
    decoded = decode(track(), ANONYMOUS_ID)
    assert isinstance(decoded, Rejected) and decoded.reason == "key_mismatch"


def test_a_call_on_another_partition_is_refused() -> None:
    key = b"u00034"
    away = (partition_for(key, PARTITIONS) + 1) % PARTITIONS
    decoded = decode_record(key, json.dumps(track()).encode(), None, away, NOW_MS, 7, RULES)
    assert isinstance(decoded, Rejected) and decoded.reason == "wrong_partition"


def test_control_records_keep_their_own_shape() -> None:
    partition = 3
    value, headers = SIGNER.sign(
        TOPIC, partition, Tick(wall_ms=NOW_MS, events_seen_append_ms=NOW_MS)
    )
    decoded = decode_record(None, value, headers, partition, NOW_MS, 7, RULES)
    assert isinstance(decoded, Control)


def test_native_events_are_refused_when_the_input_is_segment() -> None:
    native = {"event_id": "e-1", "user_id": "u00034", "type": "view", "ts": TS_MS}
    decoded = decode(native, "u00034")
    # the native "type" reads as a Segment call type
    assert isinstance(decoded, Rejected) and decoded.reason == "wrong_type"
    assert "Segment 'view' call" in decoded.detail


def test_replay_reads_a_segment_history_as_the_same_events() -> None:
    calls = [
        track(),
        track(messageId="m-2", userId=DROP, event="Viewed", timestamp="2026-09-01T10:06:39+02:00"),
        track(type="identify", event=DROP),
        track(messageId="m-3", type="page", event=DROP, properties=None),
    ]
    lines = [json.dumps(call).encode() + b"\n" for call in calls]
    rejected: Counter[str] = Counter()
    assert list(read_lines(lines, SEGMENT, rejected)) == [
        LineEvent("ajs-next-1d5c1f1e6f9c4b0e", "u00034", "Order Completed", TS_MS, None, None),
        LineEvent("m-2", ANONYMOUS_ID, "Viewed", TS_MS, None, None, anonymous=True),
        LineEvent("m-3", "u00034", "page", TS_MS, None, None),
    ]
    assert rejected == Counter({"wrong_type": 1})


def test_the_documented_segment_call_is_accepted() -> None:
    contracts = (Path(__file__).resolve().parents[2] / "docs" / "CONTRACTS.md").read_text()
    (block,) = re.findall(r"^```json segment-call\n(.*?)^```$", contracts, re.M | re.S)
    call = json.loads(block)
    key = call["userId"].encode()
    append_ms = parse_rfc3339_ms(call["timestamp"]) + 1_000
    partition = partition_for(key, PARTITIONS)
    decoded = decode_record(key, block.encode(), None, partition, append_ms, 7, RULES)
    assert isinstance(decoded, ModelEvent) and decoded.type == call["event"]
