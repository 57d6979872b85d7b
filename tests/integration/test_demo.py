"""`engagement demo --duration 120` end to end: every signal kind, reactivations and DLQ
records from the simulator's ordinary population, nothing left behind; and every
record the engine wrote on the broker validates against its JSON Schema (checked
with the `jsonschema` package, not with msgspec, which generated the schemas)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from streams.records import CONTROL_HEADER
from streams.schemas import SCHEMA_DIR
from streams.settings import Settings
from tables.vocabulary import SIGNAL_KINDS

SUMMARY = re.compile(
    r"summary: events in (?P<events>\d+), poison sent (?P<poison>\d+), DLQ (?P<dlq>\d+), "
    r"signals: (?P<signals>[a-z_0-9 ,]+); lifecycle: (?P<stages>[a-z_0-9 ,]*); "
    r"status records (?P<status>\d+)"
)
DEFAULTS = Settings.model_construct()


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _pairs(text: str) -> dict[str, int]:
    return {name: int(n) for name, n in (item.rsplit(" ", 1) for item in text.split(", ") if item)}


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _records(directory: Path, topic: str) -> list[dict[str, Any]]:
    path = directory / f"{topic}.jsonl"
    assert path.exists(), f"nothing recorded from {topic}"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _value(record: dict[str, Any]) -> Any:
    raw = record["value_b64"]
    return None if raw is None else json.loads(base64.b64decode(raw))


def _check_recorded_records(directory: Path) -> Counter[str]:
    """Validate every recorded output record, and every input record the engine
    accepted; returns how many of each schema were checked."""
    checked: Counter[str] = Counter()
    for topic, schema in (
        (DEFAULTS.topic_signals, "signal"),
        (DEFAULTS.topic_lifecycle, "lifecycle-transition"),
        (DEFAULTS.topic_status, "user-status"),
        (DEFAULTS.topic_dlq, "dlq-record"),
    ):
        validator = _validator(schema)
        for record in _records(directory, topic):
            value = _value(record)
            if value is None:  # a status tombstone
                continue
            validator.validate(value)
            checked[schema] += 1
    rejected = {
        (dlq["partition"], dlq["offset"])
        for dlq in map(_value, _records(directory, DEFAULTS.topic_dlq))
    }
    events, control = _validator("input-event"), _validator("control-record")
    for record in _records(directory, DEFAULTS.topic_events):
        if (record["partition"], record["offset"]) in rejected:
            continue
        is_control = any(name == CONTROL_HEADER for name, _value in record["headers"])
        (control if is_control else events).validate(_value(record))
        checked["control-record" if is_control else "input-event"] += 1
    return checked


# The gate runs the default (embedded) demo; on Apache Kafka the same run is in `-m full`.
@pytest.mark.parametrize("broker", ["embedded", pytest.param("kafka", marks=pytest.mark.full)])
def test_demo_shows_every_signal_kind_and_its_records_follow_the_contract(
    broker: str, kafka_broker: object, tmp_path: Path
) -> None:
    # kafka_broker: makes sure the jars are fetched before the demo starts its own broker
    marker = f"DEMO_TEST_{uuid.uuid4().hex}"
    env = {**os.environ, marker: "1"}
    repo = Path(__file__).resolve().parents[2]
    record_dir = tmp_path / "records"
    command = [sys.executable, "-m", "agents.cli.main", "demo", "--duration", "120"]
    done = subprocess.run(
        [*command, "--broker", broker, "--record", str(record_dir)],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    match = SUMMARY.search(done.stdout)
    assert match, done.stdout[-2000:]
    assert int(match["events"]) > 1000
    poison, dlq = int(match["poison"]), int(match["dlq"])
    assert poison > 0 and dlq == poison
    signals = _pairs(match["signals"])
    assert set(signals) == set(SIGNAL_KINDS)
    assert all(n > 0 for n in signals.values()), signals
    assert signals["at_risk"] >= signals["dormant"] >= signals["churned"]
    stages = _pairs(match["stages"])
    assert stages.get("resurrected", 0) > 0 and stages.get("at_risk", 0) > 0, stages
    assert int(match["status"]) > 0
    # weeks of 1 s model days pass within the demo: cohorts churn and return
    growth = re.search(
        r"^previous cohort period: new (\d+), retained (\d+), resurrected (\d+), "
        r"churned (\d+), quick ratio ",
        done.stdout,
        re.M,
    )
    assert growth and sum(int(n) for n in growth.groups()) > 0, done.stdout[-2000:]
    # the live lines are signals as they arrive
    assert re.search(r"^\+\s*\d+\.\ds\s+at_risk\s", done.stdout, re.M)
    assert "stopped broker, worker and redis-server." in done.stdout
    assert _processes_with(marker) == []

    checked = _check_recorded_records(record_dir)
    assert checked["signal"] == sum(signals.values())
    assert checked["dlq-record"] == dlq
    for schema in ("lifecycle-transition", "user-status", "input-event", "control-record"):
        assert checked[schema] > 0, schema


def test_a_broken_record_fails_the_check(tmp_path: Path) -> None:
    """The record check can fail: a signal with a kind outside the enum."""
    signal = {
        "signal_id": "u1:1:gone",
        "kind": "gone",
        "user_id": "u1",
        "tenant": "",
        "segment": "",
        "episode": 1,
        "as_of": 2,
        "last_seen": 1,
        "inactive_ms": 1,
        "threshold_ms": 1,
        "threshold_source": "default",
        "risk": 0.5,
        "horizon_ms": 1,
        "reasons": [],
        "group": "treatment",
        "schema_version": 1,
    }
    line = {
        "partition": 0,
        "offset": 0,
        "key_b64": None,
        "value_b64": base64.b64encode(json.dumps(signal).encode()).decode(),
        "headers": [],
    }
    (tmp_path / f"{DEFAULTS.topic_signals}.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(jsonschema.ValidationError):
        _check_recorded_records(tmp_path)
