"""JSON Schemas and an AsyncAPI 3 document generated from the record types.

``engagement schemas`` writes them to ``streams/schemas/``; a test regenerates
them in memory and fails if the committed files drift from the code. The
schemas are msgspec's, with the descriptions and enums of
``streams/contract_fields.py`` added and ``schema_version`` required; the
AsyncAPI document embeds the same definitions under ``components.schemas``
(one self-contained file) and takes topic names, partitions and configs from
``streams/topics.py`` (the defaults; the names are settings).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Final

import msgspec

from streams.contract_fields import DESCRIPTIONS, ENUMS
from streams.records import SCHEMA_TYPES, SCHEMA_VERSION
from streams.settings import Settings
from streams.topics import topic_specs

SCHEMA_DIR = Path(__file__).with_name("schemas")
DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"
KAFKA_BINDING: Final = "0.5.0"
VERSIONED: Final = ("Signal", "LifecycleTransition", "UserStatus", "CohortCount")


def _with_enum(prop: dict[str, Any], values: tuple[str, ...]) -> None:
    """Add ``enum`` to a string property, or to the string branch of a nullable one."""
    branches = prop.get("anyOf", [prop])
    strings = [branch for branch in branches if branch.get("type") == "string"]
    if not strings or "enum" in strings[0]:
        raise ValueError(f"not a plain string property: {prop}")
    strings[0]["enum"] = list(values)


def _annotate(defs: dict[str, Any]) -> None:
    for name, definition in defs.items():
        properties = definition["properties"]
        for field, text in DESCRIPTIONS.get(name, {}).items():
            properties[field]["description"] = text
        for field, values in ENUMS.get(name, {}).items():
            _with_enum(properties[field], values)
        if name in VERSIONED:
            properties["schema_version"] = {
                **properties["schema_version"],
                "const": SCHEMA_VERSION,
            }
            definition["required"] = [*definition["required"], "schema_version"]


def record_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one record type of ``SCHEMA_TYPES``."""
    schema: dict[str, Any] = _clean_descriptions(msgspec.json.schema(SCHEMA_TYPES[name]))
    _annotate(schema["$defs"])
    schema["$schema"] = DRAFT
    schema["$id"] = f"urn:engagement-streams:{name}:v{SCHEMA_VERSION}"
    return schema


def render_schemas() -> dict[str, str]:
    """File name -> JSON text for every schema document."""
    docs = {f"{name}.schema.json": _dump(record_schema(name)) for name in SCHEMA_TYPES}
    docs["asyncapi.json"] = _dump(asyncapi())
    return docs


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


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


# channel id -> (topic attribute of Settings, messages, the engine's action, key, text)
_CHANNELS: Final[dict[str, tuple[str, tuple[str, ...], str, str, str]]] = {
    "events": (
        "topic_events",
        ("input-event", "control-record"),
        "receive",
        "the UTF-8 bytes of user_id, partitioned by murmur2 as the Java client does; "
        "control records have no key and an explicit partition",
        "User events from producers, and the signed control records the workers "
        "write into the same partitions",
    ),
    "signals": (
        "topic_signals",
        ("signal",),
        "send",
        "the UTF-8 bytes of user_id",
        "Inactivity tiers, reactivations, churn intents and the early warnings (declining,"
        " not_activated), each once per episode",
    ),
    "lifecycle": (
        "topic_lifecycle",
        ("lifecycle-transition",),
        "send",
        "the UTF-8 bytes of user_id",
        "Every change of a user's lifecycle stage",
    ),
    "user-status": (
        "topic_status",
        ("user-status",),
        "send",
        "the UTF-8 bytes of user_id; a null value (tombstone) when the user is erased",
        "Each user's latest status (compacted): check it before acting on a signal",
    ),
    "dlq": (
        "topic_dlq",
        ("dlq-record",),
        "send",
        "the rejected record's own key, as it was",
        "Rejected input records with a reason code",
    ),
    "cohorts": (
        "topic_cohorts",
        ("cohort-count",),
        "send",
        "JSON [tenant, segment, group, cohort_start, period_start, partition]",
        "Cohort retention cells, one per cell and input partition (compacted): "
        "sum a cell over partitions",
    ),
    "config": (
        "topic_config",
        ("threshold-config",),
        "receive",
        "tenant[/segment]@effective_from (RFC 3339 or epoch ms)",
        "Threshold versions per tenant and segment (compacted), written by operators",
    ),
}

