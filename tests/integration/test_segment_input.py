"""ENGAGEMENT_INPUT_FORMAT=segment on Apache Kafka: Segment calls published as they
are reach the users they name (an anonymous visitor by its anonymousId), bad
calls reach the DLQ with their reasons, and `engagement replay` of the same
calls finds the same users and the same refusals. The worker logs JSON
(ENGAGEMENT_LOG_FORMAT=json) without a user id."""

from __future__ import annotations

import base64
import csv
import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from click.testing import CliRunner
from support.workers import Deployment, latest_states, produce, read_topic, signals_of

from agents.cli.main import main
from streams.records import DlqRecord
from tables.state import ANONYMOUS

KNOWN = "seg-user-1"
VISITOR = "0b9a2c1e-5d7f-4a8e-9c3b-2f6d1e0a7b54"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def call(message_id: str, ts_ms: int, **fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": message_id,
        "event": "Order Completed",
        "timestamp": iso(ts_ms),
        "properties": {"revenue": 12.5},
        "context": {"library": {"name": "analytics-python", "version": "2.3.3"}},
        **fields,
    }


def without(fields: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != name}


def records(start_ms: int) -> list[tuple[str, bytes, bytes]]:
    """(what, key, value): the good calls first, then one bad call per reason."""
    good = [
        ("known", KNOWN, call("m-1", start_ms, userId=KNOWN, anonymousId=VISITOR)),
        ("known-page", KNOWN, call("m-2", start_ms + 1, type="page", userId=KNOWN)),
        ("visitor", VISITOR, call("m-3", start_ms, anonymousId=VISITOR, userId=None)),
    ]
    bad = [
        ("identify", KNOWN, {**call("m-4", start_ms, userId=KNOWN), "type": "identify"}),
        ("no-message-id", KNOWN, without(call("x", start_ms, userId=KNOWN), "messageId")),
        ("no-identity", "nobody", call("m-5", start_ms)),
        ("keyed-by-visitor", VISITOR, call("m-6", start_ms, userId=KNOWN, anonymousId=VISITOR)),
    ]
    return [(what, key.encode(), json.dumps(value).encode()) for what, key, value in good + bad]


EXPECTED_DLQ = Counter({"wrong_type": 1, "missing_field": 2, "key_mismatch": 1})


async def test_segment_calls_live_and_in_replay(kafka_broker: Any, tmp_path: Path) -> None:
    deployment = Deployment(
        kafka_broker.url,
        tmp_path,
        ENGAGEMENT_INPUT_FORMAT="segment",
        ENGAGEMENT_LOG_FORMAT="json",
        ENGAGEMENT_LOG_LEVEL="DEBUG",
        # anonymous visitors get tiers only when asked (docs/CONTRACTS.md, Activity)
        ENGAGEMENT_ANONYMOUS_TIERS="true",
    )
    await deployment.create_topics()
    await deployment.start_worker()
    start_ms = int(time.time() * 1000)
    sent = records(start_ms)
    settings = deployment.settings
    try:
        await produce(deployment.bootstrap, settings.topic_events, [(k, v) for _w, k, v in sent])

        def both_at_risk(found: list[Any]) -> bool:
            return {(s.user_id, s.kind) for s in signals_of(found)} >= {
                (KNOWN, "at_risk"),
                (VISITOR, "at_risk"),
            }

        signals = await read_topic(
            deployment.bootstrap, settings.topic_signals, until=both_at_risk, timeout_s=90
        )
        assert both_at_risk(signals), deployment.log_tail()
        dlq = await read_topic(
            deployment.bootstrap,
            settings.topic_dlq,
            until=lambda found: len(found) >= sum(EXPECTED_DLQ.values()),
            timeout_s=60,
        )
        states = await latest_states(deployment)
        assert states[VISITOR].activity_flags & ANONYMOUS  # marked by its anonymousId
        assert not states[KNOWN].activity_flags & ANONYMOUS
    finally:
        deployment.stop_all()

    # the worker's log: JSON objects only, and no user id even at DEBUG
    log_lines = [
        line
        for path in deployment.run_dir.glob("*.log")
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    assert log_lines
    for line in log_lines:
        entry = json.loads(line)
        assert {"ts", "level", "logger", "message"} <= set(entry), line
        assert KNOWN not in line and VISITOR not in line, line

    rejected = [msgspec.json.decode(record.value, type=DlqRecord) for record in dlq]
    assert Counter(r.reason for r in rejected) == EXPECTED_DLQ
    # a DLQ record keeps the call as it was sent
    bad_values = {value for _what, _key, value in sent[3:]}
    assert {base64.b64decode(r.value_b64 or "") for r in rejected} == bad_values
    # the known user's two calls and the visitor's one, each under its own key
    assert set(states) == {KNOWN, VISITOR}
    assert states[KNOWN].last_seen_ms == start_ms + 1

    # the same calls as a history: the same users, the same refusals but the
    # one a broker record alone can show (the key)
    history = tmp_path / "calls.jsonl"
    history.write_bytes(b"".join(value + b"\n" for _what, _key, value in sent))
    scores = tmp_path / "scores.csv"
    as_of = str(start_ms + 60_000)
    args = ["replay", str(history), "--as-of", as_of, "--horizon", "30d", "--scores", str(scores)]
    result = CliRunner().invoke(main, args, env=deployment.env)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    offline = EXPECTED_DLQ - Counter({"key_mismatch": 1})
    assert summary["rejected"] == dict(offline)
    with scores.open() as file:
        users = {row["user_id"] for row in csv.DictReader(file)}
    # the call keyed by the visitor names the known user: offline it is accepted
    assert users == {KNOWN, VISITOR}
    assert summary["events"] == 4
