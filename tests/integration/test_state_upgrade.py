"""A rolling upgrade of the state format on a real broker and real workers.

The users table's changelog starts with the bytes a version-1 worker left
(tests/support/state_v1.py packs them without ``tables.state``); today's
worker recovers them, processes events and writes the current version for the users it
changes. A state in a version newer than the worker reads stops the worker,
and ``redis-sync`` before it touches Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from support.metrics import sample
from support.state_v1 import StateV1, pack_v1
from support.workers import Deployment, event, produce, read_topic, wait_for

from agents.ops.redis_sync import redis_sync
from agents.stack.services import RedisServer
from agents.stack.worker_process import WorkerProcess
from agents.worker.redis_client import redis_client
from agents.worker.redis_keys import MirrorKeys
from streams.decode import partition_for
from streams.topics import TopicSpec, ensure_topics
from tables.errors import NewerStateError, ServiceStartError
from tables.lifecycle import STAGE_ACTIVE
from tables.state import STATE_VERSION, pack_state, unpack_state

PARTITIONS = 4
DAY_MS = 1000  # tests/support/workers.py FAST
V1_EVENTS = 5


def users_changelog(deployment: Deployment) -> str:
    return f"{deployment.settings.app_id}-users-changelog"


async def write_changelog(deployment: Deployment, blobs: dict[str, bytes]) -> None:
    """Records in the users changelog, each in its user's partition, as a worker writes them."""
    compact = {"cleanup.policy": "compact"}
    specs = [
        TopicSpec(f"{deployment.settings.app_id}-{table}-changelog", PARTITIONS, compact)
        for table in ("users", "clocks", "erased")
    ]
    await ensure_topics(deployment.settings, specs)
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap)
    await producer.start()
    try:
        for user, blob in blobs.items():
            key = user.encode()
            await producer.send(
                users_changelog(deployment), blob, key=key, partition=partition_for(key, PARTITIONS)
            )
        await producer.flush()
    finally:
        await producer.stop()


def v1_state(user: str, last_seen_ms: int) -> StateV1:
    """A user a version-1 worker saw on three days, the last one a moment ago."""
    return StateV1(
        first_seen_ms=last_seen_ms - 4 * DAY_MS,
        last_seen_ms=last_seen_ms,
        partition=partition_for(user.encode(), PARTITIONS),
        recent_ids=(11, 12),
        newest_day=last_seen_ms // DAY_MS,
        day_counts=bytes([2, 0, 1, 0, 2]) + bytes(23),
        active_days=3,
        events_total=V1_EVENTS,
        stage=STAGE_ACTIVE,
        tenant="acme",
        segment="pro",
    )


async def latest_blobs(deployment: Deployment) -> dict[str, bytes]:
    records = await read_topic(deployment.bootstrap, users_changelog(deployment), idle_s=1.5)
    return {record.key.decode(): record.value for record in records}


async def users_tracked(worker: WorkerProcess) -> float:
    with contextlib.suppress(OSError):
        text = await asyncio.to_thread(worker.metrics_text)
        return sum(sample(text, "engagement_users_tracked", partition=str(p)) for p in range(4))
    return -1.0


