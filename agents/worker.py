"""Wire the Faust app: the ingest agent, the clock ticker, recovery, web views."""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from agents.metrics import Metrics
from agents.runtime import Runtime
from agents.status import StatusWriter, clock_reader, flush_before_commit
from streams.app import EngineApp, create_app
from streams.settings import Settings

log = logging.getLogger(__name__)
# aiohttp takes the charset separately; the exposition format is UTF-8 text.
METRICS_CONTENT_TYPE = ";".join(
    part for part in CONTENT_TYPE_LATEST.split(";") if "charset" not in part
).strip()


class Worker(msgspec.Struct):
    engine_app: EngineApp
    runtime: Runtime
    metrics: Metrics
    ingest: Any
    status: StatusWriter | None = None

    @property
    def app(self) -> Any:
        return self.engine_app.app


def owned_partitions(engine_app: EngineApp) -> set[int]:
    """Input partitions this worker actively owns right now."""
    topic = engine_app.settings.topic_events
    return {tp.partition for tp in engine_app.app.assignor.assigned_actives() if tp.topic == topic}


def build_worker(
    settings: Settings, registry: CollectorRegistry | None = None, **app_overrides: Any
) -> Worker:
    engine_app = create_app(settings, **app_overrides)
    app = engine_app.app
    metrics = Metrics(registry or CollectorRegistry(), settings.event_types)
    runtime = Runtime(engine_app, metrics)
    ready = {"recovered": False}

    async def ingest(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            await runtime.handle(
                message.key,
                message.value,
                message.headers,
                message.partition,
                message.offset,
                round(message.timestamp * 1000),
            )

    agent = app.agent(engine_app.events, name="ingest", concurrency=1)(ingest)

    async def on_recovered() -> None:
        partitions = owned_partitions(engine_app)
        counts = runtime.rebuild(partitions)
        ready["recovered"] = True
        log.info("recovered %d partitions, %d users indexed", len(counts), sum(counts.values()))

    engine_app.users.on_recover(on_recovered)

    async def tick() -> None:
        if runtime.signer is None:
            return
        wall_ms = int(time.time() * 1000)
        for partition in sorted(owned_partitions(engine_app)):
            value, headers = runtime.tick_record(partition, wall_ms)
            await engine_app.events.send(value=value, partition=partition, headers=headers)

    app.timer(interval=settings.tick_interval_ms / 1000, name="clock_tick")(tick)
    status = _wire_status(engine_app, runtime, metrics)

    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(metrics.registry), content_type=METRICS_CONTENT_TYPE)

    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    async def readyz(web: Any, request: Any) -> Any:
        if ready["recovered"]:
            return web.json({"ready": True})
        return web.json({"ready": False}, status=503)

    app.page("/metrics")(metrics_view)
    app.page("/healthz")(healthz)
    app.page("/readyz")(readyz)
    return Worker(
        engine_app=engine_app, runtime=runtime, metrics=metrics, ingest=agent, status=status
    )


def _wire_status(engine_app: EngineApp, runtime: Runtime, metrics: Metrics) -> StatusWriter:
    """The user-status writer: observer of the store, flushed by a timer, before
    every offset commit and when partitions are revoked (see ``agents.status``)."""
    app, settings = engine_app.app, engine_app.settings

    def send(key: bytes, value: bytes | None, partition: int) -> Any:
        return engine_app.status.send_soon(key=key, value=value, partition=partition)

    status = StatusWriter(
        send,
        runtime.config,
        clock_reader(runtime),
        runtime.store.get,
        metrics,
        partitions=settings.partitions,
    )
    runtime.store.observers.append(status.observe)
    app.timer(interval=settings.status_flush_ms / 1000, name="status_flush")(status.tick)

    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        # Before any record of the new assignment is processed, so before any commit.
        flush_before_commit(app.consumer, status.flush)

    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        await status.flush({tp.partition for tp in revoked if tp.topic == settings.topic_events})

    app.on_partitions_assigned.connect(on_assigned)
    app.on_partitions_revoked.connect(on_revoked)
    return status
