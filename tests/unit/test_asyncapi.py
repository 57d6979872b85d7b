"""streams/schemas/asyncapi.json, validated by the official AsyncAPI parser
(npm @asyncapi/parser, installed by `make asyncapi` into .cache/asyncapi),
and checked against the topics the worker creates and the record schemas."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from streams.schemas import SCHEMA_DIR
from streams.settings import Settings
from streams.topics import topic_specs

ROOT = Path(__file__).resolve().parents[2]
PARSER_DIR = ROOT / ".cache" / "asyncapi"
SCRIPT = ROOT / "tests" / "asyncapi" / "validate.mjs"
DOCUMENT = SCHEMA_DIR / "asyncapi.json"
ERROR, WARNING = 0, 1  # the parser's severities


def _parse(path: Path) -> tuple[bool, list[dict[str, Any]]]:
    node = shutil.which("node")
    assert node, "node is needed to run the AsyncAPI parser"
    assert (PARSER_DIR / "node_modules" / "@asyncapi" / "parser").is_dir(), (
        "the AsyncAPI parser is missing: run `make asyncapi`"
    )
    done = subprocess.run(
        [node, "--input-type=module", "-", str(path)],
        input=SCRIPT.read_text(),
        cwd=PARSER_DIR,  # resolves @asyncapi/parser from .cache/asyncapi/node_modules
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    *diagnostics, verdict = lines
    return bool(verdict["valid"]), diagnostics


def _document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DOCUMENT.read_text())
    return loaded


def test_the_parser_accepts_the_document_without_errors_or_warnings() -> None:
    valid, diagnostics = _parse(DOCUMENT)
    assert valid, diagnostics
    serious = [d for d in diagnostics if d["severity"] in (ERROR, WARNING)]
    assert not serious, serious


def test_the_parser_refuses_a_broken_document(tmp_path: Path) -> None:
    """The check can fail: a dangling channel and a bad Kafka binding are errors."""
    broken = _document()
    broken["operations"]["send-signals"]["channel"] = {"$ref": "#/channels/nowhere"}
    broken["channels"]["dlq"]["bindings"]["kafka"]["partitions"] = "eight"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    valid, diagnostics = _parse(path)
    assert not valid
    paths = {tuple(d["path"][:2]) for d in diagnostics if d["severity"] == ERROR}
    assert ("operations", "send-signals") in paths
    assert ("channels", "dlq") in paths


def test_channels_are_the_topics_the_worker_creates() -> None:
    document = _document()
    specs = {spec.name: spec for spec in topic_specs(Settings.model_construct())}
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == set(specs)
    for channel in document["channels"].values():
        spec = specs[channel["address"]]
        binding = channel["bindings"]["kafka"]
        assert binding["topic"] == spec.name
        assert binding["partitions"] == spec.partitions
        assert binding["topicConfiguration"]["cleanup.policy"] == [spec.configs["cleanup.policy"]]
        for message in channel["messages"].values():
            key = message["bindings"]["kafka"]["key"]
            assert key["type"] == "string" and key["description"]


def test_operations_cover_every_channel_in_the_engine_direction() -> None:
    document = _document()
    direction = {
        (op["channel"]["$ref"].rsplit("/", 1)[1], op["action"])
        for op in document["operations"].values()
    }
    assert direction == {
        ("events", "receive"),
        ("events", "send"),  # the control records
        ("config", "receive"),
        ("signals", "send"),
        ("lifecycle", "send"),
        ("user-status", "send"),
        ("dlq", "send"),
        ("cohorts", "send"),
    }
    servers = document["servers"]
    assert {server["protocol"] for server in servers.values()} == {"kafka", "kafka-secure"}


def test_payloads_are_the_record_schemas() -> None:
    """Each message payload validates what its JSON Schema file validates, and refuses
    what it refuses (examples from docs/CONTRACTS.md would do; a signal is enough)."""
    document = _document()
    signal_file = json.loads((SCHEMA_DIR / "signal.schema.json").read_text())
    components = document["components"]["schemas"]
    for name, definition in signal_file["$defs"].items():
        pointed = json.dumps(definition).replace("#/$defs/", "#/components/schemas/")
        assert components[name] == json.loads(pointed), name
    payload = {
        "$ref": document["channels"]["signals"]["messages"]["signal"]["payload"]["$ref"],
        "components": document["components"],
    }
    record = {
        "signal_id": "u1:1:at_risk",
        "kind": "at_risk",
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
        "horizon_ms": 3,
        "reasons": [],
        "group": "treatment",
        "schema_version": 1,
    }
    validator = jsonschema.Draft202012Validator(payload)
    validator.validate(record)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**record, "kind": "unknown"})