def user_view(worker: WorkerProcess, user: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{worker.web_port}/users/{user}"
    with urllib.request.urlopen(url, timeout=5) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_a_worker_reads_version_1_state_and_writes_the_current_version(
    kafka_broker: Any, tmp_path: Any, store: str
) -> None:
    deployment = Deployment(
        kafka_broker.url,
        tmp_path,
        ENGAGEMENT_STORE=store,
        ENGAGEMENT_AT_RISK="1h",
        ENGAGEMENT_DORMANT="2h",
        ENGAGEMENT_CHURNED="3h",
    )
    await deployment.create_topics()
    base_ms = int(time.time() * 1000)
    users = [f"old{i}" for i in range(12)]
    written = {user: v1_state(user, base_ms - 1500) for user in users}
    await write_changelog(deployment, {user: pack_v1(state) for user, state in written.items()})
    changed, untouched = users[:6], users[6:]
    worker = await deployment.start_worker()
    try:
        assert await wait_for(lambda: _tracked(worker, len(users)), 30), deployment.log_tail()
        await produce(
            deployment.bootstrap,
            deployment.settings.topic_events,
            [event(user, f"{user}-new", base_ms) for user in changed],
        )

        async def changed_written() -> bool:
            blobs = await latest_blobs(deployment)
            return all(blobs[user][0] == STATE_VERSION for user in changed)

        assert await wait_for(changed_written, 60, interval_s=1.0), deployment.log_tail()
        blobs = await latest_blobs(deployment)
        for user in changed:
            state = unpack_state(blobs[user])
            assert state.events_total == V1_EVENTS + 1
            assert state.first_seen_ms == written[user].first_seen_ms
            assert state.last_seen_ms == base_ms
            assert (state.tenant, state.segment) == ("acme", "pro")
        for user in untouched:  # upgraded only when written
            assert blobs[user] == pack_v1(written[user])
            view = await asyncio.to_thread(user_view, worker, user)
            assert view["events_total"] == V1_EVENTS
            assert view["last_seen"] == written[user].last_seen_ms
    finally:
        worker.stop()
    # a restart recovers the table as it is now: both versions side by side
    worker = await deployment.start_worker("w1")
    try:
        assert await wait_for(lambda: _tracked(worker, len(users)), 30), deployment.log_tail()
    finally:
        worker.stop()


async def _tracked(worker: WorkerProcess, count: int) -> bool:
    return await users_tracked(worker) == count


async def test_a_worker_refuses_state_from_a_newer_release(
    kafka_broker: Any, tmp_path: Any
) -> None:
    deployment = Deployment(kafka_broker.url, tmp_path)
    await deployment.create_topics()
    last_seen_ms = int(time.time() * 1000)
    newer = STATE_VERSION + 1
    blobs = {f"v1u{i}": pack_v1(v1_state(f"v1u{i}", last_seen_ms)) for i in range(4)}
    # what a newer release might write: its version byte, more fields appended
    blobs["from-newer"] = bytes([newer]) + pack_v1(v1_state("from-newer", last_seen_ms))[1:]
    blobs["from-newer"] += bytes(24)
    await write_changelog(deployment, blobs)
    worker = deployment.worker()
    worker.start()
    with pytest.raises(ServiceStartError, match="exited early"):
        await worker.wait_ready(60)
    log = worker.log_path.read_text(errors="replace")
    assert f"format version {newer}, newer than this release reads" in log, log[-3000:]


async def test_redis_sync_reads_both_versions_and_stops_at_a_newer_one(
    kafka_broker: Any, redis_server: RedisServer, tmp_path: Any
) -> None:
    if not redis_server.running:
        redis_server.start()
    deployment = Deployment(kafka_broker.url, tmp_path, ENGAGEMENT_REDIS_URL=redis_server.url)
    await deployment.create_topics()
    settings = deployment.settings
    last_seen_ms = int(time.time() * 1000)
    old, new = v1_state("old", last_seen_ms), v1_state("new", last_seen_ms)
    new_blob = pack_state(unpack_state(pack_v1(new)))
    assert new_blob[0] == STATE_VERSION
    await write_changelog(deployment, {"old": pack_v1(old), "new": new_blob})
    stats = await redis_sync(settings)
    assert (stats.users, stats.unreadable) == (2, 0)
    keys = MirrorKeys(settings.app_id)
    client = redis_client(redis_server.url)
    try:
        for user, state in (("old", old), ("new", new)):
            assert await client.hget(keys.user(user), "events_total") == str(state.events_total)
        newer = bytes([STATE_VERSION + 1]) + new_blob[1:]
        await write_changelog(deployment, {"new": newer})
        with pytest.raises(NewerStateError, match=f"format version {STATE_VERSION + 1}"):
            await redis_sync(settings)
        # nothing removed or rewritten: the keys of both users are still there
        assert await client.hget(keys.user("new"), "events_total") == str(V1_EVENTS)
        assert await client.exists(keys.user("old")) == 1
        assert await client.get(keys.rebuilds) == "1"
    finally:
        await client.aclose()
