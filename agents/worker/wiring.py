"""Wire the Faust app: the ingest agent, the clock ticker, recovery, web views."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from agents.worker.batch_ingest import BatchIngest
from agents.worker.checkpoint import before_commit, check_faust, replace_drain_loop
from agents.worker.config_forwarder import ConfigForwarder
from agents.worker.lag import sample_clock_lag, sample_consumer_lag
from agents.worker.metrics import Metrics
from agents.worker.mirror_source import TableSource
from agents.worker.redis_client import redis_client
from agents.worker.redis_keys import MirrorKeys
from agents.worker.redis_mirror import RedisMirror
from agents.worker.runtime import Runtime
from agents.worker.status import StatusWriter, clock_reader
from agents.worker.web import register_web
from streams.app import EngineApp, create_app
from streams.settings import Settings
from tables.errors import ConfigurationError, StateFormatError
from tables.state import UserState

log = logging.getLogger(__name__)


class Worker(msgspec.Struct):
    engine_app: EngineApp
    runtime: Runtime
    metrics: Metrics
    ingest: Any
    status: StatusWriter | None = None
    mirror: RedisMirror | None = None
    batch: BatchIngest | None = None

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
    check_faust()
    if settings.ingest_path == "stream" and not settings.store.startswith("memory://"):
        raise ConfigurationError(
            "ENGAGEMENT_INGEST=stream runs on ENGAGEMENT_STORE=memory:// only (the fault "
            "suite proves the batch path on rocksdb://): use ENGAGEMENT_INGEST=batch or auto"
        )
    engine_app = create_app(settings, **app_overrides)
    app = engine_app.app
    metrics = Metrics(registry or CollectorRegistry(), settings.event_types)
    runtime = Runtime(engine_app, metrics)
    ready = {"recovered": False}

    async def ingest(stream: Any) -> None:
        async for event in stream.events():
            await runtime.handle_message(event.message)

    agent = app.agent(engine_app.events, name="ingest", concurrency=1)(ingest)
    batch = _wire_batch_ingest(engine_app, runtime) if settings.ingest_path == "batch" else None

    async def on_recovered() -> None:
        # Every recovery callback reads its partitions' whole table again: a
        # rebalance during a recovery ends with another callback, and only the
        # last one sees the table complete (the first may have run on a part).
        partitions = owned_partitions(engine_app)
        announced = 0

        def announce(_partition: int, user_id: str, state: UserState) -> None:
            # The status topic may lack what a crashed or revoked owner decided in
            # its last uncommitted window (a tick moving many users, say), and a
            # partition kept across a rebalance may have been announced from a
            # part of its table: every user of the recovered partitions is
            # announced again (``StatusWriter.reannounce``).
            nonlocal announced
            announced += status.announce(user_id, state)

        try:
            counts = await runtime.rebuild(partitions, announce)
        except StateFormatError as exc:
            # Faust swallows a recovery callback's error and would go on feeding
            # events against state this release cannot read: stop instead.
            log.critical("cannot read the users table: %s", exc)
            await app.crash(exc)
            return
        if mirror is not None:
            mirror.request_resync(partitions)
        ready["recovered"] = True
        log.info(
            "recovered %d partitions, %d users indexed, %d statuses announced again",
            len(counts),
            sum(counts.values()),
            announced,
        )

    engine_app.users.on_recover(on_recovered)

    async def tick() -> None:
        if runtime.signer is None:
            return
        wall_ms = int(time.time() * 1000)
        for partition in sorted(owned_partitions(engine_app)):
            value, headers = runtime.tick_record(partition, wall_ms)
            await engine_app.events.send(value=value, partition=partition, headers=headers)

    app.timer(interval=settings.tick_interval_ms / 1000, name="clock_tick")(tick)
    _wire_config_forwarder(engine_app, runtime)
    status = _wire_status(engine_app, runtime, metrics, batch)
    mirror = _wire_mirror(engine_app, runtime, metrics)

    async def lag() -> None:
        owned = owned_partitions(engine_app)
        sample_consumer_lag(app, settings.topic_events, owned, metrics)
        clocks_ms = {p: e.clock_ms for p, e in runtime.engines.items() if p in owned}
        sample_clock_lag(clocks_ms, int(time.time() * 1000), metrics)

    app.timer(interval=settings.tick_interval_ms / 1000, name="consumer_lag")(lag)

    async def drop_lost_partitions(sender: Any, assigned: Any, **kwargs: Any) -> None:
        # aiokafka rebalances eagerly: every partition is revoked, then the new set
        # assigned. Comparing with the new set drops only the partitions lost, so a
        # kept partition's series has no gap (a gap restarts an alert's `for:`).
        kept = {tp.partition for tp in assigned if tp.topic == settings.topic_events}
        metrics.drop_partitions(set(range(settings.partitions)) - kept)

    app.on_partitions_assigned.connect(drop_lost_partitions)
    register_web(runtime, metrics, mirror, lambda: ready["recovered"], clock_reader(runtime))
    return Worker(
        engine_app=engine_app,
        runtime=runtime,
        metrics=metrics,
        ingest=agent,
        status=status,
        mirror=mirror,
        batch=batch,
    )


def _wire_config_forwarder(engine_app: EngineApp, runtime: Runtime) -> ConfigForwarder | None:
    """The owner of input partition 0 forwards the config topic (``config_forwarder``)."""
    if runtime.signer is None:
        return None

    async def send(value: bytes, partition: int, headers: list[tuple[str, bytes]]) -> Any:
        return await engine_app.events.send(value=value, partition=partition, headers=headers)

    forwarder = ConfigForwarder(
        engine_app.settings, runtime.signer, send, lambda: 0 in owned_partitions(engine_app)
    )
    engine_app.app.task(forwarder.run)
    return forwarder


def _wire_mirror(engine_app: EngineApp, runtime: Runtime, metrics: Metrics) -> RedisMirror | None:
    """The Redis serving mirror: observer of the store, written by its own task
    (``agents.worker.redis_mirror``); none when ``ENGAGEMENT_REDIS_URL`` is empty."""
    settings = engine_app.settings
    if not settings.redis_url:
        return None
    mirror = observing_mirror(
        engine_app,
        runtime,
        metrics,
        lambda: redis_client(settings.redis_url.get_secret_value(), read_timeout_s=None),
        owned=lambda: owned_partitions(engine_app),
        max_backlog=settings.redis_backlog_max,
    )
    engine_app.app.task(mirror.run)
    return mirror


def observing_mirror(
    engine_app: EngineApp,
    runtime: Runtime,
    metrics: Metrics,
    client_factory: Callable[[], Redis],
    *,
    owned: Callable[[], set[int]] | None,
    max_backlog: int,
) -> RedisMirror:
    """A mirror over the users table that observes the runtime's store (not yet running)."""
    source = TableSource(
        runtime.store,
        engine_app.users,
        engine_app.settings.partitions,
        runtime.config,
        clock_reader(runtime),
        owned=owned,
    )
    mirror = RedisMirror(
        source,
        MirrorKeys(engine_app.settings.app_id),
        metrics,
        client_factory,
        max_backlog=max_backlog,
        window_s=engine_app.settings.redis_window_ms / 1000,
    )
    runtime.store.observers.append(mirror.observe)
    return mirror


