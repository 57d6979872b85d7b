"""docs/CONTRACTS.md against the code: every example record validates against
its JSON Schema in streams/schemas/ (checked with the ``jsonschema`` package,
not with msgspec, which generated the schemas) and follows the field rules the
document states; the decoder gives the DLQ example its reason; and the
document's reason codes, enums, settings and commands are the code's."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner

from agents.cli.main import main
from streams.decode import DecodeRules, decode_record
from streams.records import DLQ_REASONS
from streams.schemas import SCHEMA_DIR
from streams.settings import Settings
from streams.validate import Rejected
from tables.groups import HOLDOUT, TREATMENT
from tables.intent import CHURN_INTENT_KIND
from tables.lifecycle import STAGES
from tables.model import REACTIVATED
from tables.state import TIER_NAMES
from tables.thresholds import SOURCE_DEFAULT, SOURCE_SEGMENT, SOURCE_TENANT, SOURCE_USER

CONTRACTS = Path(__file__).resolve().parents[2] / "docs" / "CONTRACTS.md"
# An example is a fenced block whose info string names its schema: ```json signal
EXAMPLE = re.compile(r"^```json (?P<schema>[a-z-]+)\n(?P<body>.*?)^```$", re.M | re.S)
JSON_FENCE = re.compile(r"^```json\b", re.M)
STATUS = "user-status"


def _text() -> str:
    return CONTRACTS.read_text()


def _examples() -> list[tuple[str, Any]]:
    return [(m["schema"], json.loads(m["body"])) for m in EXAMPLE.finditer(_text())]


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    return schema


def _validate(name: str, record: Any) -> None:
    schema = _schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(record)


def _of(name: str) -> list[Any]:
    return [record for schema, record in _examples() if schema == name]


def _first_column(header: str) -> set[str]:
    """The names in the first column of the table whose header row is ``header``."""
    lines = _text().splitlines()
    start = lines.index(header) + 2  # past the header and its separator row
    names: set[str] = set()
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        match = re.match(r"\| `([A-Za-z0-9_]+)` \|", line)
        assert match is not None, line
        names.add(match[1])
    return names


def test_every_json_block_names_its_schema() -> None:
    assert len(JSON_FENCE.findall(_text())) == len(_examples())


@pytest.mark.parametrize(
    ("name", "record"),
    _examples(),
    ids=[f"{name}-{n}" for n, (name, _record) in enumerate(_examples())],
)
def test_example_validates_against_its_schema(name: str, record: Any) -> None:
    _validate(name, record)


def test_every_record_type_has_an_example() -> None:
    generated = {
        path.name.removesuffix(".schema.json") for path in SCHEMA_DIR.glob("*.schema.json")
    }
    assert generated == {name for name, _record in _examples()}


def test_the_validator_refuses_a_broken_record() -> None:
    signal = dict(_of("signal")[0])
    with pytest.raises(jsonschema.ValidationError):
        _validate("signal", {**signal, "risk": "high"})
    del signal["signal_id"]
    with pytest.raises(jsonschema.ValidationError):
        _validate("signal", signal)
    with pytest.raises(jsonschema.ValidationError):
        _validate(STATUS, {**_of(STATUS)[0], "last_seen": "yesterday"})


def test_examples_use_the_enums_of_the_code() -> None:
    signals = _of("signal")
    assert {s["kind"] for s in signals} == {*TIER_NAMES[1:], CHURN_INTENT_KIND, REACTIVATED}
    sources = {SOURCE_USER, SOURCE_SEGMENT, SOURCE_TENANT, SOURCE_DEFAULT}
    assert {s["threshold_source"] for s in signals} <= sources
    transitions = _of("lifecycle-transition")
    assert {t["to_stage"] for t in transitions} <= set(STAGES)
    assert {t["from_stage"] for t in transitions} <= {*STAGES, None}
    for record in (*signals, *transitions):
        assert record["group"] in (HOLDOUT, TREATMENT)
        assert record["user_id"] in (record.get("signal_id") or record["transition_id"])
    assert {d["reason"] for d in _of("dlq-record")} <= set(DLQ_REASONS)
    assert {c["type"] for c in _of("control-record")} == {"$tick", "$config", "$erase"}


def test_reason_code_table_lists_exactly_the_dlq_reasons() -> None:
    documented = _first_column("| `reason` | the record |")
    assert documented == set(DLQ_REASONS)


def test_settings_table_lists_exactly_the_settings_the_code_reads() -> None:
    documented = _first_column("| variable | type, unit | default | rule | meaning |")
    read = {str(field.validation_alias) for field in Settings.model_fields.values()}
    assert documented == read, {
        "undocumented": sorted(read - documented),
        "documented but not read": sorted(documented - read),
    }


def test_every_documented_command_exists() -> None:
    documented = set(re.findall(r"`engagement ([a-z-]+)", _text()))
    assert documented
    runner = CliRunner()
    for command in sorted(documented):
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0, (command, result.output)


def test_examples_follow_the_field_rules_of_the_contract() -> None:
    for signal in _of("signal"):
        assert signal["signal_id"] == f"{signal['user_id']}:{signal['episode']}:{signal['kind']}"
        assert signal["episode"] == signal["last_seen"]
        assert signal["inactive_ms"] == signal["as_of"] - signal["last_seen"]
        if signal["kind"] == REACTIVATED:
            assert signal["gap_ms"] == signal["inactive_ms"]
            assert signal["late"] == (signal["time_to_return_ms"] < 0)
        elif signal["kind"] != CHURN_INTENT_KIND:  # a churn intent comes when it comes
            assert signal["inactive_ms"] == signal["threshold_ms"]
            assert "tier_reached" not in signal and "late" not in signal
    for transition in _of("lifecycle-transition"):
        expected = f"{transition['user_id']}:{transition['as_of']}:{transition['to_stage']}"
        assert transition["transition_id"] == expected
    for status in _of(STATUS):
        assert status["as_of"] >= status["last_seen"] == status["episode"]


def test_the_decoder_gives_the_dlq_example_its_reason() -> None:
    for record in _of("dlq-record"):
        rules = DecodeRules(topic=record["topic"], partitions=4)
        key = None if record["key_b64"] is None else base64.b64decode(record["key_b64"])
        value = None if record["value_b64"] is None else base64.b64decode(record["value_b64"])
        result = decode_record(
            key, value, None, record["partition"], record["record_ts"], record["offset"], rules
        )
        assert isinstance(result, Rejected) and result.reason == record["reason"]
