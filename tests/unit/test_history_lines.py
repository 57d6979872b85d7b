"""History lines are judged as a worker judges records: the same verdicts and DLQ reasons."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.cli.main import main
from agents.offline.evaluate import event_times
from agents.offline.history_lines import LineEvent, _plain_decoder, judge_line, read_lines
from streams.decode import Control, DecodeRules, decode_record, id_hash
from streams.records import DLQ_REASONS
from streams.validate import MAX_DEPTH, EventRules, Rejected

T0 = 1_700_000_000_000
APPEND_MS = T0 + 1_000
RULES = EventRules(
    max_event_bytes=600,
    max_future_ms=500,
    min_ts_ms=T0 - 1_000,
    max_user_id_bytes=8,
    max_event_id_bytes=6,
    max_label_bytes=4,
)
LIVE = DecodeRules(topic="events", partitions=1, event=RULES)


def nested(depth: int) -> Any:
    """A JSON value nested ``depth`` deep (a scalar is 0)."""
    value: Any = 1
    for level in range(depth):
        value = {"n": value} if level % 2 else [value]
    return value


def texts(cap: int) -> list[Any]:
    """Strings at and past a byte cap, ASCII and two-byte, and wrong types."""
    return ["x" * cap, "x" * (cap + 1), "é" * (cap // 2), "é" * (cap // 2) + "x", "", 7, None]


FIELD_VALUES: dict[str, list[Any]] = {
    "event_id": ["e1", *texts(RULES.max_event_id_bytes)],
    "user_id": ["u1", "u2", *texts(RULES.max_user_id_bytes)],
    "type": ["view", "", "$tick", "$", 1, "é"],
    "ts": [
        T0,
        T0 + 5,
        RULES.min_ts_ms,
        RULES.min_ts_ms - 1,
        APPEND_MS + RULES.max_future_ms + 1,
        10**20,
        -1,
        "2023-11-14T22:13:20Z",
        "not a time",
        "NaN",
        1.5e12,
        True,
        None,
    ],
    "tenant": ["acme", None, 5, *texts(RULES.max_label_bytes)],
    "segment": ["eu", None, *texts(RULES.max_label_bytes)],
    "props": [
        {"page": "p"},
        None,
        "p",
        [1],
        {"deep": nested(MAX_DEPTH - 2)},  # the event's nesting: 16
        {"deep": nested(MAX_DEPTH - 1)},  # 17
        {"s": "[{" * 20},
        {"big": "x" * 700},
    ],
    "extra": [1, nested(MAX_DEPTH), nested(MAX_DEPTH - 1), "é"],
}


@st.composite
def objects(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with up to two fields changed or added and maybe one dropped,
    so that most checks are reached and many lines are plain."""
    obj: dict[str, Any] = {"event_id": "e1", "user_id": "u1", "type": "view", "ts": T0}
    obj.update(draw(st.lists(CHANGE, max_size=2)))
    for name in draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)), max_size=1)):
        obj.pop(name, None)
    return obj


CHANGE = st.sampled_from(sorted(FIELD_VALUES)).flatmap(
    lambda name: st.tuples(st.just(name), st.sampled_from(FIELD_VALUES[name]))
)
OBJECTS = objects()


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    """One history line: an event-like object written in one of several ways, or junk."""
    obj = draw(OBJECTS)
    how = draw(st.sampled_from(["ascii", "utf8", "msgspec", "duplicate", "nan", "junk", "bytes"]))
    if how == "ascii":
        text = json.dumps(obj).encode()  # non-ASCII as \u escapes
    elif how == "utf8":
        text = json.dumps(obj, ensure_ascii=False).encode()
    elif how == "msgspec":
        text = msgspec.json.encode(obj)
    elif how == "duplicate":  # a field written twice: the last one counts
        name, value = draw(st.sampled_from(sorted(FIELD_VALUES.items())))
        again = json.dumps({name: draw(st.sampled_from(value))})
        text = (json.dumps(obj)[:-1] + ("," if obj else "") + again[1:]).encode()
    elif how == "nan":
        text = json.dumps({**obj, "ts": "@"}).replace('"@"', draw(st.sampled_from(NANS))).encode()
    elif how == "junk":
        text = draw(st.sampled_from([b"", b"   ", b"{", b"[1]", b"null", b'"x"', b"\xff{}"]))
    else:
        text = draw(st.binary(max_size=40)).replace(b"\n", b"")
    return text + draw(st.sampled_from([b"\n", b"\r\n", b""]))


