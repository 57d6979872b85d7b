"""Offline replay over a JSON Lines history: scores, signals and counts."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.cli.main import main
from agents.offline.replay import ReplayStats, read_config, read_events, replay
from streams.decode import id_hash
from streams.records import Signal, encode
from streams.validate import EventRules
from tables.engine import DictStore, PartitionEngine
from tables.errors import ConfigurationError
from tables.history import positions_by_user, run_users
from tables.model import ModelConfig, ModelEvent
from tables.thresholds import ThresholdPolicy

DAY_MS = 1_000
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
AS_OF_MS = T0 + 20 * DAY_MS
CONFIG = ModelConfig(
    policy=ThresholdPolicy(
        defaults_ms=(7 * DAY_MS, 14 * DAY_MS, 30 * DAY_MS), min_ms=DAY_MS, max_ms=90 * DAY_MS
    ),
    lateness_ms=500,
    day_ms=DAY_MS,
    horizon_ms=30 * DAY_MS,
    holdout_salt="salt",
)

# (event_id, user_id, ts) of the events replay must use, in file order.
KEPT: list[tuple[str, str, int | str]] = [
    ("c2", "cy", T0 + 9 * DAY_MS),  # cy comes back after an at_risk silence
    ("a3", "ana", T0 + 2 * DAY_MS),
    ("b1", "bo", T0 + 15 * DAY_MS),
    ("a1", "ana", "2023-11-14T22:13:20Z"),  # = T0, RFC 3339
    ("c1", "cy", T0),
    ("a2", "ana", T0 + 1 * DAY_MS),
    ("a2", "ana", T0 + 1 * DAY_MS),  # a producer duplicate
]


def line(event_id: str, user_id: str, ts: int | str, **more: Any) -> str:
    return json.dumps({"event_id": event_id, "user_id": user_id, "type": "visit", "ts": ts, **more})


def history(path: Path) -> Path:
    lines = [line(*event) for event in KEPT]
    lines.insert(3, line("b2", "bo", AS_OF_MS + 1))  # after --as-of: ignored, counted
    lines.insert(5, "{this is not json")
    lines.insert(1, "")  # blank lines are not counted
    lines.append(json.dumps({"event_id": "x", "user_id": "dee", "type": "visit"}))  # no ts
    lines.append(line("y", "dee", "1972-12-31T23:59:59Z"))  # before ENGAGEMENT_MIN_TS
    lines.append(line("z", "dee", T0, type="$tick"))
    path.write_text("\n".join(lines) + "\n")
    return path


def run(tmp_path: Path) -> tuple[ReplayStats, list[dict[str, str]], list[str], bytes]:
    scores, signals = io.StringIO(), io.BytesIO()
    stats = replay(history(tmp_path / "events.jsonl"), AS_OF_MS, CONFIG, scores, signals, False)
    header = scores.getvalue().splitlines()[0].split(",")
    rows = list(csv.DictReader(io.StringIO(scores.getvalue())))
    return stats, rows, header, signals.getvalue()


def test_scores_have_the_contract_columns_and_one_row_per_user(tmp_path: Path) -> None:
    _stats, rows, header, _signals = run(tmp_path)
    assert header == ["user_id", "risk", "tier", "stage", "inactive_days", "threshold_days"]
    by_user = {row["user_id"]: row for row in rows}
    assert list(by_user) == ["ana", "bo", "cy"]

    assert by_user["ana"]["tier"] == "dormant"  # quiet 18 days
    assert by_user["ana"]["stage"] == "dormant"
    assert by_user["ana"]["inactive_days"] == "18.000"
    assert by_user["ana"]["threshold_days"] == "14.000"

    assert by_user["bo"]["tier"] == ""  # no tier: empty, not "none"
    assert by_user["bo"]["stage"] == "new"
    assert by_user["bo"]["inactive_days"] == "5.000"
    assert by_user["bo"]["threshold_days"] == "7.000"

    assert by_user["cy"]["tier"] == "at_risk"  # quiet 11 days since the return
    assert by_user["cy"]["stage"] == "at_risk"
    assert by_user["cy"]["inactive_days"] == "11.000"

    for row in rows:
        assert 0.0 <= float(row["risk"]) <= 1.0


def test_stats_count_lines_duplicates_late_and_rejected(tmp_path: Path) -> None:
    stats, _rows, _header, _signals = run(tmp_path)
    assert stats.lines == len(KEPT) + 5  # kept, after as_of, not json, no ts, too old, reserved
    assert stats.events == len(KEPT)
    assert stats.applied == len(KEPT) - 1
    assert stats.duplicates == 1
    assert stats.after_as_of == 1
    assert stats.rejected == {
        "not_json": 1,
        "missing_field": 1,
        "ts_out_of_range": 1,
        "reserved_type": 1,
    }
    assert stats.users == 3
    assert stats.signals == {"at_risk": 3, "dormant": 1, "reactivated": 1}


def test_signals_equal_a_partition_engine_fed_the_sorted_events(tmp_path: Path) -> None:
    _stats, _rows, _header, written = run(tmp_path)

    def ts_ms(ts: int | str) -> int:
        return T0 if isinstance(ts, str) else ts

    ordered = sorted(
        enumerate(KEPT), key=lambda item: (ts_ms(item[1][2]), item[0])
    )  # by (ts, input order)
    engine = PartitionEngine(0, CONFIG, DictStore())
    emissions = []
    for _order, (event_id, user_id, ts) in ordered:
        event = ModelEvent(
            user_id=user_id,
            id_hash=id_hash(event_id),
            type="visit",
            ts_ms=ts_ms(ts),
            append_ms=ts_ms(ts),
        )
        emissions += engine.on_event(event).emissions
    emissions += engine.advance_to(AS_OF_MS)
    expected = b"".join(encode(Signal.from_emission(e)) + b"\n" for e in emissions)
    assert written == expected
    ids = [json.loads(raw)["signal_id"] for raw in written.splitlines()]
    assert ids == [
        f"cy:{T0}:at_risk",
        f"cy:{T0}:reactivated",
        f"ana:{T0 + 2 * DAY_MS}:at_risk",
        f"ana:{T0 + 2 * DAY_MS}:dormant",
        f"cy:{T0 + 9 * DAY_MS}:at_risk",
    ]


def test_replay_without_a_signals_file_still_scores(tmp_path: Path) -> None:
    scores = io.StringIO()
    stats = replay(history(tmp_path / "events.jsonl"), AS_OF_MS, CONFIG, scores, None, False)
    assert stats.signals["at_risk"] == 3
    assert len(scores.getvalue().splitlines()) == 1 + 3


@pytest.mark.parametrize("as_of_ms", [T0 - 1, T0 + 100 * DAY_MS])
def test_as_of_bounds_the_history(tmp_path: Path, as_of_ms: int) -> None:
    scores = io.StringIO()
    stats = replay(history(tmp_path / "events.jsonl"), as_of_ms, CONFIG, scores, None, False)
    if as_of_ms < T0:
        assert (stats.events, stats.users, stats.after_as_of) == (0, 0, len(KEPT) + 1)
        assert scores.getvalue().splitlines() == [
            "user_id,risk,tier,stage,inactive_days,threshold_days"
        ]
    else:
        assert stats.after_as_of == 0
        rows = list(csv.DictReader(io.StringIO(scores.getvalue())))
        assert {row["tier"] for row in rows} == {"churned"}


def test_replay_lines_accept_and_reject_what_the_live_decoder_does(tmp_path: Path) -> None:
    """A ``props`` that is not an object is refused by replay as the live decoder refuses it."""
    from streams.decode import DecodeRules, decode_record

    cases = {
        "object": {"page": "p1", "n": [1, 2]},
        "null": None,
        "string": "p1",
        "list": ["p1"],
        "number": 3,
        "bool": True,
    }
    rules = DecodeRules(topic="events", partitions=1, event=EventRules(max_future_ms=0))
    path = tmp_path / "props.jsonl"
    lines = [line(f"e-{name}", f"u-{name}", T0, props=props) for name, props in cases.items()]
    # whitespace around the value, as a producer may write it
    cases |= {"spaced-object": {}, "spaced-null": None}
    lines.append(line("e-spaced-object", "u-spaced-object", T0).replace("}", ', "props":  \t{} }'))
    lines.append(line("e-spaced-null", "u-spaced-null", T0).replace("}", ', "props" :null }'))
    path.write_text("\n".join(lines) + "\n")
    stats = replay(path, AS_OF_MS, CONFIG, io.StringIO(), progress=False)
    live = [
        decode_record(f"u-{name}".encode(), text.encode(), [], 0, T0, n, rules)
        for n, (name, text) in enumerate(zip(cases, lines, strict=True))
    ]
    accepted_live = sum(1 for result in live if isinstance(result, ModelEvent))
    assert stats.events == accepted_live == 4
    assert stats.rejected == {"wrong_type": len(cases) - accepted_live}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["ana", "bo", "cy"]), st.integers(0, 12), st.booleans()),
        max_size=40,
    )
)
def test_users_gathered_while_reading_equal_grouping_the_sorted_events(
    items: list[tuple[str, int, bool]],
) -> None:
    """An in-order file is not sorted and its users' positions come from the read;
    out of order it is sorted and run_users groups: the same history either way."""
    lines = [
        line(f"e{n}" if fresh else "e-again", user, T0 + day * DAY_MS).encode()
        for n, (user, day, fresh) in enumerate(items)
    ]
    read = read_events(iter(lines), AS_OF_MS, ReplayStats(), EventRules())
    times = [event.ts_ms for event in read.events]
    assert times == sorted(times) and len(read.events) == len(items)
    days = [day for _user, day, _fresh in items]
    if days == sorted(days):
        assert read.by_user is not None
        assert list(read.by_user.items()) == list(positions_by_user(read.events).items())
        # one string object per user, shared by its events
        assert len({id(event.user_id) for event in read.events}) == len(read.by_user)
    else:
        assert read.by_user is None
    assert run_users(read.events, CONFIG, AS_OF_MS, None, read.by_user) == run_users(
        read.events, CONFIG, AS_OF_MS
    )


def test_empty_ids_and_types_are_refused_as_the_live_decoder_does(tmp_path: Path) -> None:
    from streams.decode import DecodeRules, decode_record
    from streams.validate import Rejected

    rules = DecodeRules(topic="events", partitions=1, event=EventRules(max_future_ms=0))
    good = json.loads(line("e1", "u1", T0))
    lines = [
        json.dumps(good | {"type": ""}),
        json.dumps(good | {"event_id": "", "user_id": "u2"}),
        json.dumps(good | {"user_id": ""}),
        json.dumps(good | {"type": "$tick", "user_id": "u3"}),
        json.dumps(good | {"user_id": "u4"}),
    ]
    path = tmp_path / "empty.jsonl"
    path.write_text("\n".join(lines) + "\n")
    stats = replay(path, AS_OF_MS, CONFIG, io.StringIO(), progress=False)
    live = [
        decode_record(json.loads(text)["user_id"].encode(), text.encode(), [], 0, T0, n, rules)
        for n, text in enumerate(lines)
    ]
    live_reasons = Counter(r.reason for r in live if isinstance(r, Rejected))
    assert stats.rejected == dict(live_reasons) == {"wrong_type": 3, "reserved_type": 1}
    assert stats.events == 1 == sum(isinstance(r, ModelEvent) for r in live)


def _config_line(scope: str, effective_from: int | str, at_risk: str | int) -> str:
    return json.dumps(
        {
            "scope": scope,
            "effective_from": effective_from,
            "at_risk": at_risk,
            "dormant": "20d",
            "churned": "40d",
        }
    )


def test_cli_replay_applies_tenant_versions_by_effective_from(tmp_path: Path) -> None:
    day_ms = 86_400_000
    base = 1_750_000_000_000
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            line(f"e{n}", user, base + offset * day_ms, tenant=tenant)
            for n, (user, offset, tenant) in enumerate(
                [("ana", 0, "acme"), ("bo", 0, "zed"), ("cy", 6, "acme")]
            )
        )
        + "\n"
    )
    config = tmp_path / "config.jsonl"
    # acme: at risk after 2 days from day 3 on (before that the 7-day default)
    config.write_text(_config_line("acme", base + 3 * day_ms, "2d") + "\n")
    scores, signals = tmp_path / "scores.csv", tmp_path / "signals.jsonl"
    as_of = base + 10 * day_ms
    args = ["replay", str(events), "--as-of", str(as_of), "--horizon", "30d"]
    args += ["--scores", str(scores), "--signals", str(signals), "--config", str(config)]
    result = CliRunner().invoke(main, args, env={"ENGAGEMENT_HOLDOUT_SALT": "salt"})
    assert result.exit_code == 0, result.output
    rows = {row["user_id"]: row for row in csv.DictReader(scores.open())}
    assert rows["ana"]["threshold_days"] == "2.000" and rows["ana"]["tier"] == "at_risk"
    assert rows["bo"]["threshold_days"] == "7.000" and rows["bo"]["tier"] == "at_risk"
    sent = [json.loads(raw) for raw in signals.read_text().splitlines()]
    by_user = {(s["user_id"], s["kind"]): s for s in sent}
    # the 2-day version began on day 3 (until then ana had the 7-day default): judged
    # then, her tier's as_of is its due time under the threshold that applied
    ana = by_user[("ana", "at_risk")]
    assert (ana["as_of"], ana["threshold_ms"]) == (base + 2 * day_ms, 2 * day_ms)
    assert ana["threshold_source"] == "tenant"
    assert by_user[("cy", "at_risk")]["as_of"] == base + 8 * day_ms
    assert by_user[("bo", "at_risk")]["threshold_source"] == "default"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([_config_line("acme", 1_750_000_000_000, "soon")], "config.jsonl:1"),
        (["", '{"at_risk": "1d", "dormant": "2d", "churned": "3d"}'], "config.jsonl:2"),
        ([_config_line("acme", 1_750_000_000_000, "5d").replace('"20d"', '"1d"')], "grow"),
        (
            [_config_line("acme", 1_750_000_000_000, "1d")] * 2,
            "a second version of 'acme'",
        ),
    ],
)
def test_a_bad_config_file_is_refused_with_the_line(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    config = tmp_path / "config.jsonl"
    config.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigurationError, match=message):
        read_config(config)
    events = tmp_path / "events.jsonl"
    events.write_text(line("e1", "ana", T0) + "\n")
    args = ["replay", str(events), "--as-of", str(T0), "--horizon", "30d"]
    args += ["--scores", str(tmp_path / "s.csv"), "--config", str(config)]
    result = CliRunner().invoke(main, args, env={"ENGAGEMENT_HOLDOUT_SALT": "salt"})
    assert result.exit_code == 2 and "--config" in result.output


def test_replay_applies_a_versions_activity_classes(tmp_path: Path) -> None:
    """A version's passive and churn-intent types hold for its tenant only; a
    passive-only user of the tenant has no state; the summary counts passive events."""
    day_ms = 86_400_000
    base = 1_750_000_000_000
    events = tmp_path / "events.jsonl"
    rows = [
        ("ana", 0, "acme", "visit"),
        ("ana", 1, "acme", "plan_cancelled"),
        ("pat", 1, "acme", "push_received"),
        ("bo", 0, "zed", "visit"),
        ("bo", 1, "zed", "plan_cancelled"),
        ("bo", 2, "zed", "push_received"),
    ]
    events.write_text(
        "\n".join(
            line(f"e{n}", user, base + day * day_ms, tenant=tenant, type=kind)
            for n, (user, day, tenant, kind) in enumerate(rows)
        )
        + "\n"
    )
    config = tmp_path / "config.jsonl"
    version = json.loads(_config_line("acme", base - day_ms, "7d"))
    version |= {"passive_types": ["push_received"], "churn_intent_types": ["plan_cancelled"]}
    config.write_text(json.dumps(version) + "\n")
    scores, signals = tmp_path / "scores.csv", tmp_path / "signals.jsonl"
    args = ["replay", str(events), "--as-of", str(base + 3 * day_ms), "--horizon", "30d"]
    args += ["--scores", str(scores), "--signals", str(signals), "--config", str(config)]
    result = CliRunner().invoke(main, args, env={"ENGAGEMENT_HOLDOUT_SALT": "salt"})
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["passive"] == 1 and summary["users"] == 2
    sent = [json.loads(raw) for raw in signals.read_text().splitlines()]
    assert [(s["user_id"], s["kind"]) for s in sent] == [("ana", "churn_intent")]
    assert {row["user_id"] for row in csv.DictReader(scores.open())} == {"ana", "bo"}
