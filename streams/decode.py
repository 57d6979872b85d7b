"""Turn one raw input record into a validated event, a control record or a rejection.

Never raises on input: every way a record can be bad maps to a DLQ reason
code of docs/CONTRACTS.md. Cheap checks (size, nesting) run before parsing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, Final

import msgspec
from aiokafka.partitioner import murmur2
from xxhash import xxh3_64_intdigest

from streams.control import ControlSigner
from streams.records import CONTROL_HEADER, ControlRecord
from tables.durations import parse_rfc3339_ms
from tables.errors import BadInstantError
from tables.model import ModelEvent

MIN_TS_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_DEPTH: Final = 16
_REQUIRED: Final = ("event_id", "user_id", "type", "ts")
_OPTIONAL_STR: Final = ("tenant", "segment")
_decoder = msgspec.json.Decoder()


class Rejected(msgspec.Struct, frozen=True):
    reason: str
    detail: str


class Control(msgspec.Struct, frozen=True):
    record: ControlRecord


class DecodeRules(msgspec.Struct, frozen=True):
    topic: str
    partitions: int
    max_event_bytes: int
    max_future_ms: int
    signer: ControlSigner | None = None


# The 8-byte hash of an event id kept in the user's state for de-duplication:
# XXH3, 64 bits (the C function itself: it runs once per event). Not
# cryptographic, and need not be: only one user's own recent ids are compared,
# and 64 bits make an accidental collision negligible.
id_hash: Final[Callable[[str], int]] = xxh3_64_intdigest


_HASHES: dict[bytes, int] = {}
HASHES_MAX = 65_536  # recent keys whose murmur2 is kept (pure Python, asked per event)


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key bytes, as the Java client)."""
    hashed = _HASHES.get(key)
    if hashed is None:
        if len(_HASHES) >= HASHES_MAX:
            _HASHES.clear()
        hashed = _HASHES[key] = int(murmur2(key) & 0x7FFFFFFF)
    return hashed % partitions


def nesting_depth(raw: bytes) -> int:
    """Deepest bracket nesting, skipping strings; used only when brackets are many."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > deepest:
                deepest = depth
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _parse(raw: bytes) -> Any:
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError:
        pass
    # msgspec refuses NaN/Infinity/1e999; the standard library reads them, so a
    # non-finite timestamp is reported as such rather than as "not JSON".
    try:
        obj = json.loads(raw)
        json.dumps(obj, ensure_ascii=False).encode()  # lone surrogates (\ud800) are not text
        return obj
    except (ValueError, RecursionError):
        return _NOT_JSON


_NOT_JSON: Final = object()


def _timestamp_ms(ts: Any) -> int | Rejected:
    if isinstance(ts, bool):
        return Rejected(
            "wrong_type", "ts must be int epoch ms or an RFC 3339 string, not a boolean"
        )
    if isinstance(ts, int):
        return ts
    if isinstance(ts, float):
        if not math.isfinite(ts):
            return Rejected("ts_non_finite", f"ts is {ts}")
        return Rejected("wrong_type", "ts must be an integer of epoch ms, not a fraction")
    if isinstance(ts, str):
        if ts.strip().lower() in ("nan", "inf", "+inf", "-inf", "infinity", "-infinity"):
            return Rejected("ts_non_finite", f"ts is {ts!r}")
        try:
            return parse_rfc3339_ms(ts)
        except (BadInstantError, OverflowError, ValueError) as exc:
            return Rejected("wrong_type", str(exc)[:200])
    return Rejected("wrong_type", f"ts must be int epoch ms or RFC 3339, got {type(ts).__name__}")


def decode_record(
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]] | None,
    partition: int,
    append_ms: int,
    offset: int,
    rules: DecodeRules,
) -> ModelEvent | Control | Rejected:
    """Classify one input record; never raises."""
    if value is None:
        return Rejected("not_json", "record has no value")
    if len(value) > rules.max_event_bytes:
        return Rejected("too_large", f"{len(value)} bytes > {rules.max_event_bytes}")
    if value.count(b"[") + value.count(b"{") > MAX_DEPTH and nesting_depth(value) > MAX_DEPTH:
        return Rejected("too_deep", f"nesting deeper than {MAX_DEPTH}")
    obj = _parse(value)
    if obj is _NOT_JSON:
        return Rejected("not_json", "value is not valid UTF-8 JSON")
    if not isinstance(obj, dict):
        return Rejected("not_object", f"value is a JSON {type(obj).__name__}, not an object")

    control_header = _control_header(headers)
    if control_header is not None:
        record = (
            None
            if rules.signer is None
            else rules.signer.verify(rules.topic, partition, control_header, obj)
        )
        if record is None:
            return Rejected(
                "bad_signature", f"control record {control_header!r} failed verification"
            )
        return Control(record)

    for name in _REQUIRED:
        if name not in obj:
            return Rejected("missing_field", f"field {name!r} is required")
    for name in ("event_id", "user_id", "type"):
        field = obj[name]
        if not isinstance(field, str):
            return Rejected("wrong_type", f"{name} must be a string, got {type(field).__name__}")
        if not field:
            return Rejected("wrong_type", f"{name} must not be empty")
    for name in _OPTIONAL_STR:
        field = obj.get(name)
        if field is not None and not isinstance(field, str):
            return Rejected("wrong_type", f"{name} must be a string or null")
    props = obj.get("props")
    if props is not None and not isinstance(props, dict):
        return Rejected("wrong_type", "props must be an object or null")
    ts_ms = _timestamp_ms(obj["ts"])
    if isinstance(ts_ms, Rejected):
        return ts_ms
    if ts_ms < MIN_TS_MS:
        return Rejected("ts_out_of_range", f"ts {ts_ms} is before 2000-01-01")
    if ts_ms > append_ms + rules.max_future_ms:
        return Rejected(
            "ts_in_future", f"ts is {ts_ms - append_ms} ms after the broker's append time"
        )
    event_type: str = obj["type"]
    if event_type.startswith("$"):
        return Rejected(
            "reserved_type", f"type {event_type[:40]!r} is reserved for control records"
        )
    user_id: str = obj["user_id"]
    user_bytes = user_id.encode()
    if key != user_bytes:
        return Rejected("key_mismatch", "record key differs from user_id")
    if partition_for(user_bytes, rules.partitions) != partition:
        return Rejected("wrong_partition", "key hashes (murmur2) to another partition")
    return ModelEvent(
        user_id=user_id,
        id_hash=id_hash(obj["event_id"]),
        type=event_type,
        ts_ms=ts_ms,
        append_ms=append_ms,
        partition=partition,
        offset=offset,
        tenant=obj.get("tenant"),
        segment=obj.get("segment"),
    )


def _control_header(headers: list[tuple[str, bytes]] | None) -> str | None:
    if not headers:
        return None
    for name, raw in headers:
        if name == CONTROL_HEADER:
            try:
                return raw.decode() if raw is not None else ""
            except UnicodeDecodeError:
                return "?"
    return None
