"""What the worker publishes for one input record: signals, lifecycle
transitions, DLQ records, events forwarded to their home partition and
cohort cells, each through ``send_output`` (Faust's topics on the stream
path, the fenced producer on the batch path, ``agents.worker.fence``)."""

from __future__ import annotations

import time
from base64 import b64encode
from collections.abc import Awaitable
from typing import Any, Protocol

from agents.worker.cohorts import LiveCohorts, record_key
from agents.worker.metrics import Metrics
from agents.worker.stickiness import StageCounts
from streams.app import EngineApp
from streams.records import DlqRecord, LifecycleTransition, Signal, encode
from streams.settings import Settings
from streams.validate import Rejected
from tables.processor import RecordResult

FORWARDED_HEADER = "engagement-forwarded-from"  # "partition:offset" of a repartitioned event


class SendOutput(Protocol):
    """Sends one output record to a Faust topic; returns the delivery future
    (``partition`` None: the producer's partitioner)."""

    def __call__(
        self,
        topic: Any,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]: ...


async def send_through_topic(
    topic: Any,
    key: bytes | None,
    value: bytes,
    partition: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> Any:
    """Faust's ``Topic.send`` (the stream path)."""
    return await topic.send(key=key, value=value, partition=partition, headers=headers)


class RecordOutputs:
    """The runtime's publishing of a record's outputs (``Runtime`` holds the state)."""

    engine_app: EngineApp
    settings: Settings
    metrics: Metrics
    stages: StageCounts
    cohorts: LiveCohorts
    # the futures of sent records while a batch collects them (batch ingest)
    outputs: list[Any] | None
    send_output: SendOutput
    signals_sent: int
    transitions_sent: int

    async def _publish_cohorts(self, partition: int) -> None:
        """The partition's cohort cells changed since its last tick, to the cohorts topic."""
        for record in self.cohorts.take_records(partition):
            self._keep(
                await self.send_output(self.engine_app.cohorts, record_key(record), encode(record))
            )

    def _keep(self, sent: Any) -> None:
        """Keep a sent record's future while a batch collects them (batch ingest)."""
        if self.outputs is not None:
            self.outputs.append(sent)

    async def _emit(self, result: RecordResult, partition: int) -> None:
        """Publish a record's signals, then its lifecycle transitions (their own topic)."""
        for emission in result.emissions:
            signal = Signal.from_emission(emission)
            self._keep(
                await self.send_output(
                    self.engine_app.signals, emission.user_id.encode(), encode(signal)
                )
            )
            self.metrics.count(self.metrics.signals, emission.kind)
            self.signals_sent += 1
        for transition in result.transitions:
            record = LifecycleTransition.from_transition(transition)
            self._keep(
                await self.send_output(
                    self.engine_app.lifecycle, transition.user_id.encode(), encode(record)
                )
            )
            self.stages.move(partition, transition.from_stage, transition.to_stage)
            self.metrics.count(self.metrics.transitions, transition.to_stage)
            self.transitions_sent += 1

    async def _forward(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None,
        home: int,
        partition: int,
        offset: int,
    ) -> None:
        """Send a misrouted event on to its home partition, as it came plus where
        from; delivered before its offset is committed, like every output."""
        assert value is not None  # decoded as a valid event
        forwarded = [*(headers or ()), (FORWARDED_HEADER, f"{partition}:{offset}".encode())]
        self._keep(await self.send_output(self.engine_app.events, key, value, home, forwarded))
        self.metrics.repartitioned.inc()

    async def _dead_letter(
        self,
        rejected: Rejected,
        key: bytes | None,
        value: bytes | None,
        partition: int,
        offset: int,
        append_ms: int,
    ) -> None:
        record = DlqRecord(
            reason=rejected.reason,
            detail=rejected.detail,
            topic=self.settings.topic_events,
            partition=partition,
            offset=offset,
            record_ts=append_ms,
            key_b64=None if key is None else b64encode(key).decode(),
            value_b64=None if value is None else b64encode(value).decode(),
            seen_at=int(time.time() * 1000),
        )
        self._keep(await self.send_output(self.engine_app.dlq, key, encode(record)))
        self.metrics.dlq.labels(reason=rejected.reason).inc()