def _wire_batch_ingest(engine_app: EngineApp, runtime: Runtime) -> BatchIngest:
    """Whole fetches of the input topic beneath the agent (``agents.worker.batch_ingest``).

    The agent stays: it subscribes the topic with acknowledgements, and
    records of other topics still take Faust's path."""
    settings, app = engine_app.settings, engine_app.app
    batch = BatchIngest(app, runtime, settings.topic_status)
    runtime.write_tables_through(batch.tables)
    replace_drain_loop(app, settings.topic_events, batch.on_batch)
    return batch


def _wire_status(
    engine_app: EngineApp, runtime: Runtime, metrics: Metrics, batch: BatchIngest | None = None
) -> StatusWriter:
    """The user-status writer: observer of the store, flushed by a timer, before
    every offset commit and when partitions are revoked (see ``agents.worker.status``)."""
    app, settings = engine_app.app, engine_app.settings

    def enqueue(key: bytes, value: bytes | None, partition: int) -> Any:
        return engine_app.status.send_soon(key=key, value=value, partition=partition)

    if batch is not None:  # delivered with the batch's outputs, before its changelog
        enqueue = batch.outbox.enqueue

    async def send(key: bytes, value: bytes | None, partition: int) -> Any:
        return await engine_app.status.send(key=key, value=value, partition=partition, force=True)

    async def send_direct(key: bytes, value: bytes | None, partition: int) -> Any:
        # batch ingest: straight to the producer, fenced as the batch's outputs are
        assert batch is not None
        return await batch.fence.send(partition, None, settings.topic_status, key, value, partition)

    status = StatusWriter(
        enqueue,
        send if batch is None else send_direct,
        runtime.config,
        clock_reader(runtime),
        runtime.store.get,
        metrics,
        partitions=settings.partitions,
        owned=lambda: owned_partitions(engine_app),
    )
    runtime.store.observers.append(status.observe)
    app.timer(interval=settings.status_flush_ms / 1000, name="status_flush")(status.tick)

    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        # Before any record of the new assignment is processed, so before any commit.
        before_commit(app.consumer, status.flush)
        if batch is not None:
            partitions = {tp.partition for tp in assigned if tp.topic == settings.topic_events}
            batch.assign(partitions, app.consumer_generation_id)

    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        partitions = {tp.partition for tp in revoked if tp.topic == settings.topic_events}
        status.forget_announced(partitions)  # the next owner announces them
        budget_s = settings.session_timeout_ms / 2000  # bounded: the whole group waits for this
        if batch is not None and not await batch.idle(budget_s):
            log.warning("a batch in flight did not end within %.1f s of a revoke", budget_s)
        if not await status.flush(partitions, timeout_s=budget_s):
            status.discard(partitions)  # never write for a partition given away
        if batch is not None:  # nothing more is sent for them; a batch in flight is abandoned
            await batch.revoke(partitions, budget_s)

    app.on_partitions_assigned.connect(on_assigned)
    app.on_partitions_revoked.connect(on_revoked)
    return status
