"""Segment / RudderStack calls as input events (``ENGAGEMENT_INPUT_FORMAT=segment``).

Teams whose events already flow in the shape of Segment's ``track`` call
(RudderStack's is the same) publish them as they are; each is mapped onto
the engine's input event and then judged by the same rules as one
(``streams/validate.py``), live and offline. docs/CONTRACTS.md, "Input
event: the Segment shape", is the contract:

- ``event_id`` ← ``messageId``; ``type`` ← ``event`` (``page`` and ``screen``
  calls are events of those types); ``ts`` ← ``timestamp`` (ISO 8601 with an
  offset, or epoch ms); ``props`` ← ``properties``;
- ``user_id`` ← ``userId``, or ``anonymousId`` when there is no ``userId``,
  and then the event says ``"anonymous": true``;
- ``context.groupId`` is not read: events carry no tenant or segment.

Identify, group and alias calls are not activity: refused (``wrong_type``),
as are calls without the fields above (``missing_field``).
"""

from __future__ import annotations

from typing import Any, Final

from streams.validate import EventRules, Rejected

EVENT_CALLS: Final = ("track", "page", "screen")


def input_event(value: dict[str, Any], rules: EventRules) -> dict[str, Any] | Rejected:
    """The engine's input event in a record's value, in the shape ``rules`` name."""
    if rules.input_format == "segment":
        return engine_event(value)
    return value


def engine_event(call: dict[str, Any]) -> dict[str, Any] | Rejected:
    """The engine's input event for one Segment call, or why it is refused."""
    kind = call.get("type", "track")
    if not isinstance(kind, str):
        return Rejected("wrong_type", f"type must be a string, got {type(kind).__name__}")
    if kind not in EVENT_CALLS:
        return Rejected(
            "wrong_type", f"a Segment {kind[:40]!r} call is not an event (track, page, screen)"
        )
    user = _identity(call)
    if isinstance(user, Rejected):
        return user
    user_id, anonymous = user
    for name in ("messageId", "timestamp", *(("event",) if kind == "track" else ())):
        if call.get(name) is None:
            return Rejected("missing_field", f"field {name!r} is required")
    event: dict[str, Any] = {
        "event_id": call["messageId"],
        "user_id": user_id,
        "type": call["event"] if kind == "track" else kind,
        "ts": call["timestamp"],
        "props": call.get("properties"),
    }
    if anonymous:
        event["anonymous"] = True
    return event


def _identity(call: dict[str, Any]) -> tuple[str, bool] | Rejected:
    """The user id and whether it is the anonymous one; an empty or null
    ``userId`` counts as absent, as the Segment libraries send it."""
    for name, anonymous in (("userId", False), ("anonymousId", True)):
        value = call.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            return Rejected("wrong_type", f"{name} must be a string, got {type(value).__name__}")
        return value, anonymous
    return Rejected("missing_field", "field 'userId' or 'anonymousId' is required")
