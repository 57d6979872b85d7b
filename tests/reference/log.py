"""The raw input log read by the reference: each record decoded to an event, a
verified control record, or a DLQ reason code, then every partition run.

The decoding rules of docs/CONTRACTS.md (input event, control records and
their signature, DLQ codes), written on the standard ``json`` module:
records are read as the broker returns them (key, value and header bytes,
partition, offset, append time ``R``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

import rfc8785
from aiokafka.partitioner import murmur2

from reference.partition import Partition
from reference.records import Activity, Config, Erase, Event, Outcome, Record, Rules, Tick

CONTROL_HEADER = "engagement-control"
MAX_DEPTH = 16
_NON_FINITE = {"nan", "inf", "+inf", "-inf", "infinity", "-infinity"}
_CONTROL_FIELDS = {  # type -> (header value, the integer and string fields it needs)
    "$tick": ("tick", ("wall_ms", "events_seen_append_ms"), ()),
    "$erase": ("erase", ("issued_ms",), ("user_id",)),
    "$config": (
        "config",
        ("effective_from", "at_risk_ms", "dormant_ms", "churned_ms"),
        ("scope",),
    ),
}


class RawRecord(Protocol):
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(frozen=True)
class LogRules:
    topic: str
    partitions: int
    keys: dict[str, bytes]  # kid -> secret of CLOCK_KEYS
    max_event_bytes: int = 65_536
    max_future_ms: int = 3_600_000
    min_ts_ms: int = 100_000_000_000  # 1973-03-03T09:46:40Z
    max_user_id_bytes: int = 256
    max_event_id_bytes: int = 128
    max_label_bytes: int = 64


def _depth(value: Any) -> int:
    """Nesting of a parsed JSON value (a scalar is 0)."""
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ts_ms(ts: Any) -> int | str:
    """Epoch ms, or the DLQ code of a bad ``ts``."""
    if _is_int(ts):
        return int(ts)
    if isinstance(ts, float):
        return "wrong_type" if math.isfinite(ts) else "ts_non_finite"
    if not isinstance(ts, str):
        return "wrong_type"
    if ts.strip().lower() in _NON_FINITE:
        return "ts_non_finite"
    text = ts.strip()
    text = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return "wrong_type"
    if moment.tzinfo is None or "T" not in text.upper():
        return "wrong_type"
    try:
        return round(moment.timestamp() * 1000)
    except (OverflowError, ValueError):
        return "wrong_type"


def _control(raw: RawRecord, header: str, body: dict[str, Any], rules: LogRules) -> Record | str:
    kind = body.get("type")
    kid, sig = body.get("kid"), body.get("sig")
    if not isinstance(kind, str) or kind not in _CONTROL_FIELDS:
        return "bad_signature"
    if not isinstance(kid, str) or kid not in rules.keys:
        return "bad_signature"
    header_value, ints, strings = _CONTROL_FIELDS[kind]
    if header != header_value or not isinstance(sig, str) or not sig.isascii():
        return "bad_signature"
    if not all(_is_int(body.get(name)) for name in ints):
        return "bad_signature"
    if not all(isinstance(body.get(name), str) for name in strings):
        return "bad_signature"
    unsigned = {name: value for name, value in body.items() if name != "sig"}
    try:
        message = f"{rules.topic}|{raw.partition}|{header}|".encode() + rfc8785.dumps(unsigned)
    except (TypeError, ValueError, rfc8785.CanonicalizationError):
        return "bad_signature"
    if not hmac.compare_digest(hmac.new(rules.keys[kid], message, hashlib.sha256).hexdigest(), sig):
        return "bad_signature"
    at = (raw.offset, raw.timestamp_ms)
    if kind == "$tick":
        return Tick(*at, body["wall_ms"], body["events_seen_append_ms"])
    if kind == "$erase":
        return Erase(*at, body["user_id"], body["issued_ms"])
    return Config(
        *at,
        body["scope"],
        body["effective_from"],
        body["at_risk_ms"],
        body["dormant_ms"],
        body["churned_ms"],
        _activity(body),
    )


_CLASSES = ("active_types", "passive_types", "negative_types", "churn_intent_types")


def _activity(body: dict[str, Any]) -> Activity | None:
    """The activity classes a ``$config`` gives (docs/CONTRACTS.md), or ``None``."""
    given = {name: body[name] for name in (*_CLASSES, "tier_min_active_days") if name in body}
    if not given:
        return None
    lists = {name[: -len("_types")]: frozenset(given[name]) for name in _CLASSES if name in given}
    return replace(Activity(tier_min_active_days=given.get("tier_min_active_days", 0)), **lists)


def decode(raw: RawRecord, rules: LogRules) -> Record | str:
    """The record, or the DLQ reason code it earns."""
    value = raw.value
    if value is None:
        return "not_json"
    if len(value) > rules.max_event_bytes:
        return "too_large"
    try:
        body = json.loads(value.decode("utf-8"))
        json.dumps(body, ensure_ascii=False).encode("utf-8")  # lone surrogates are not text
        if _depth(body) > MAX_DEPTH:
            return "too_deep"
    except RecursionError:  # past the parser's recursion limit
        return "too_deep"
    except (UnicodeError, ValueError):
        return "not_json"
    if not isinstance(body, dict):
        return "not_object"
    headers = dict(raw.headers or ())
    if CONTROL_HEADER in headers:
        raw_header = headers[CONTROL_HEADER] or b""
        try:
            header = raw_header.decode("utf-8")
        except UnicodeDecodeError:
            return "bad_signature"
        return _control(raw, header, body, rules)
    for name in ("event_id", "user_id", "type", "ts"):
        if name not in body:
            return "missing_field"
    for name in ("event_id", "user_id", "type"):
        if not isinstance(body[name], str) or not body[name]:
            return "wrong_type"
    if len(body["user_id"].encode()) > rules.max_user_id_bytes:
        return "user_id_too_long"
    if len(body["event_id"].encode()) > rules.max_event_id_bytes:
        return "event_id_too_long"
    for name in ("tenant", "segment"):
        if body.get(name) is not None and not isinstance(body[name], str):
            return "wrong_type"
        if body.get(name) is not None and len(body[name].encode()) > rules.max_label_bytes:
            return f"{name}_too_long"
    if body.get("anonymous") is not None and not isinstance(body["anonymous"], bool):
        return "wrong_type"
    if body.get("props") is not None and not isinstance(body["props"], dict):
        return "wrong_type"
    ts_ms = _ts_ms(body["ts"])
    if isinstance(ts_ms, str):
        return ts_ms
    if ts_ms < rules.min_ts_ms:
        return "ts_out_of_range"
    if body["type"].startswith("$"):
        return "reserved_type"
    if ts_ms > raw.timestamp_ms + rules.max_future_ms:
        return "ts_in_future"
    user_bytes = body["user_id"].encode()
    if raw.key != user_bytes:
        return "key_mismatch"
    if (murmur2(user_bytes) & 0x7FFFFFFF) % rules.partitions != raw.partition:
        return "wrong_partition"
    return Event(
        raw.offset,
        raw.timestamp_ms,
        body["event_id"],
        body["user_id"],
        body["type"],
        ts_ms,
        body.get("tenant"),
        body.get("segment"),
        body.get("anonymous"),
    )


@dataclass
class LogOutcome:
    """The whole log's results: outcomes per partition, DLQ codes by (partition, offset),
    the outcome, event id and user id of every event by (partition, offset)."""

    partitions: dict[int, Outcome] = field(default_factory=dict)
    dlq: dict[tuple[int, int], str] = field(default_factory=dict)
    outcome_at: dict[tuple[int, int], str] = field(default_factory=dict)
    event_at: dict[tuple[int, int], tuple[str, str]] = field(default_factory=dict)

    @property
    def signal_ids(self) -> set[str]:
        return {s["signal_id"] for out in self.partitions.values() for _, s in out.signals}

    @property
    def transition_ids(self) -> set[str]:
        return {t["transition_id"] for out in self.partitions.values() for _, t in out.transitions}

    def counts(self) -> Counter[str]:
        """Input records by outcome (events, control records) and by DLQ code."""
        counts = Counter(o for out in self.partitions.values() for o in out.outcomes)
        counts.update(self.dlq.values())
        return counts


def run_log(
    records: list[RawRecord],
    rules: Rules,
    log_rules: LogRules,
    every_record: bool = False,
    marks: dict[int, int] | None = None,
    max_prefixes: int = 200,
) -> LogOutcome:
    """Decode and run every partition of ``records`` in offset order (judging
    users only when needed by default: see ``reference.partition``).

    ``marks``: per partition, an offset from which on the outcome keeps what
    the partition holds before each record (``Outcome.prefixes``, at most the
    last ``max_prefixes`` and the end)."""
    result = LogOutcome()
    by_partition: dict[int, list[RawRecord]] = {}
    for raw in records:
        by_partition.setdefault(raw.partition, []).append(raw)
    for partition in sorted(by_partition):
        decoded: list[Record] = []
        for raw in sorted(by_partition[partition], key=_offset):
            item = decode(raw, log_rules)
            if isinstance(item, str):
                result.dlq[(partition, raw.offset)] = item
            else:
                decoded.append(item)
        prefixes_from = None
        if marks is not None:
            mark = marks.get(partition, 0)
            prefixes_from = sum(1 for item in decoded if item.offset < mark)
            prefixes_from = max(prefixes_from, len(decoded) - max_prefixes)
        run = Partition(replace(rules, partition=partition), every_record)
        out = result.partitions[partition] = run.run(decoded, prefixes_from)
        for item, outcome in zip(decoded, out.outcomes, strict=True):
            if isinstance(item, Event):
                result.outcome_at[(partition, item.offset)] = outcome
                result.event_at[(partition, item.offset)] = (item.event_id, item.user_id)
    return result


def _offset(record: RawRecord) -> int:
    return record.offset
