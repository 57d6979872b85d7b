"""Scenario helpers beyond the steady feed: a backlog sent before the workers
start, a feed that gives every user an event in turn, sizes from the
environment, status delivery held up by the broker, and eviction lines in a
worker's log (tests/faults/test_backlog.py and neighbours)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.topics import topic_specs
from support.faults import EventFeed, FaultRun, FeedPlan

SEND_CHUNK = 5_000  # records awaited together while sending a backlog
# What aiokafka logs when the coordinator no longer knows the member (evicted)
EVICTION_MARKS = ("UnknownMemberIdError", "Heartbeat session expired")


def size(variable: str, default: int) -> int:
    """A scenario size from the environment (``FAULTS_*``), so it can run smaller."""
    return int(os.environ.get(variable, default))


class EachUserFeed(EventFeed):
    """The steady feed's content, but users in turn: ``plan.users`` events
    give each user exactly one (a table of that many users)."""

    def _user(self) -> str:
        return self.users[(self.sent - 1) % len(self.users)]


def use_feed(run: FaultRun, plan: FeedPlan, each_user: bool) -> None:
    """Replace the run's feed (before anything is sent)."""
    run.plan = plan
    kind = EachUserFeed if each_user else EventFeed
    run.feed = kind(plan, run.settings.app_id, run.settings.partitions)


async def send_backlog(run: FaultRun, count: int | None = None) -> None:
    """Send ``count`` (default all) of the feed's records as fast as the broker
    takes them (``ts`` = now), recorded as the steady feed records its own."""
    feed, stats = run.feed, run.stats
    target = feed.plan.events if count is None else min(feed.plan.events, feed.sent + count)
    producer = AIOKafkaProducer(
        bootstrap_servers=run.bootstrap,
        acks="all",
        linger_ms=50,
        max_batch_size=512 * 1024,
        request_timeout_ms=60_000,
    )
    await producer.start()
    started = time.monotonic()
    try:
        while feed.sent < target:
            records = feed.next_records(
                min(SEND_CHUNK, target - feed.sent), int(time.time() * 1000)
            )
            futures = [
                await producer.send(
                    run.settings.topic_events, value=value, key=key, partition=part, headers=h
                )
                for key, value, part, h, _tag in records
            ]
            landed = await asyncio.gather(*futures)
            for (*_, tag), metadata in zip(records, landed, strict=True):
                stats.records += 1
                bisect.insort(stats.offsets.setdefault(metadata.partition, []), metadata.offset)
                feed.ledger.landed(tag, metadata.partition, metadata.offset)
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
    run.mark(f"backlog of {stats.records} records sent in {time.monotonic() - started:.1f}s")


async def start_on_backlog(run: FaultRun, count: int | None = None) -> None:
    """Topics, then the backlog, then worker ``w0`` (ready once recovered)."""
    await run.deployment.create_topics()
    await send_backlog(run, count)
    run.stats.done = run.feed.sent >= run.plan.events
    await run.start_worker("w0")
    run.mark("w0 ready on the backlog")


def start_live_feed(run: FaultRun) -> None:
    """The rest of the feed, at its steady rate, from now on."""
    from support.faults import run_feed

    run.stats.done = False
    run._feed_task = asyncio.create_task(
        run_feed(run.bootstrap, run.settings.topic_events, run.feed, run.stats)
    )
    run.mark("live feed starts")


async def hold_status_delivery(run: FaultRun, held: bool) -> None:
    """Make the broker refuse the status topic's writes with a retriable error
    (``min.insync.replicas`` above its replicas: NOT_ENOUGH_REPLICAS with
    ``acks=all``), so the workers' producer retries them: their delivery is
    delayed, nothing else is. ``held=False`` lets them through again."""
    spec = next(s for s in topic_specs(run.settings) if s.name == run.settings.topic_status)
    configs = dict(spec.configs)
    if held:
        configs["min.insync.replicas"] = str(run.settings.replication_factor + 1)
    admin = AIOKafkaAdminClient(bootstrap_servers=run.bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, run.settings.topic_status, configs=configs)]
        )
    finally:
        await admin.close()
    run.mark("status delivery held by the broker" if held else "status delivery released")


def evictions(run: FaultRun, name: str) -> int:
    """Lines of ``name``'s log saying the group coordinator dropped it."""
    path = run.deployment.run_dir / f"{name}.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return sum(text.count(mark) for mark in EVICTION_MARKS)


async def wait_http_up(run: FaultRun, name: str, timeout_s: float = 300.0) -> None:
    """Until ``name``'s web server answers (it may still be recovering)."""
    from support.faults import _http_status, _wait_for

    process = run.workers[name]
    assert await _wait_for(lambda: _http_status(process, "/healthz") == 200, timeout_s, 0.05)


def recovering(run: FaultRun, name: str) -> str:
    """``"recovering"`` while ``name`` answers but is not ready, else ``"ready"``."""
    from support.faults import _http_status

    return "ready" if _http_status(run.workers[name], "/readyz") == 200 else "recovering"


async def metric_reaches(
    run: FaultRun, name: str, at_least: float, worker: str = "w0", **labels: Any
) -> float:
    """Wait until ``name`` (of ``worker``) reaches ``at_least``; returns the value seen."""
    seen = 0.0

    def holds(value: float) -> bool:
        nonlocal seen
        seen = value
        return value >= at_least

    await run.wait_metric(name, holds, worker, **labels)
    return seen
