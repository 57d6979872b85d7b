"""The committed JSON Schemas match the record types, and real records validate."""

from __future__ import annotations

import ast
import base64
import importlib
import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from streams.control import ControlSigner
from streams.decode import id_hash
from streams.records import DLQ_REASONS, DlqRecord, InputEvent, Signal, Tick, encode
from streams.schemas import SCHEMA_DIR, render_schemas
from tables.activation import SOURCE_ACTIVATION
from tables.cadence import NEGATIVE_KINDS
from tables.engine import DictStore, PartitionEngine
from tables.groups import HOLDOUT, TREATMENT
from tables.lifecycle import STAGES
from tables.model import REACTIVATED, Emission, ModelConfig, ModelEvent
from tables.state import TIER_NAMES
from tables.thresholds import (
    SOURCE_DEFAULT,
    SOURCE_POPULATION,
    SOURCE_SEGMENT,
    SOURCE_TENANT,
    SOURCE_USER,
    ThresholdPolicy,
)
from tables.vocabulary import LIFECYCLE_STAGES, REASON_CODES, SIGNAL_KINDS, TIERS

TABLES = Path(__file__).resolve().parents[2] / "tables"

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


def _definitions() -> list[tuple[str, str, dict[str, Any]]]:
    """(schema file, definition name, definition) of every record type."""
    return [
        (path.name, name, definition)
        for path in sorted(SCHEMA_DIR.glob("*.schema.json"))
        for name, definition in json.loads(path.read_text())["$defs"].items()
    ]


def _enum(prop: dict[str, Any]) -> list[Any]:
    """The enum of a property, or of the string branch of a nullable one."""
    for branch in prop.get("anyOf", [prop]):
        if "enum" in branch:
            found: list[Any] = branch["enum"]
            return found
    raise AssertionError(f"no enum in {prop}")


def _property(schema_name: str, definition: str, field: str) -> dict[str, Any]:
    prop: dict[str, Any] = schema(schema_name)["$defs"][definition]["properties"][field]
    return prop


def test_every_field_of_every_record_has_a_description() -> None:
    missing = [
        f"{file}: {name}.{field}"
        for file, name, definition in _definitions()
        for field, prop in definition["properties"].items()
        if len(prop.get("description", "")) < 10
    ]
    assert not missing, "describe them in streams/contract_fields.py: " + ", ".join(missing)


def test_enums_are_the_constants_of_the_code() -> None:
    """The closed sets of the schemas, against the constants the model itself uses."""
    assert set(_enum(_property("signal", "Signal", "kind"))) == _kinds_emitted_in_tables()
    assert {*TIER_NAMES[1:], REACTIVATED} <= _kinds_emitted_in_tables()
    assert set(_enum(_property("signal", "Signal", "tier_reached"))) == set(TIER_NAMES[1:])
    assert set(_enum(_property("signal", "Signal", "threshold_source"))) == {
        SOURCE_USER,
        SOURCE_SEGMENT,
        SOURCE_TENANT,
        SOURCE_POPULATION,
        SOURCE_DEFAULT,
        SOURCE_ACTIVATION,
    }
    for name, definition in (
        ("signal", "Signal"),
        ("lifecycle-transition", "LifecycleTransition"),
    ):
        assert set(_enum(_property(name, definition, "group"))) == {HOLDOUT, TREATMENT}
    for field in ("from_stage", "to_stage"):
        prop = _property("lifecycle-transition", "LifecycleTransition", field)
        assert _enum(prop) == list(STAGES)
    assert _enum(_property("user-status", "UserStatus", "stage")) == list(STAGES)
    assert set(_enum(_property("user-status", "UserStatus", "tier"))) == set(TIER_NAMES[1:])
    assert set(_enum(_property("dlq-record", "DlqRecord", "reason"))) == set(DLQ_REASONS)
    codes = set(_enum(_property("signal", "Reason", "code")))
    assert {f"recent_{kind}" for kind in NEGATIVE_KINDS} <= codes
    assert codes == set(_enum(_property("lifecycle-transition", "Reason", "code")))
    # the vocabulary module only gathers them
    assert set(SIGNAL_KINDS) >= set(TIERS) and set(LIFECYCLE_STAGES) == set(STAGES)


def _kinds_emitted_in_tables() -> set[str]:
    """The ``kind`` of every signal made in tables/ (an ``emission(...)`` call, or an
    ``Emission(...)`` outside that helper), resolved in its module: a literal, a
    module constant, or an item of ``TIER_NAMES`` (a tier)."""
    kinds: set[str] = set()
    for path in sorted(TABLES.glob("*.py")):
        module = importlib.import_module(f"tables.{path.stem}")
        tree = ast.parse(path.read_text())
        helpers = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name == "emission"
        ]
        inside_helper = {id(node) for helper in helpers for node in ast.walk(helper)}
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("Emission", "emission")
                and id(node) not in inside_helper
            ):
                continue
            named = [k.value for k in node.keywords if k.arg == "kind"]
            (kind,) = named or node.args[:1]
            if isinstance(kind, ast.Constant):
                kinds.add(str(kind.value))
            elif isinstance(kind, ast.Name):
                kinds.add(str(getattr(module, kind.id)))
            elif isinstance(kind, ast.Subscript) and ast.unparse(kind.value) == "TIER_NAMES":
                kinds.update(TIER_NAMES[1:])
            else:
                raise AssertionError(f"{path.name}:{node.lineno}: unreadable kind")
    return kinds


def _reason_codes_written_in_tables() -> tuple[set[str], set[str], list[str]]:
    """Codes of every ``Reason(...)`` call in tables/: literals, f-string prefixes, others."""
    literals: set[str] = set()
    prefixes: set[str] = set()
    unreadable: list[str] = []
    for path in sorted(TABLES.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "Reason"
            ):
                continue
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                literals.add(first.value)
            elif isinstance(first, ast.JoinedStr) and isinstance(first.values[0], ast.Constant):
                prefixes.add(str(first.values[0].value))
            else:
                unreadable.append(f"{path.name}:{node.lineno}")
    return literals, prefixes, unreadable


def test_every_reason_code_the_model_writes_is_in_the_schema() -> None:
    literals, prefixes, unreadable = _reason_codes_written_in_tables()
    assert not unreadable, f"write reason codes as literals or f-strings: {unreadable}"
    assert literals, "no Reason(...) found in tables/"
    codes = set(_enum(_property("signal", "Reason", "code")))
    assert literals <= codes, sorted(literals - codes)
    for prefix in prefixes:
        assert any(code.startswith(prefix) for code in codes), prefix
    assert set(REASON_CODES) == codes


def test_schema_version_is_on_every_versioned_record() -> None:
    for index in range(3):
        payload = json.loads(encode(Signal.from_emission(emissions()[index])))
        assert payload["schema_version"] == 1
        without = {k: v for k, v in payload.items() if k != "schema_version"}
        assert not validator("signal").is_valid(without)
    for name, definition in (
        ("signal", "Signal"),
        ("lifecycle-transition", "LifecycleTransition"),
        ("user-status", "UserStatus"),
    ):
        assert "schema_version" in schema(name)["$defs"][definition]["required"], name


def test_an_enum_refuses_an_unknown_value() -> None:
    payload = json.loads(encode(Signal.from_emission(emissions()[0])))
    for field, value in (("kind", "gone"), ("group", "control"), ("threshold_source", "x")):
        assert not validator("signal").is_valid({**payload, field: value}), field
    reasons = [{"code": "no_such_code", "value": 1.0, "baseline": None}]
    assert not validator("signal").is_valid({**payload, "reasons": reasons})
