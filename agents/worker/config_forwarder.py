"""Forward the threshold config topic into every input partition as signed ``$config``.

Only the worker that owns input partition 0 forwards (docs/CONTRACTS.md). It
reads ``engagement.config`` from the beginning with its own consumer (no
group: it is compacted and small) whenever it gains partition 0, and keeps
following it while it owns it. Each version goes into every input partition
as a signed control record, so thresholds change in log order and a replay
of the input topic decides the same. Re-forwarding after a restart or a
rebalance is harmless: a version whose ``effective_from`` is not greater than
the one already received changes nothing.

Config record: key ``tenant[/segment]@effective_from``; value JSON
``{"at_risk": "3d", "dormant": "7d", "churned": "21d"}`` (durations or int
ms), optionally with ``scope`` and ``effective_from`` (epoch ms or RFC 3339)
that override the key's parts. A tombstone (no value) is ignored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.config_record import BadConfigRecord, parse_config_record
from streams.control import ControlSigner
from streams.kafka import client_options
from streams.settings import Settings

log = logging.getLogger(__name__)
IDLE_POLL_S: Final = 1.0
Send = Callable[[bytes, int, list[tuple[str, bytes]]], Awaitable[Any]]


class ConfigForwarder:
    """Follows the config topic while ``is_owner()`` and forwards each version."""

    def __init__(
        self,
        settings: Settings,
        signer: ControlSigner,
        send: Send,
        is_owner: Callable[[], bool],
    ) -> None:
        self._settings = settings
        self._signer = signer
        self._send = send
        self._is_owner = is_owner
        self.forwarded = 0
        self.rejected = 0

    async def forward(self, key: bytes | None, value: bytes | None) -> int:
        """Sign one config record into every input partition; the number of records sent."""
        try:
            update = parse_config_record(key, value)
        except BadConfigRecord as exc:
            self.rejected += 1
            log.warning("config record skipped: %s", exc)
            return 0
        if update is None:
            return 0
        topic = self._settings.topic_events
        for partition in range(self._settings.partitions):
            signed, headers = self._signer.sign(topic, partition, update)
            await self._send(signed, partition, headers)
        self.forwarded += 1
        return self._settings.partitions

    async def run(self) -> None:
        """Until cancelled: follow the config topic whenever this worker owns partition 0."""
        consumer: AIOKafkaConsumer | None = None
        try:
            while True:
                if not self._is_owner():
                    if consumer is not None:
                        await consumer.stop()
                        consumer = None
                    await asyncio.sleep(IDLE_POLL_S)
                    continue
                if consumer is None:
                    consumer = await self._start()
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        await self.forward(record.key, record.value)
        finally:
            if consumer is not None:
                await consumer.stop()

    async def _start(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            **client_options(self._settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        topic = self._settings.topic_config
        await consumer.topics()  # loads the metadata partitions_for_topic answers from
        partitions = consumer.partitions_for_topic(topic) or {0}
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        log.info("forwarding %s into %s", topic, self._settings.topic_events)
        return consumer
