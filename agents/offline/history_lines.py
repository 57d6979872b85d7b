"""The events of a JSON Lines history, judged by the worker's own rules.

Each line is judged as a worker judges a record's value
(``streams/validate.py``), so ``replay``, ``fit`` and ``evaluate`` refuse
what a worker sends to the DLQ, with the same reason codes. The checks only
a broker record has (key, partition, signature, and ``ts_in_future``, which
needs the append time) are not made.

Most lines are plain: ASCII without escapes, no unknown field, an integer
``ts``. msgspec
judges those alone, in one pass, against a type built from the same rules
(the fast path); any line it does not accept is judged by the shared
validator. The fast path accepts only lines the validator accepts, with the
same fields (a property test in ``tests/unit/test_history_lines.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Annotated, Any

import msgspec

from streams.segment import input_event
from streams.validate import (
    EventRules,
    Rejected,
    check_event,
    parse_object,
)


class LineEvent(msgspec.Struct, frozen=True, gc=False):
    """The fields of an accepted line that replay keeps; ``ts`` in epoch ms."""

    event_id: str
    user_id: str
    type: str
    ts: int
    tenant: str | None
    segment: str | None
    anonymous: bool | None = None


def judge_line(line: bytes, rules: EventRules) -> LineEvent | Rejected | None:
    """The event on one line, or why a worker refuses it; ``None`` for a blank line."""
    value = line[:-1] if line.endswith(b"\n") else line
    if not value.strip():
        return None
    obj = parse_object(value, rules)
    if isinstance(obj, Rejected):
        return obj
    obj = input_event(obj, rules)
    if isinstance(obj, Rejected):
        return obj
    ts_ms = check_event(obj, rules, None)
    if isinstance(ts_ms, Rejected):
        return ts_ms
    return LineEvent(
        obj["event_id"],
        obj["user_id"],
        obj["type"],
        ts_ms,
        obj.get("tenant"),
        obj.get("segment"),
        obj.get("anonymous"),
    )


_SCALAR: Any = str | int | float | bool | None
_SHALLOW_PROPS: Any = dict[str, _SCALAR | list[_SCALAR] | dict[str, _SCALAR]]


@cache
def _plain_decoder(rules: EventRules) -> msgspec.json.Decoder[Any]:
    """A decoder that accepts a plain line only if the validator would accept it.

    On an ASCII line without escapes every string has as many bytes as
    characters, so msgspec's length bounds are the byte caps; unknown
    fields are refused because msgspec would skip them unread (their nesting
    unchecked); ``props`` nests at most two levels (the event: four), deeper
    ones are left to the validator."""

    def text(max_bytes: int) -> Any:
        return Annotated[str, msgspec.Meta(min_length=1, max_length=max_bytes)]

    label = Annotated[str, msgspec.Meta(max_length=rules.max_label_bytes)] | None
    plain = msgspec.defstruct(
        "PlainLine",
        [
            ("event_id", text(rules.max_event_id_bytes)),
            ("user_id", text(rules.max_user_id_bytes)),
            ("type", Annotated[str, msgspec.Meta(min_length=1)]),
            ("ts", Annotated[int, msgspec.Meta(ge=rules.min_ts_ms)]),
            ("tenant", label, None),
            ("segment", label, None),
            ("anonymous", bool | None, None),
            ("props", _SHALLOW_PROPS | None, None),
        ],
        frozen=True,
        gc=False,
        forbid_unknown_fields=True,
    )
    return msgspec.json.Decoder(plain)


def read_lines(lines: Iterable[bytes], rules: EventRules, rejected: Counter[str]) -> Iterator[Any]:
    """The accepted events of ``lines``, each with ``LineEvent``'s fields, in file order.

    A refused line adds one to ``rejected[reason]``; blank lines are skipped."""
    plain = _plain_decoder(rules).decode
    # the fast path knows the engine's own shape only
    max_bytes = rules.max_event_bytes if rules.input_format == "engagement" else -1
    for line in lines:
        # the line's own length bounds its value's (the newline is not part of
        # it); without a backslash (0x5C) it holds no escape, so with ASCII
        # only every string has as many bytes as characters
        if len(line) <= max_bytes and line.isascii() and 0x5C not in line:
            try:
                event = plain(line)
            except msgspec.MsgspecError:
                pass
            else:
                if event.type[0] != "$":
                    yield event
                    continue
        judged = judge_line(line, rules)
        if isinstance(judged, Rejected):
            rejected[judged.reason] += 1
        elif judged is not None:
            yield judged