NANS = ["NaN", "Infinity", "-Infinity", "1e999"]
PROPERTY = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fields(event: Any) -> tuple[Any, ...]:
    return (event.event_id, event.user_id, event.type, event.ts, event.tenant, event.segment)


@PROPERTY
@given(line=lines())
def test_the_fast_path_gives_the_shared_validators_verdict(line: bytes) -> None:
    """``read_lines`` (msgspec's plain form first) and ``judge_line`` (the shared
    validator alone) agree on every line: the same event, or the same reason."""
    rejected: Counter[str] = Counter()
    read = list(read_lines([line], RULES, rejected))
    judged = judge_line(line, RULES)
    if judged is None:
        assert read == [] and not rejected
    elif isinstance(judged, Rejected):
        assert read == [] and rejected == Counter({judged.reason: 1})
    else:
        assert [fields(event) for event in read] == [fields(judged)] and not rejected


@PROPERTY
@given(line=lines())
def test_live_decode_and_replay_agree_on_every_line(line: bytes) -> None:
    """A worker's verdict on a record whose key and partition are right equals
    replay's on the same line; only ``ts_in_future`` needs the append time."""
    value = line.removesuffix(b"\n")
    judged = judge_line(line, RULES)
    if judged is None:  # a blank line is no record offline
        assert not value.strip()
        return
    try:
        user_id = json.loads(value)["user_id"]
        key = user_id.encode() if isinstance(user_id, str) else b"k"
    except (ValueError, TypeError, KeyError, RecursionError, UnicodeEncodeError):
        key = b"k"
    live = decode_record(key, value, None, 0, APPEND_MS, 0, LIVE)
    assert not isinstance(live, Control)
    if isinstance(live, Rejected) and live.reason == "ts_in_future":
        assert isinstance(judged, LineEvent) and judged.ts > APPEND_MS + RULES.max_future_ms
    elif isinstance(live, Rejected):
        assert isinstance(judged, Rejected) and judged.reason == live.reason
        assert live.reason not in ("key_mismatch", "wrong_partition", "bad_signature")
    else:
        assert isinstance(judged, LineEvent)
        assert (live.user_id, live.id_hash, live.type, live.ts_ms) == (
            judged.user_id,
            id_hash(judged.event_id),
            judged.type,
            judged.ts,
        )
        assert (live.tenant, live.segment) == (judged.tenant, judged.segment)


PLAIN = [
    b'{"event_id":"e1","user_id":"u1","type":"view","ts":1700000000000}\n',
    b'{"event_id":"e1","user_id":"u1","type":"view","ts":1700000000000,"tenant":"acme",'
    b'"segment":"eu","props":{"page":"p","n":[1,2],"o":{"a":2}}}\n',
    b'{"event_id":"eeeeee","user_id":"uuuuuuuu","type":"v","ts":1699999999000,"tenant":null}',
]


@pytest.mark.parametrize("line", PLAIN)
def test_plain_lines_take_the_fast_path(line: bytes) -> None:
    """The lines the property tests rely on are accepted by msgspec's plain form itself."""
    event = _plain_decoder(RULES).decode(line)
    assert fields(event) == fields(judge_line(line, RULES))


# -- replay counts what a worker puts in the DLQ -----------------------------


def event_line(**changes: Any) -> str:
    obj = {"event_id": "e1", "user_id": "ana", "type": "visit", "ts": 1_750_000_000_000}
    return json.dumps({**obj, **changes})


