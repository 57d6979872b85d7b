"""Topic specifications and their creation up front, with explicit configs.

Topics created on first use get a broker default partition count (the
embedded broker gives 4 whatever was declared), so every topic is created
here before the worker starts, and the input topic's partition count is
checked against ``ENGAGEMENT_PARTITIONS``.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from streams.kafka import client_options
from streams.settings import Settings
from tables.errors import TopicMismatchError

log = logging.getLogger(__name__)
SEVEN_DAYS_MS = str(7 * 86_400_000)
TOPIC_ALREADY_EXISTS = 36


class TopicSpec(msgspec.Struct, frozen=True):
    name: str
    partitions: int
    configs: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    n = settings.partitions
    delete_7d = {"cleanup.policy": "delete", "retention.ms": SEVEN_DAYS_MS}
    return [
        TopicSpec(
            settings.topic_events,
            n,
            {"cleanup.policy": "delete", "message.timestamp.type": "LogAppendTime"},
        ),
        TopicSpec(settings.topic_signals, n, dict(delete_7d)),
        TopicSpec(settings.topic_lifecycle, n, dict(delete_7d)),
        TopicSpec(settings.topic_status, n, {"cleanup.policy": "compact"}),
        TopicSpec(settings.topic_cohorts, n, {"cleanup.policy": "compact"}),
        TopicSpec(settings.topic_dlq, n, dict(delete_7d)),
        TopicSpec(settings.topic_config, 1, {"cleanup.policy": "compact"}),
    ]


async def ensure_topics(settings: Settings, specs: list[TopicSpec] | None = None) -> None:
    """Create missing topics; refuse an input topic whose partition count differs."""
    specs = specs if specs is not None else topic_specs(settings)
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name=spec.name,
                        num_partitions=spec.partitions,
                        replication_factor=settings.replication_factor,
                        topic_configs=spec.configs,
                    )
                    for spec in missing
                ]
            )
            for name, code, *rest in getattr(response, "topic_errors", []):
                # 36 = TOPIC_ALREADY_EXISTS: another worker won the race
                if code not in (0, TOPIC_ALREADY_EXISTS):
                    message = rest[0] if rest else ""
                    raise TopicMismatchError(
                        f"could not create topic {name}: error {code} {message}".strip()
                    )
            log.info("created topics: %s", ", ".join(spec.name for spec in missing))
        await _check_log_append_time(admin, settings.topic_events)
        described: list[Any] = await admin.describe_topics([settings.topic_events])
        for topic in described:
            count = len(topic.get("partitions", []))
            if count and count != settings.partitions:
                raise TopicMismatchError(
                    f"topic {settings.topic_events} has {count} partitions but "
                    f"ENGAGEMENT_PARTITIONS={settings.partitions}; state lives per partition, "
                    "so the count is fixed for a deployment"
                )
    finally:
        await admin.close()


async def _check_log_append_time(admin: AIOKafkaAdminClient, topic: str) -> bool:
    """Whether the input topic stamps records with the broker's append time.

    Without it ``R`` is the producer's timestamp, so a producer with a fast
    clock can move a partition's clock ahead by up to ``MAX_FUTURE``.
    """
    try:
        value = await topic_config(admin, topic, "message.timestamp.type")
    except KafkaError as exc:
        log.warning("could not read the configs of topic %s: %s", topic, exc)
        return False
    if value != "LogAppendTime":
        log.warning(
            "topic %s has message.timestamp.type=%s, not LogAppendTime: the clock then trusts "
            "producer timestamps (see README, 'Time')",
            topic,
            value,
        )
        return False
    return True


async def topic_config(admin: AIOKafkaAdminClient, topic: str, name: str) -> str | None:
    """One config value of a topic as the broker reports it (``None`` if absent)."""
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    for response in responses:
        for resource in response.resources:
            for entry in resource[4]:
                if entry[0] == name:
                    return str(entry[1]) if entry[1] is not None else None
    return None
