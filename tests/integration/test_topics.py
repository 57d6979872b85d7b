"""Topics are created up front with explicit configs; a partition mismatch is refused."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka import client_options
from streams.settings import load_settings
from streams.topics import ensure_topics, topic_config, topic_specs
from tables.errors import TopicMismatchError


async def test_topics_are_created_with_their_configs(any_broker: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    settings = load_settings(
        broker=any_broker.url,
        partitions=3,
        topic_events=f"{tag}.events",
        topic_signals=f"{tag}.signals",
        topic_lifecycle=f"{tag}.lifecycle",
        topic_status=f"{tag}.status",
        topic_dlq=f"{tag}.dlq",
        topic_config=f"{tag}.config",
        topic_cohorts=f"{tag}.cohorts",
    )
    await ensure_topics(settings)
    await ensure_topics(settings)  # idempotent
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described = {
            t["topic"]: t
            for t in await admin.describe_topics([s.name for s in topic_specs(settings)])
        }
        for spec in topic_specs(settings):
            assert len(described[spec.name]["partitions"]) == spec.partitions
            for name, value in spec.configs.items():
                assert await topic_config(admin, spec.name, name) == value
        assert (
            await topic_config(admin, settings.topic_events, "message.timestamp.type")
            == "LogAppendTime"
        )
        assert await topic_config(admin, settings.topic_status, "cleanup.policy") == "compact"
    finally:
        await admin.close()


async def test_worker_refuses_an_input_topic_with_another_partition_count(any_broker: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    names = {
        "topic_events": f"{tag}.events",
        "topic_signals": f"{tag}.signals",
        "topic_dlq": f"{tag}.dlq",
    }
    await ensure_topics(load_settings(broker=any_broker.url, partitions=2, **names))
    with pytest.raises(TopicMismatchError, match="has 2 partitions"):
        await ensure_topics(load_settings(broker=any_broker.url, partitions=4, **names))
