"""JSON Schemas (and an AsyncAPI document) generated from the record types.

``engagement schemas`` writes them to ``streams/schemas/``; a test regenerates
them in memory and fails if the committed files drift from the code.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import msgspec

from streams.records import SCHEMA_TYPES, SCHEMA_VERSION

SCHEMA_DIR = Path(__file__).with_name("schemas")


def render_schemas() -> dict[str, str]:
    """File name -> JSON text for every schema document."""
    docs: dict[str, str] = {}
    for name, record_type in SCHEMA_TYPES.items():
        schema: dict[str, Any] = _clean_descriptions(msgspec.json.schema(record_type))
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"urn:engagement-streams:{name}:v{SCHEMA_VERSION}"
        docs[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    docs["asyncapi.json"] = json.dumps(_asyncapi(), indent=2, sort_keys=True) + "\n"
    return docs


def _clean_descriptions(node: Any) -> Any:
    """Descriptions taken from docstrings, dedented: Python 3.13 strips a
    docstring's indentation itself and 3.11 does not, and the files must not
    depend on the interpreter that wrote them."""
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else _clean_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(item) for item in node]
    return node


def _asyncapi() -> dict[str, Any]:
    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"./{name}.schema.json"}

    channels = {
        "engagement.events": (
            "input-event",
            "User events (key = user id), plus signed control records",
        ),
        "engagement.signals": (
            "signal",
            "at_risk / dormant / churned / reactivated (key = user id)",
        ),
        "engagement.lifecycle": (
            "lifecycle-transition",
            "Lifecycle stage transitions (key = user id)",
        ),
        "engagement.dlq": ("dlq-record", "Rejected input with a reason code"),
        "engagement.config": (
            "threshold-config",
            "Threshold versions (key = tenant[/segment]@effective_from, compacted)",
        ),
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "engagement-streams",
            "version": str(SCHEMA_VERSION),
            "description": "Topic names are defaults; see ENGAGEMENT_TOPIC_* settings.",
        },
        "channels": {
            topic: {
                "address": topic,
                "description": text,
                "messages": {schema: {"payload": ref(schema)}},
            }
            for topic, (schema, text) in channels.items()
        },
    }


def write_schemas(out: Path | None = None) -> list[Path]:
    target = out or SCHEMA_DIR
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = target / name
        path.write_text(text)
        written.append(path)
    return written
