"""Erasure end to end on real Kafka and Redis: `engagement erase USER_ID` leaves no
trace of the user (state, due entry, Redis keys, status tombstone, only a salted
hash kept) and the user's late events are dropped, also after a crash."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from typing import Any

import redis.asyncio as aioredis
from support.faults import last_per_key, read_all
from support.metrics import sample
from support.workers import Deployment, event, latest_states, produce, wait_for

from agents.stack.worker_process import WorkerProcess
from tables.erasure import erased_hash


def now_ms() -> int:
    return int(time.time() * 1000)


async def metric(worker: WorkerProcess, name: str, **labels: str) -> float:
    with contextlib.suppress(OSError):
        return sample(await asyncio.to_thread(worker.metrics_text), name, **labels)
    return -1.0


async def redis_dump(url: str, prefix: str) -> dict[str, Any]:
    """Every key of this deployment with its content, as text."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        out: dict[str, Any] = {}
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            kind = await client.type(key)
            if kind == "hash":
                out[key] = await client.hgetall(key)
            elif kind == "zset":
                out[key] = await client.zrange(key, 0, -1, withscores=True)
            else:
                out[key] = kind
        return out
    finally:
        await client.aclose()


def erase_cli(deployment: Deployment, user_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents.cli.main", "erase", user_id],
        env={**os.environ, **deployment.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_erased_user_leaves_no_trace_and_late_events_are_suppressed(
    kafka_broker: Any, redis_server: Any, tmp_path: Any
) -> None:
    deployment = Deployment(
        kafka_broker.url,
        tmp_path,
        ENGAGEMENT_REDIS_URL=redis_server.url,
        # no signals in this test: the user's trace is state, status and mirror
        ENGAGEMENT_AT_RISK="1h",
        ENGAGEMENT_DORMANT="2h",
        ENGAGEMENT_CHURNED="3h",
        ENGAGEMENT_ERASURE_SUPPRESS="1h",
    )
    settings = deployment.settings
    await deployment.create_topics()
    worker = await deployment.start_worker()
    app_id = settings.app_id
    victim = f"{app_id}-jane.doe@example.com"
    other = f"{app_id}-someone-else"
    try:
        t0 = now_ms()
        await produce(
            deployment.bootstrap,
            settings.topic_events,
            [event(user, f"{user}-{n}", t0 + n) for n in range(5) for user in (victim, other)],
        )

        async def mirrored() -> bool:
            dump = await redis_dump(redis_server.url, f"{app_id}:")
            return f"{app_id}:user:{victim}" in dump and f"{app_id}:user:{other}" in dump

        assert await wait_for(mirrored, 60), deployment.log_tail()

        done = erase_cli(deployment, victim)
        assert done.returncode == 0, done.stderr
        assert victim not in done.stdout + done.stderr

        async def erased() -> bool:
            return await metric(worker, "engagement_erasures_total", outcome="applied") == 1

        assert await wait_for(erased, 60), deployment.log_tail()

        # late events of the erased user: dropped and counted, not sent to the DLQ
        await produce(
            deployment.bootstrap,
            settings.topic_events,
            [event(victim, f"{victim}-late-{n}", t0 + 100 + n) for n in range(3)],
        )
        await produce(
            deployment.bootstrap, settings.topic_events, [event(other, f"{other}-more", t0 + 200)]
        )

        async def suppressed() -> bool:
            return await metric(worker, "engagement_events_total", outcome="suppressed") == 3

        assert await wait_for(suppressed, 60), deployment.log_tail()
        assert await metric(worker, "engagement_dlq_total") == 0

        # the mirror forgot the user; the other user is still served
        async def unmirrored() -> bool:
            dump = await redis_dump(redis_server.url, f"{app_id}:")
            return f"{app_id}:user:{victim}" not in dump

        assert await wait_for(unmirrored, 60), deployment.log_tail()
        dump = await redis_dump(redis_server.url, f"{app_id}:")
        assert victim not in repr(dump)
        assert f"{app_id}:user:{other}" in dump

        # state: a tombstone in the users changelog; status: a tombstone last
        states = await latest_states(deployment)
        assert victim not in states and states[other].events_total == 6

        async def status_tombstoned() -> bool:
            latest = last_per_key(await read_all(deployment.bootstrap, settings.topic_status))
            return victim.encode() in latest and latest[victim.encode()] is None

        assert await wait_for(status_tombstoned, 30, interval_s=1.0), deployment.log_tail()

        # only the salted hash is kept, keyed by partition
        erased_log = await read_all(deployment.bootstrap, f"{app_id}-erased-changelog")
        assert erased_log, "the suppression entry is persisted"
        salt = settings.erasure_salt
        assert salt is not None
        digest = erased_hash(salt.get_secret_value().encode(), victim)
        for record in erased_log:
            assert victim.encode() not in (record.key or b"") + (record.value or b"")
            assert (record.key or b"").decode().endswith(f":{digest}")

        # no trace in the worker's metrics and logs
        text = await asyncio.to_thread(worker.metrics_text)
        assert victim not in text and "jane.doe" not in text
        assert "jane.doe" not in worker.log_path.read_text(errors="replace")

        # the suppression survives a crash: restored from the changelog
        worker.kill9()
        worker = await deployment.start_worker("w1")
        await produce(
            deployment.bootstrap,
            settings.topic_events,
            [event(victim, f"{victim}-after-crash", now_ms())],
        )

        async def still_suppressed() -> bool:
            return await metric(worker, "engagement_events_total", outcome="suppressed") >= 1

        assert await wait_for(still_suppressed, 90), deployment.log_tail()
        assert victim not in await latest_states(deployment)
        dump = await redis_dump(redis_server.url, f"{app_id}:")
        assert victim not in repr(dump)
    finally:
        worker.stop()