BAD_LINES: dict[str, str] = {
    "not_json": "{not json",
    "not_object": "[1, 2]",
    "missing_field": json.dumps({"event_id": "e", "user_id": "u", "type": "t"}),
    "wrong_type": event_line(user_id=7),
    "user_id_too_long": event_line(user_id="u" * 257),
    "event_id_too_long": event_line(event_id="é" * 65),  # 130 bytes
    "tenant_too_long": event_line(tenant="t" * 65),
    "segment_too_long": event_line(segment="s" * 65),
    "ts_non_finite": event_line(ts="@").replace('"@"', "NaN"),
    "ts_out_of_range": event_line(ts=1_750_000_000),  # seconds
    "too_large": event_line(props={"pad": "x" * 65_536}),
    "too_deep": event_line(props=nested(MAX_DEPTH)),  # 17 with the event's own level
    "reserved_type": event_line(type="$erase"),
}
LIVE_ONLY = {"ts_in_future", "key_mismatch", "wrong_partition", "bad_signature"}


def test_every_reason_but_the_live_only_ones_has_a_bad_line() -> None:
    assert set(BAD_LINES) == set(DLQ_REASONS) - LIVE_ONLY


def run_cli(tmp_path: Path, lines: list[str], **env: str) -> dict[str, Any]:
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n")
    args = ["replay", str(events), "--as-of", "2026-01-01T00:00:00Z", "--horizon", "30d"]
    args += ["--scores", str(tmp_path / "scores.csv")]
    result = CliRunner().invoke(main, args, env={"ENGAGEMENT_HOLDOUT_SALT": "salt", **env})
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.output.strip().splitlines()[-1])
    return summary


def test_replay_counts_each_bad_line_under_its_dlq_reason(tmp_path: Path) -> None:
    summary = run_cli(tmp_path, [*BAD_LINES.values(), event_line()])
    assert summary["rejected"] == dict.fromkeys(BAD_LINES, 1)
    assert (summary["lines"], summary["events"]) == (len(BAD_LINES) + 1, 1)


def test_a_1990s_history_replays_as_it_is(tmp_path: Path) -> None:
    nineties = [
        event_line(event_id=f"e{day}", ts=f"1995-06-{day:02d}T12:00:00Z") for day in (1, 2, 3)
    ]
    summary = run_cli(tmp_path, nineties)
    assert (summary["events"], summary["rejected"], summary["users"]) == (3, {}, 1)


def test_replay_follows_the_bounds_in_the_settings(tmp_path: Path) -> None:
    lines = [
        event_line(event_id="e1", ts="1995-06-01T12:00:00Z"),
        event_line(event_id="e2", user_id="long-user"),
        event_line(event_id="e3", tenant="tenant-x"),
        event_line(event_id="e4", event_id_extra="x"),
        event_line(event_id="eeeeeeeeeee"),
    ]
    summary = run_cli(
        tmp_path,
        lines,
        ENGAGEMENT_MIN_TS="2000-01-01T00:00:00Z",
        ENGAGEMENT_MAX_USER_ID_BYTES="4",
        ENGAGEMENT_MAX_LABEL_BYTES="4",
        ENGAGEMENT_MAX_EVENT_ID_BYTES="10",
    )
    assert summary["rejected"] == {
        "ts_out_of_range": 1,
        "user_id_too_long": 1,
        "tenant_too_long": 1,
        "event_id_too_long": 1,
    }
    assert summary["events"] == 1


def test_evaluate_reads_only_the_events_a_worker_accepts(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    good = event_line(user_id="ana")
    path.write_text("\n".join([good, *BAD_LINES.values(), event_line(user_id="")]) + "\n")
    assert list(event_times(path, EventRules())) == [("ana", 1_750_000_000_000)]


def test_a_line_over_the_size_cap_is_too_large_only_past_its_newline(tmp_path: Path) -> None:
    rules = EventRules(max_event_bytes=256)
    exact = event_line(props={"pad": ""})
    exact = event_line(props={"pad": "x" * (256 - len(exact))})
    assert len(exact.encode()) == 256
    assert isinstance(judge_line(exact.encode() + b"\n", rules), LineEvent)
    over = judge_line(exact.replace('"pad": "', '"pad": "x').encode() + b"\n", rules)
    assert isinstance(over, Rejected) and over.reason == "too_large"
