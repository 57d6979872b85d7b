"""The rules one input event meets, the same live and offline.

The live decoder (``streams/decode.py``) and ``engagement replay`` (with
``fit`` and ``evaluate``, which read through it) judge an event's value with
these functions, so a history gets the verdicts and DLQ reason codes
(docs/CONTRACTS.md) a worker gives the same records. Only the checks that
need the broker stay in the live decoder: the record key, the partition and
control-record signatures. ``ts_in_future`` needs the broker's append time;
offline, where there is none, it is not judged.

Order of the checks (the first one failed names the reason): size, syntax,
nesting, an object, the required fields, the ids and their lengths, tenant
and segment, anonymous, props, ``ts`` and its lower bound, a reserved ``type``, and
last ``ts_in_future``.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final, Literal

import msgspec

from streams.records import DlqReason
from tables.durations import parse_rfc3339_ms
from tables.errors import BadInstantError

# Below 10^11 ms (1973-03-03T09:46:40Z) a time is almost surely in seconds:
# 10^11 s is the year 5138.
DEFAULT_MIN_TS_MS: Final = 100_000_000_000
DEFAULT_MAX_EVENT_BYTES: Final = 65_536
DEFAULT_MAX_FUTURE_MS: Final = 3_600_000
DEFAULT_MAX_USER_ID_BYTES: Final = 256
DEFAULT_MAX_EVENT_ID_BYTES: Final = 128
# tenant and segment are kept in every user's state (one length byte each,
# tables/state.py) and name threshold scopes and metric labels
DEFAULT_MAX_LABEL_BYTES: Final = 64
MAX_LABEL_BYTES_LIMIT: Final = 255
MAX_DEPTH: Final = 16  # nesting of the value, the event object itself counted


class EventRules(msgspec.Struct, frozen=True):
    """The bounds of an input event (``ENGAGEMENT_*`` settings, ``Settings.event_rules``)."""

    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS
    min_ts_ms: int = DEFAULT_MIN_TS_MS
    max_user_id_bytes: int = DEFAULT_MAX_USER_ID_BYTES
    max_event_id_bytes: int = DEFAULT_MAX_EVENT_ID_BYTES
    max_label_bytes: int = DEFAULT_MAX_LABEL_BYTES
    # the shape of an event's value: the engine's, or a Segment call (streams/segment.py)
    input_format: Literal["engagement", "segment"] = "engagement"


DEFAULT_EVENT_RULES: Final = EventRules()


class Rejected(msgspec.Struct, frozen=True):
    """Why a record goes to the DLQ: a reason code and a short detail."""

    reason: DlqReason
    detail: str


def nests_deeper(value: dict[str, Any] | list[Any], levels: int) -> bool:
    """Whether ``value`` (itself the first level) holds containers past ``levels`` levels.

    Level by level over the parsed containers, never into strings or numbers,
    and it stops at the first level past the bound: an event without nested
    ``props`` costs one look at its fields."""
    frontier: list[Any] = [value]
    for _level in range(levels):
        below: list[Any] = []
        for container in frontier:
            items = container.values() if type(container) is dict else container
            below += [item for item in items if type(item) is dict or type(item) is list]
        if not below:
            return False
        frontier = below
    return True


def _too_deep() -> Rejected:
    return Rejected("too_deep", f"nesting deeper than {MAX_DEPTH}")


_decoder: Final = msgspec.json.Decoder()


def _parse(value: bytes) -> Any:
    """The JSON value, or a ``Rejected`` for ``not_json`` or ``too_deep``.

    Both parsers (C) stop with a ``RecursionError`` near the interpreter's
    recursion limit (1,000 levels on Python 3.11, 10,000 on 3.13), so a
    deeper value is refused without being read whole."""
    try:
        obj = _decoder.decode(value)
    except RecursionError:
        return _too_deep()
    except (msgspec.DecodeError, UnicodeDecodeError):  # invalid UTF-8 in a string: the latter
        obj = _parse_non_finite(value)
    # fewer opening brackets than levels (counted in C) cannot nest too deep
    if (
        isinstance(obj, dict | list)
        and value.count(b"[") + value.count(b"{") > MAX_DEPTH
        and nests_deeper(obj, MAX_DEPTH)
    ):
        return _too_deep()
    return obj


def _parse_non_finite(value: bytes) -> Any:
    # msgspec refuses NaN/Infinity/1e999; the standard library reads them, so a
    # non-finite timestamp is reported as such rather than as "not JSON".
    try:
        obj = json.loads(value)
        json.dumps(obj, ensure_ascii=False).encode()  # lone surrogates (\ud800) are not text
    except RecursionError:
        return _too_deep()
    except ValueError:  # UnicodeEncodeError included
        return Rejected("not_json", "value is not valid UTF-8 JSON")
    return obj


def parse_object(value: bytes, rules: EventRules) -> dict[str, Any] | Rejected:
    """The value as a JSON object, or why it is refused (size, nesting, syntax, not an object)."""
    if len(value) > rules.max_event_bytes:
        return Rejected("too_large", f"{len(value)} bytes > {rules.max_event_bytes}")
    obj = _parse(value)
    if isinstance(obj, Rejected):
        return obj
    if not isinstance(obj, dict):
        return Rejected("not_object", f"value is a JSON {type(obj).__name__}, not an object")
    return obj


def utf8_length(text: str) -> int:
    # isascii() reads a flag of the string object: most ids are never encoded
    return len(text) if text.isascii() else len(text.encode())


_REQUIRED: Final = ("event_id", "user_id", "type", "ts")
_NON_EMPTY: Final = ("event_id", "user_id", "type")
_LABELS: Final[tuple[tuple[str, DlqReason], ...]] = (
    ("tenant", "tenant_too_long"),
    ("segment", "segment_too_long"),
)


def _first_missing_or_wrong(obj: dict[str, Any]) -> Rejected | None:
    for name in _REQUIRED:
        if name not in obj:
            return Rejected("missing_field", f"field {name!r} is required")
    for name in _NON_EMPTY:
        field = obj[name]
        if not isinstance(field, str):
            return Rejected("wrong_type", f"{name} must be a string, got {type(field).__name__}")
        if not field:
            return Rejected("wrong_type", f"{name} must not be empty")
    return None


def check_event(obj: dict[str, Any], rules: EventRules, append_ms: int | None) -> int | Rejected:
    """The event's ``ts`` in epoch ms, or why the event is refused.

    ``append_ms`` is the broker's append time; ``None`` offline, where
    ``ts_in_future`` is not judged. The lengths are checked before anything
    is derived from an id (the key comparison, the partition hash, the id
    hash)."""
    event_id: Any = obj.get("event_id")
    user_id: Any = obj.get("user_id")
    event_type: Any = obj.get("type")
    if not (
        type(event_id) is str
        and type(user_id) is str
        and type(event_type) is str
        and event_id
        and user_id
        and event_type
        and "ts" in obj
    ):  # the common case above in one look; any doubt: the first failure, in order
        rejected = _first_missing_or_wrong(obj)
        if rejected is not None:
            return rejected
    user_bytes = utf8_length(user_id)
    if user_bytes > rules.max_user_id_bytes:
        return Rejected("user_id_too_long", f"{user_bytes} bytes > {rules.max_user_id_bytes}")
    event_id_bytes = utf8_length(event_id)
    if event_id_bytes > rules.max_event_id_bytes:
        return Rejected("event_id_too_long", f"{event_id_bytes} bytes > {rules.max_event_id_bytes}")
    for name, too_long in _LABELS:
        label = obj.get(name)
        if label is None:
            continue
        if not isinstance(label, str):
            return Rejected("wrong_type", f"{name} must be a string or null")
        label_bytes = utf8_length(label)
        if label_bytes > rules.max_label_bytes:
            return Rejected(too_long, f"{label_bytes} bytes > {rules.max_label_bytes}")
    anonymous = obj.get("anonymous")
    if anonymous is not None and type(anonymous) is not bool:
        return Rejected("wrong_type", "anonymous must be a boolean or null")
    props = obj.get("props")
    if props is not None and not isinstance(props, dict):
        return Rejected("wrong_type", "props must be an object or null")
    ts_ms = _timestamp_ms(obj["ts"])
    if isinstance(ts_ms, Rejected):
        return ts_ms
    if ts_ms < rules.min_ts_ms:
        return Rejected("ts_out_of_range", f"ts {ts_ms} is before {rules.min_ts_ms} (epoch ms)")
    if event_type.startswith("$"):
        return Rejected(
            "reserved_type", f"type {event_type[:40]!r} is reserved for control records"
        )
    # last, so that offline, where it is not judged, every other verdict is the same
    if append_ms is not None and ts_ms > append_ms + rules.max_future_ms:
        return Rejected(
            "ts_in_future", f"ts is {ts_ms - append_ms} ms after the broker's append time"
        )
    return ts_ms


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
