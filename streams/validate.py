"""The rules one input event meets, the same live and offline.

The live decoder (``streams/decode.py``) and ``engagement replay`` (with
``fit`` and ``evaluate``, which read through it) judge an event's value with
these functions, so a history gets the verdicts and DLQ reason codes
(docs/CONTRACTS.md) a worker gives the same records. Only the checks that
need the broker stay in the live decoder: the record key, the partition and
control-record signatures. ``ts_in_future`` needs the broker's append time;
offline, where there is none, it is not judged.

Order of the checks (the first one failed names the reason): size, then
reading (nesting and syntax, whichever comes first in the bytes), an object,
the required fields, the ids and their lengths, tenant and segment, props,
``ts`` and its lower bound, a reserved ``type``, and last ``ts_in_future``.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

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


DEFAULT_EVENT_RULES: Final = EventRules()


class Rejected(msgspec.Struct, frozen=True):
    """Why a record goes to the DLQ: a reason code and a short detail."""

    reason: DlqReason
    detail: str


_SCALAR: Any = str | int | float | bool | None


def bounded_json(levels: int) -> Any:
    """The type of a JSON value nested at most ``levels`` deep (a scalar is 0).

    msgspec checks it while it parses, in C: a deeper value fails at the
    first container past the bound, whatever follows it, so the nesting
    check costs nothing on a valid value and stops after ``levels + 1``
    levels on a deep one."""
    bounded: Any = _SCALAR
    for _level in range(levels):
        bounded = _SCALAR | list[bounded] | dict[str, bounded]
    return bounded


_BOUNDED_VALUE: Final[Any] = bounded_json(MAX_DEPTH)
_bounded_decoder: Final = msgspec.json.Decoder(_BOUNDED_VALUE)
_encoder: Final = msgspec.json.Encoder()
# msgspec's message when a container stands where the bound allows only a
# scalar; its other validation error here is a number beyond float range
_TOO_DEEP_MESSAGE: Final = "Expected `"


def _too_deep() -> Rejected:
    return Rejected("too_deep", f"nesting deeper than {MAX_DEPTH}")


def _parse(value: bytes) -> Any:
    """The JSON value, or a ``Rejected`` for ``too_deep`` or ``not_json``."""
    try:
        return _bounded_decoder.decode(value)
    except msgspec.ValidationError as exc:
        if str(exc).startswith(_TOO_DEEP_MESSAGE):
            return _too_deep()
    except msgspec.DecodeError:
        pass
    # msgspec refuses NaN/Infinity/1e999; the standard library reads them, so a
    # non-finite timestamp is reported as such rather than as "not JSON".
    try:
        obj = json.loads(value)
    except RecursionError:  # nested past the interpreter's limit, far past MAX_DEPTH
        return _too_deep()
    except ValueError:
        return Rejected("not_json", "value is not valid UTF-8 JSON")
    # Written again by msgspec (non-finite numbers as null), the value meets
    # the bounded decoder: its nesting is checked as on the fast path.
    try:
        _bounded_decoder.decode(_encoder.encode(obj))
    except (msgspec.ValidationError, RecursionError):
        return _too_deep()
    except UnicodeEncodeError:  # a lone surrogate (\ud800) is not text
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


def check_event(obj: dict[str, Any], rules: EventRules, append_ms: int | None) -> int | Rejected:
    """The event's ``ts`` in epoch ms, or why the event is refused.

    ``append_ms`` is the broker's append time; ``None`` offline, where
    ``ts_in_future`` is not judged. The lengths are checked before anything
    is derived from an id (the key comparison, the partition hash, the id
    hash)."""
    for name in _REQUIRED:
        if name not in obj:
            return Rejected("missing_field", f"field {name!r} is required")
    for name in _NON_EMPTY:
        field = obj[name]
        if not isinstance(field, str):
            return Rejected("wrong_type", f"{name} must be a string, got {type(field).__name__}")
        if not field:
            return Rejected("wrong_type", f"{name} must not be empty")
    user_bytes = utf8_length(obj["user_id"])
    if user_bytes > rules.max_user_id_bytes:
        return Rejected("user_id_too_long", f"{user_bytes} bytes > {rules.max_user_id_bytes}")
    event_id_bytes = utf8_length(obj["event_id"])
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
    props = obj.get("props")
    if props is not None and not isinstance(props, dict):
        return Rejected("wrong_type", "props must be an object or null")
    ts_ms = _timestamp_ms(obj["ts"])
    if isinstance(ts_ms, Rejected):
        return ts_ms
    if ts_ms < rules.min_ts_ms:
        return Rejected("ts_out_of_range", f"ts {ts_ms} is before {rules.min_ts_ms} (epoch ms)")
    event_type: str = obj["type"]
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
