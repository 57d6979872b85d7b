"""The committed JSON Schemas match the record types, and real records validate."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from streams.control import ControlSigner
from streams.decode import id_hash
from streams.records import DlqRecord, InputEvent, Signal, Tick, encode
from streams.schemas import SCHEMA_DIR, render_schemas
from tables.engine import DictStore, PartitionEngine
from tables.model import Emission, ModelConfig, ModelEvent
from tables.thresholds import ThresholdPolicy

DAY_MS = 86_400_000
T0 = 1_700_000_000_000


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    return loaded


def validator(name: str) -> jsonschema.Draft202012Validator:
    document = schema(name)
    jsonschema.Draft202012Validator.check_schema(document)
    return jsonschema.Draft202012Validator(document)


def emissions() -> list[Emission]:
    """A tier signal and a reactivation, as the engine makes them."""
    config = ModelConfig(
        policy=ThresholdPolicy(
            defaults_ms=(7 * DAY_MS, 14 * DAY_MS, 30 * DAY_MS), min_ms=DAY_MS, max_ms=90 * DAY_MS
        ),
        lateness_ms=600_000,
        day_ms=DAY_MS,
        horizon_ms=30 * DAY_MS,
        holdout_salt="salt",
    )
    engine = PartitionEngine(0, config, DictStore())

    def event(ts_ms: int) -> ModelEvent:
        return ModelEvent(
            user_id="u1",
            id_hash=id_hash(f"e{ts_ms}"),
            type="visit",
            ts_ms=ts_ms,
            append_ms=ts_ms,
            tenant="acme",
            segment="pro",
        )

    for day in range(5):
        engine.on_event(event(T0 + day * DAY_MS))
    tiers = engine.advance_to(T0 + 20 * DAY_MS)
    returned = engine.on_event(event(T0 + 21 * DAY_MS)).emissions
    assert [e.kind for e in tiers + returned] == ["at_risk", "dormant", "reactivated"]
    return tiers + returned


@pytest.mark.parametrize("name", sorted(render_schemas()))
def test_committed_schema_matches_the_code(name: str) -> None:
    committed = SCHEMA_DIR / name
    assert committed.exists(), f"{committed} is missing: run `engagement schemas`"
    assert committed.read_text() == render_schemas()[name], (
        f"{committed} drifted from streams/records.py: run `engagement schemas` and commit it"
    )


def test_no_stale_schema_files_are_committed() -> None:
    committed = {path.name for path in SCHEMA_DIR.glob("*.json")}
    assert committed == set(render_schemas()), "run `engagement schemas` (and delete stale files)"


@pytest.mark.parametrize("index", [0, 1, 2], ids=["at_risk", "dormant", "reactivated"])
def test_signals_validate_against_the_signal_schema(index: int) -> None:
    signal = Signal.from_emission(emissions()[index])
    validator("signal").validate(json.loads(encode(signal)))


def test_signal_schema_rejects_a_signal_without_its_id() -> None:
    payload = json.loads(encode(Signal.from_emission(emissions()[0])))
    del payload["signal_id"]
    assert not validator("signal").is_valid(payload)
    payload = json.loads(encode(Signal.from_emission(emissions()[0])))
    payload["as_of"] = "yesterday"
    assert not validator("signal").is_valid(payload)


def test_dlq_record_validates_against_its_schema() -> None:
    record = DlqRecord(
        reason="not_json",
        detail="value is not valid UTF-8 JSON",
        topic="engagement.events",
        partition=3,
        offset=1234,
        record_ts=T0,
        key_b64=base64.b64encode(b"u1").decode(),
        value_b64=base64.b64encode(b"{oops").decode(),
        seen_at=T0 + 5,
    )
    dlq = validator("dlq-record")
    dlq.validate(json.loads(encode(record)))
    without_key = json.loads(encode(record))
    without_key["key_b64"] = None
    dlq.validate(without_key)
    del without_key["reason"]
    assert not dlq.is_valid(without_key)


def test_input_event_and_signed_tick_validate() -> None:
    event = InputEvent(event_id="e1", user_id="u1", type="visit", ts="2023-11-14T22:13:20Z")
    validator("input-event").validate(json.loads(encode(event)))
    validator("input-event").validate({"event_id": "e", "user_id": "u", "type": "t", "ts": T0})
    value, _headers = ControlSigner({"k1": b"secret"}, "k1").sign(
        "engagement.events", 0, Tick(wall_ms=T0, events_seen_append_ms=T0)
    )
    validator("control-record").validate(json.loads(value))