_SECURITY: Final = {
    "plain": {"type": "plain", "description": "SASL PLAIN (ENGAGEMENT_KAFKA_SASL_*)"},
    "scramSha256": {"type": "scramSha256", "description": "SASL SCRAM-SHA-256"},
    "scramSha512": {"type": "scramSha512", "description": "SASL SCRAM-SHA-512"},
    "mutualTls": {
        "type": "X509",
        "description": "TLS client certificate (ENGAGEMENT_KAFKA_SSL_CERTFILE, _KEYFILE)",
    },
}


def _message(name: str, key: str) -> dict[str, Any]:
    if name == "control-record":
        summary = "A signed $tick, $config or $erase record a worker or tool writes"
    else:
        summary = (SCHEMA_TYPES[name].__doc__ or "").strip().split("\n")[0].replace("``", "")
    return {
        "name": name,
        "title": _root(name),
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{_root(name)}"},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": key},
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }


def _root(name: str) -> str:
    return "ControlRecord" if name == "control-record" else str(SCHEMA_TYPES[name].__name__)


def _components_schemas() -> dict[str, Any]:
    """Every record's definitions, their references pointed into ``components``."""
    schemas: dict[str, Any] = {}
    for name in SCHEMA_TYPES:
        schema = record_schema(name)
        schemas.update(schema["$defs"])
        if name == "control-record":
            schemas["ControlRecord"] = {
                "oneOf": schema["anyOf"],
                "discriminator": "type",
                "description": "a $tick, $config or $erase record (header engagement-control)",
            }
    text = json.dumps(schemas).replace('"#/$defs/', '"#/components/schemas/')
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3 document of the engine: what it receives and sends, on which topics."""
    settings = Settings.model_construct()  # the defaults, whatever the environment says
    specs = {spec.name: spec for spec in topic_specs(settings)}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for channel, (attribute, messages, action, key, text) in _CHANNELS.items():
        topic = str(getattr(settings, attribute))
        spec = specs[topic]
        configuration: dict[str, Any] = {"cleanup.policy": [spec.configs["cleanup.policy"]]}
        if "retention.ms" in spec.configs:
            configuration["retention.ms"] = int(spec.configs["retention.ms"])
        channels[channel] = {
            "address": topic,
            "description": f"{text}. Topic name: setting ENGAGEMENT_{attribute.upper()}.",
            "messages": {name: _message(name, key) for name in messages},
            "bindings": {
                "kafka": {
                    "topic": topic,
                    "partitions": spec.partitions,
                    "topicConfiguration": configuration,
                    "bindingVersion": KAFKA_BINDING,
                }
            },
        }
        verb = "consumes" if action == "receive" else "produces"
        operation: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": f"The engine {verb} {channel} records.",
            "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in messages],
        }
        if action == "receive":
            operation["bindings"] = {
                "kafka": {
                    "groupId": {"type": "string", "enum": [settings.app_id]},
                    "bindingVersion": KAFKA_BINDING,
                }
            }
        operations[f"{action}-{channel}"] = operation
    operations["send-control-records"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/events"},
        "summary": "Each worker writes ticks (and forwards config versions) into the input "
        "partitions it owns; `engagement erase` writes erasure requests.",
        "messages": [{"$ref": "#/channels/events/messages/control-record"}],
    }
    return {
        "asyncapi": "3.1.0",
        "id": "urn:engagement-streams",
        "info": {
            "title": "engagement-streams",
            "version": str(SCHEMA_VERSION),
            "description": "Churn signals from a Kafka stream of product events. Topic names, "
            "partition count and the consumer group are the defaults of the ENGAGEMENT_* "
            "settings; docs/CONTRACTS.md gives the meaning of every field with examples.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "plaintext": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": "A Kafka cluster without TLS (ENGAGEMENT_BROKER)",
                "variables": {"bootstrap": {"default": "127.0.0.1:9092"}},
            },
            "secure": {
                "host": "{bootstrap}",
                "protocol": "kafka-secure",
                "description": "TLS, with SASL or a client certificate "
                "(ENGAGEMENT_KAFKA_SECURITY_PROTOCOL SSL or SASL_SSL)",
                "variables": {"bootstrap": {"default": "kafka.example.com:9093"}},
                "security": [
                    {"$ref": f"#/components/securitySchemes/{name}"} for name in _SECURITY
                ],
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": _components_schemas(), "securitySchemes": _SECURITY},
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
