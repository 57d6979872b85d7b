"""The Redis serving mirror against a real redis-server, stopped and restarted.

The first tests drive ``RedisMirror`` directly over an in-memory source (fast,
exact); the last ones run real workers on real Kafka and compare the mirror
with the users table's changelog, through an outage and a ``redis-sync``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from support.metrics import sample
from support.workers import Deployment, event, latest_states, produce, wait_for

from agents.ops import redis_sync as redis_sync_module
from agents.stack.services import RedisServer
from agents.worker import redis_mirror
from agents.worker.metrics import Metrics
from agents.worker.redis_client import redis_client
from agents.worker.redis_keys import MirrorKeys, top_at_risk
from agents.worker.redis_mirror import RedisMirror
from agents.worker.redis_sweep import mark_rebuilt
from agents.worker.user_view import UserFields, mirror_fields
from streams.decode import partition_for
from streams.model_settings import model_config
from streams.settings import load_settings
from tables.groups import group_of
from tables.state import TIER_AT_RISK, TIER_NAMES, UserState, pack_state

PARTITIONS = 4
CONFIG = model_config(load_settings(holdout_salt="salt"))
DAY_MS = 86_400_000
NOW_MS = 1_760_000_000_000


def state(last_seen_ms: int, tier: int = 0, events: int = 1) -> UserState:
    return UserState(
        first_seen_ms=last_seen_ms - 20 * DAY_MS,
        last_seen_ms=last_seen_ms,
        active_days=5,
        events_total=events,
        tier=tier,
    )


class FakeSource:
    """``MirrorSource`` over a dict; ``put``/``delete`` also tell the mirror."""

    def __init__(self) -> None:
        self.states: dict[str, UserState] = {}
        self.owned_partitions: set[int] | None = None
        self.mirror: RedisMirror | None = None

    def owned(self) -> set[int] | None:
        return self.owned_partitions

    def partition_of(self, user_id: str) -> int:
        return partition_for(user_id.encode(), PARTITIONS)

    def user_ids(self, partitions: set[int] | None) -> list[str]:
        return [u for u in self.states if partitions is None or self.partition_of(u) in partitions]

    def get(self, user_id: str) -> UserState | None:
        return self.states.get(user_id)

    def fields(self, user_id: str, state: UserState) -> UserFields:
        return mirror_fields(user_id, state, NOW_MS, CONFIG)

    def put(self, user_id: str, value: UserState) -> None:
        self.states[user_id] = value
        assert self.mirror is not None
        self.mirror.observe(user_id, value)

    def delete(self, user_id: str) -> None:
        self.states.pop(user_id, None)
        assert self.mirror is not None
        self.mirror.observe(user_id, None)


class Snapshot(msgspec.Struct):
    users: dict[str, dict[str, str]]
    at_risk: dict[str, float]  # every at-risk set's members (all tenants and groups)
    placed: dict[str, list[str]]  # the sets each of them is in


def home(keys: MirrorKeys, user_id: str, tenant: str = "") -> str:
    """The at-risk set of a user of this test's configuration."""
    return keys.at_risk(tenant, group_of(user_id, CONFIG.holdout_salt, CONFIG.holdout_share))


async def snapshot(url: str, prefix: str) -> Snapshot:
    keys = MirrorKeys(prefix)
    client = redis_client(url)
    try:
        users: dict[str, dict[str, str]] = {}
        async for key in client.scan_iter(match=keys.user_pattern, count=1000):
            user_id = keys.user_of(key)
            assert user_id is not None
            users[user_id] = await client.hgetall(key)
        at_risk: dict[str, float] = {}
        placed: dict[str, list[str]] = {}
        async for key in client.scan_iter(match=keys.set_pattern, count=1000):
            for member, score in await client.zrange(key, 0, -1, withscores=True):
                at_risk[str(member)] = float(score)
                placed.setdefault(str(member), []).append(str(key))
        return Snapshot(users, at_risk, {u: sorted(k) for u, k in placed.items()})
    finally:
        await client.aclose()


def differences(states: dict[str, UserState], snap: Snapshot) -> list[str]:
    """Why the mirror does not show ``states`` (empty: it does)."""
    problems = []
    if set(states) != set(snap.users):
        problems.append(
            f"users: {len(set(states) - set(snap.users))} missing, "
            f"{len(set(snap.users) - set(states))} extra"
        )
    for user_id, st in states.items():
        got = snap.users.get(user_id)
        if got is None:
            continue
        want = {
            "last_seen": str(st.last_seen_ms),
            "episode": str(st.episode_ms),
            "events_total": str(st.events_total),
            "tier": TIER_NAMES[st.tier] or "none",
        }
        if {k: got.get(k) for k in want} != want:
            problems.append(f"fields differ for one user: {want} vs {got}")
    expected_set = {u for u, h in snap.users.items() if h.get("stage") == "at_risk"}
    if set(snap.at_risk) != expected_set:
        problems.append(f"at_risk set {sorted(snap.at_risk)} != {sorted(expected_set)}")
    keys = MirrorKeys(prefix_of(snap))
    for user_id, sets in snap.placed.items():
        fields = snap.users.get(user_id, {})
        if sets != [keys.at_risk(fields.get("tenant", ""), fields.get("group", ""))]:
            problems.append(f"one at-risk user is in the sets {sets}")
    return problems


def prefix_of(snap: Snapshot) -> str:
    any_key = next((keys[0] for keys in snap.placed.values()), ":tenant:")
    return any_key.split(":tenant:")[0]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def mirror_setup(
    redis_server: RedisServer, registry: CollectorRegistry
) -> AsyncIterator[tuple[RedisMirror, FakeSource]]:
    if not redis_server.running:
        redis_server.start()
    source = FakeSource()
    mirror = RedisMirror(
        source,
        MirrorKeys(f"mirror-{uuid.uuid4().hex[:8]}"),
        Metrics(registry),
        lambda: redis_client(redis_server.url, read_timeout_s=None),  # as the worker's
        max_backlog=5,
        batch_users=3,
    )
    source.mirror = mirror
    yield mirror, source
    await mirror.aclose()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_mirror_writes_hashes_and_the_at_risk_set_idempotently(
    redis_server: RedisServer,
    mirror_setup: tuple[RedisMirror, FakeSource],
    registry: CollectorRegistry,
) -> None:
    mirror, source = mirror_setup
    source.put("calm", state(NOW_MS - DAY_MS))
    source.put("drifting", state(NOW_MS - 8 * DAY_MS, tier=TIER_AT_RISK, events=7))
    await mirror.drain()
    first = await snapshot(redis_server.url, mirror.keys.prefix)
    assert differences(source.states, first) == []
    assert list(first.at_risk) == ["drifting"]
    assert first.users["drifting"]["stage"] == "at_risk"
    assert first.at_risk["drifting"] == pytest.approx(float(first.users["drifting"]["risk"]))
    # the same change again (a re-delivery) leaves exactly the same mirror
    source.put("drifting", source.states["drifting"])
    await mirror.drain()
    assert await snapshot(redis_server.url, mirror.keys.prefix) == first
    assert value(registry, "engagement_redis_writes_total", outcome="written") == 3
    assert value(registry, "engagement_redis_backlog_users") == 0


async def test_a_return_leaves_the_at_risk_set_and_an_erasure_leaves_no_key(
    redis_server: RedisServer, mirror_setup: tuple[RedisMirror, FakeSource]
) -> None:
    mirror, source = mirror_setup
    source.put("back", state(NOW_MS - 8 * DAY_MS, tier=TIER_AT_RISK))
    source.put("erased", state(NOW_MS - 9 * DAY_MS, tier=TIER_AT_RISK))
    await mirror.drain()
    assert set((await snapshot(redis_server.url, mirror.keys.prefix)).at_risk) == {
        "back",
        "erased",
    }
    source.put("back", state(NOW_MS))
    source.delete("erased")
    await mirror.drain()
    snap = await snapshot(redis_server.url, mirror.keys.prefix)
    assert snap.at_risk == {}
    assert set(snap.users) == {"back"}
    assert snap.users["back"]["tier"] == "none"


async def zrem_calls(url: str) -> int:
    client = redis_client(url)
    try:
        stats = await client.info("commandstats")
        return int(stats.get("cmdstat_zrem", {}).get("calls", 0))
    finally:
        await client.aclose()


async def test_once_membership_is_known_only_users_leaving_the_at_risk_set_get_a_zrem(
    redis_server: RedisServer, mirror_setup: tuple[RedisMirror, FakeSource]
) -> None:
    mirror, source = mirror_setup
    source.put("leaving", state(NOW_MS - 8 * DAY_MS, tier=TIER_AT_RISK))
    for n in range(4):
        source.put(f"calm{n}", state(NOW_MS - DAY_MS))
    mirror.request_resync(None)  # as after a recovery: the rewrite learns who is a member
    await mirror.drain()
    before = await zrem_calls(redis_server.url)
    for n in range(4):
        source.put(f"calm{n}", state(NOW_MS, events=2))
    source.put("leaving", state(NOW_MS))
    await mirror.drain()
    assert await zrem_calls(redis_server.url) - before == 1  # "leaving" only
    assert differences(source.states, await snapshot(redis_server.url, mirror.keys.prefix)) == []


async def test_a_member_left_by_another_writer_is_removed_while_membership_is_unknown(
    redis_server: RedisServer, mirror_setup: tuple[RedisMirror, FakeSource]
) -> None:
    """A previous owner of the partition (or a Redis kept across a restart) may
    have left a user in the at-risk set: until a resync has rewritten the
    partition, every write of a user not at risk removes them."""
    mirror, source = mirror_setup
    client = redis_client(redis_server.url)
    try:
        await client.zadd(home(mirror.keys, "stale"), {"stale": 0.9})
        source.put("stale", state(NOW_MS))  # a fresh mirror knows nothing yet
        await mirror.drain()
        assert await client.zscore(home(mirror.keys, "stale"), "stale") is None
        mirror.request_resync(None)
        await mirror.drain()  # now known: "stale" is not a member
        # the partition goes to another worker, which leaves "stale" in the set,
        # and comes back: its recovery requests a resync of it
        await client.zadd(home(mirror.keys, "stale"), {"stale": 0.9})
        mirror.request_resync({partition_for(b"stale", PARTITIONS)})
        source.put("stale", state(NOW_MS, events=3))
        await mirror.drain()
        assert await client.zscore(home(mirror.keys, "stale"), "stale") is None
        assert (
            differences(source.states, await snapshot(redis_server.url, mirror.keys.prefix)) == []
        )
    finally:
        await client.aclose()


async def test_a_redis_sync_while_the_mirror_runs_makes_it_rewrite_from_the_table(
    redis_server: RedisServer,
    mirror_setup: tuple[RedisMirror, FakeSource],
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``redis-sync`` writes what the changelogs hold, which may trail the table;
    when it ends it raises the rebuild counter, and the mirror, reading it with
    its next write or idle check, rewrites its partitions (membership included)."""
    mirror, source = mirror_setup
    source.put("calm", state(NOW_MS))
    mirror.request_resync(None)
    await mirror.drain()  # membership known: "calm" is not in the at-risk set
    client = redis_client(redis_server.url)

    async def sync_writes_an_older_calm() -> None:
        await client.hset(mirror.keys.user("calm"), mapping={"tier": "at_risk"})
        await client.zadd(home(mirror.keys, "calm"), {"calm": 0.9})
        await mark_rebuilt(client, mirror.keys)

    try:
        await sync_writes_an_older_calm()
        source.put("other", state(NOW_MS))  # its write reads the counter
        await mirror.drain()
        assert value(registry, "engagement_redis_resyncs_total", cause="rebuilt") == 1
        assert (
            differences(source.states, await snapshot(redis_server.url, mirror.keys.prefix)) == []
        )
        # nothing to write: the idle check notices the next sync
        await sync_writes_an_older_calm()
        monkeypatch.setattr(redis_mirror, "IDLE_PING_S", 0.0)
        assert await mirror.step() is False
        await mirror.drain()
        assert value(registry, "engagement_redis_resyncs_total", cause="rebuilt") == 2
        assert (
            differences(source.states, await snapshot(redis_server.url, mirror.keys.prefix)) == []
        )
    finally:
        await client.aclose()


async def test_changes_of_partitions_owned_elsewhere_are_left_to_their_owner(
    redis_server: RedisServer,
    mirror_setup: tuple[RedisMirror, FakeSource],
    registry: CollectorRegistry,
) -> None:
    mirror, source = mirror_setup
    mine = next(f"u{i}" for i in range(100) if partition_for(f"u{i}".encode(), PARTITIONS) == 0)
    theirs = next(f"u{i}" for i in range(100) if partition_for(f"u{i}".encode(), PARTITIONS) == 1)
    source.owned_partitions = {0}
    source.put(mine, state(NOW_MS))
    source.put(theirs, state(NOW_MS))
    await mirror.drain()
    assert set((await snapshot(redis_server.url, mirror.keys.prefix)).users) == {mine}
    assert value(registry, "engagement_redis_writes_total", outcome="not_owned") == 1


async def test_the_running_mirror_writes_stage_or_tier_changes_at_once_and_waits_with_the_rest(
    redis_server: RedisServer, registry: CollectorRegistry
) -> None:
    """A window of an hour: only urgent changes reach Redis while the test runs."""
    if not redis_server.running:
        redis_server.start()
    source = FakeSource()
    mirror = RedisMirror(
        source,
        MirrorKeys(f"window-{uuid.uuid4().hex[:8]}"),
        Metrics(registry),
        lambda: redis_client(redis_server.url, read_timeout_s=None),
        max_backlog=1000,
        window_s=3600.0,
    )
    source.mirror = mirror

    async def hash_of(user_id: str) -> dict[str, str]:
        return (await snapshot(redis_server.url, mirror.keys.prefix)).users.get(user_id, {})

    source.put("u", state(NOW_MS, events=1))  # never written: at once
    task = asyncio.create_task(mirror.run())
    try:
        assert await wait_for(lambda: hash_of("u"), 30)
        for events in range(2, 20):  # same stage and tier: they wait for the window
            source.put("u", state(NOW_MS + events, events=events))
        source.put("v", state(NOW_MS, tier=TIER_AT_RISK))
        assert await wait_for(lambda: hash_of("v"), 30)
        assert (await hash_of("u"))["events_total"] == "1"
        source.put("u", state(NOW_MS + 30, tier=TIER_AT_RISK, events=30))

        async def u_at_risk() -> bool:
            return (await hash_of("u")).get("events_total") == "30"

        assert await wait_for(u_at_risk, 30)
        assert (await hash_of("u"))["tier"] == "at_risk"
        assert value(registry, "engagement_redis_writes_total", outcome="written") == 3
        assert mirror.backlog_users == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await mirror.aclose()


async def test_outage_keeps_a_bounded_backlog_then_converges(
    redis_server: RedisServer,
    mirror_setup: tuple[RedisMirror, FakeSource],
    registry: CollectorRegistry,
) -> None:
    mirror, source = mirror_setup
    source.put("before", state(NOW_MS))
    await mirror.drain()
    task = asyncio.create_task(mirror.run())
    try:
        redis_server.stop()
        for i in range(3):
            source.put(f"during{i}", state(NOW_MS - i))
        assert await wait_for(lambda: value(registry, "engagement_redis_errors_total") >= 1, 30)
        assert value(registry, "engagement_redis_up") == 0
        assert value(registry, "engagement_redis_backlog_users") == 3
        # past the bound (5 users): the backlog is dropped, a resync is due
        for i in range(3, 10):
            source.put(f"during{i}", state(NOW_MS - i))
        assert value(registry, "engagement_redis_backlog_users") <= 5
        assert value(registry, "engagement_redis_needs_resync") == 1
        source.delete("before")
        redis_server.start()

        async def converged() -> bool:
            snap = await snapshot(redis_server.url, mirror.keys.prefix)
            return not differences(source.states, snap)

        assert await wait_for(converged, 30)
        assert value(registry, "engagement_redis_up") == 1
        assert value(registry, "engagement_redis_backlog_users") == 0
        assert value(registry, "engagement_redis_needs_resync") == 0
        assert value(registry, "engagement_redis_resyncs_total", cause="overflow") >= 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if not redis_server.running:
            redis_server.start()


async def test_a_restarted_empty_redis_is_rewritten_without_new_changes(
    redis_server: RedisServer,
    mirror_setup: tuple[RedisMirror, FakeSource],
    registry: CollectorRegistry,
) -> None:
    mirror, source = mirror_setup
    for i in range(4):
        source.put(f"kept{i}", state(NOW_MS - i, tier=TIER_AT_RISK))
    task = asyncio.create_task(mirror.run())
    try:

        async def converged() -> bool:
            snap = await snapshot(redis_server.url, mirror.keys.prefix)
            return not differences(source.states, snap)

        assert await wait_for(converged, 30)
        redis_server.stop()  # no persistence: it comes back empty
        redis_server.start()
        assert await wait_for(
            lambda: value(registry, "engagement_redis_resyncs_total", cause="redis_restart") >= 1,
            30,
        )
        assert await wait_for(converged, 30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_frozen_redis_delays_writes_without_losing_them(
    redis_server: RedisServer,
    mirror_setup: tuple[RedisMirror, FakeSource],
    registry: CollectorRegistry,
) -> None:
    mirror, source = mirror_setup
    task = asyncio.create_task(mirror.run())
    try:
        source.put("first", state(NOW_MS))
        redis_server.freeze()
        source.put("second", state(NOW_MS))
        assert await wait_for(lambda: value(registry, "engagement_redis_errors_total") >= 1, 30)
        redis_server.thaw()

        async def converged() -> bool:
            snap = await snapshot(redis_server.url, mirror.keys.prefix)
            return not differences(source.states, snap)

        assert await wait_for(converged, 30)
        # no reply within the round-trip bound: a timeout, so everything was rewritten
        assert value(registry, "engagement_redis_resyncs_total", cause="timeout") >= 1
    finally:
        redis_server.thaw()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ------------------------------------------------------------- real workers


def now_ms() -> int:
    return int(time.time() * 1000)


def mirror_deployment(kafka_url: str, redis_url: str, tmp_path: Any, **env: str) -> Deployment:
    # at_risk falls due after 2 s and stays: the at-risk set is not empty.
    return Deployment(
        kafka_url,
        tmp_path,
        ENGAGEMENT_REDIS_URL=redis_url,
        ENGAGEMENT_AT_RISK="2s",
        ENGAGEMENT_DORMANT="1h",
        ENGAGEMENT_CHURNED="2h",
        **env,
    )


async def mirror_topics(kafka_url: str, redis_server: RedisServer, tmp_path: Any) -> Deployment:
    """A mirror deployment with its topics created and Redis running."""
    if not redis_server.running:
        redis_server.start()
    deployment = mirror_deployment(kafka_url, redis_server.url, tmp_path)
    await deployment.create_topics()
    return deployment


async def mirror_matches_table(deployment: Deployment, redis_url: str) -> list[str]:
    states = await latest_states(deployment)
    if not states:
        return ["no states yet"]
    return differences(states, await snapshot(redis_url, deployment.settings.app_id))


async def metric(worker: Any, name: str, **labels: str) -> float:
    with contextlib.suppress(OSError):
        return sample(await asyncio.to_thread(worker.metrics_text), name, **labels)
    return -1.0


async def test_worker_mirror_matches_the_table_through_a_redis_outage(
    kafka_broker: Any, redis_server: RedisServer, tmp_path: Any
) -> None:
    deployment = await mirror_topics(kafka_broker.url, redis_server, tmp_path)
    topic = deployment.settings.topic_events
    worker = await deployment.start_worker()
    try:
        base = now_ms()
        users = [f"m{i}" for i in range(12)]
        first = [event(u, f"{u}-0", base) for u in users]
        await produce(deployment.bootstrap, topic, first)

        async def matches() -> bool:
            return not await mirror_matches_table(deployment, redis_server.url)

        async def all_at_risk() -> bool:
            snap = await snapshot(redis_server.url, deployment.settings.app_id)
            return set(snap.at_risk) == set(users) and await matches()

        # silent for 2 s: every user falls at risk, in the table and in the set
        assert await wait_for(all_at_risk, 60, interval_s=1.0), deployment.log_tail()

        redis_server.stop()
        applied_before = await metric(worker, "engagement_events_total", outcome="applied")
        second = [event(u, f"{u}-1", now_ms()) for u in users[:6]]
        second += [event(f"n{i}", f"n{i}-0", now_ms()) for i in range(6)]
        await produce(deployment.bootstrap, topic, second)

        async def kept_processing() -> bool:
            applied = await metric(worker, "engagement_events_total", outcome="applied")
            backlog = await metric(worker, "engagement_redis_backlog_users")
            return applied >= applied_before + len(second) and backlog > 0

        assert await wait_for(kept_processing, 60), deployment.log_tail()
        assert await metric(worker, "engagement_redis_up") == 0

        redis_server.start()  # empty: everything must be rewritten
        assert await wait_for(matches, 60, interval_s=1.0), deployment.log_tail()
        assert await metric(worker, "engagement_redis_backlog_users") == 0
        text = await asyncio.to_thread(worker.metrics_text)
        assert all(u not in text for u in users)
    finally:
        deployment.stop_all()
        if not redis_server.running:
            redis_server.start()


async def test_redis_sync_rebuilds_the_mirror_after_flushdb(
    kafka_broker: Any, redis_server: RedisServer, tmp_path: Any
) -> None:
    deployment = await mirror_topics(kafka_broker.url, redis_server, tmp_path)
    worker = await deployment.start_worker()
    users = [f"s{i}" for i in range(10)]
    try:
        base = now_ms()
        await produce(
            deployment.bootstrap,
            deployment.settings.topic_events,
            [event(u, f"{u}-{n}", base + n) for u in users for n in range(2)],
        )

        async def matches() -> bool:
            return not await mirror_matches_table(deployment, redis_server.url)

        assert await wait_for(matches, 60, interval_s=1.0), deployment.log_tail()
    finally:
        worker.stop()
    before = await snapshot(redis_server.url, deployment.settings.app_id)
    client = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        await client.flushdb()
        # a user the table does not know must not survive the rebuild
        await client.hset(f"{deployment.settings.app_id}:user:ghost", mapping={"stage": "new"})
        ghost_set = MirrorKeys(deployment.settings.app_id).at_risk("", "treatment")
        await client.zadd(ghost_set, {"ghost": 0.5})
    finally:
        await client.aclose()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agents.cli.main", "redis-sync"],
        env={**os.environ, **deployment.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    stats = msgspec.json.decode(done.stdout.strip().splitlines()[-1])
    assert stats["users"] == len(users) and stats["removed"] == 1
    client = redis_client(redis_server.url)
    try:  # running workers would see the rebuild and rewrite their partitions
        assert await client.get(f"{deployment.settings.app_id}:rebuilds") == "1"
    finally:
        await client.aclose()
    after = await snapshot(redis_server.url, deployment.settings.app_id)
    assert differences(await latest_states(deployment), after) == []
    assert set(after.users) == set(before.users) == set(users)
    for user_id in users:  # the same derivation as the worker, at the same clock or later
        for field in ("last_seen", "episode", "events_total", "tier", "tenant", "group"):
            assert after.users[user_id][field] == before.users[user_id][field]


async def test_a_running_worker_rewrites_its_partitions_after_a_redis_sync(
    kafka_broker: Any, redis_server: RedisServer, tmp_path: Any
) -> None:
    """A sync beside a running worker may write values older than the table
    (the changelogs trail it); the sync's rebuild counter makes the worker
    rewrite its partitions. Here the "older values" are written by hand."""
    deployment = await mirror_topics(kafka_broker.url, redis_server, tmp_path)
    worker = await deployment.start_worker()
    users = [f"r{i}" for i in range(8)]
    prefix = deployment.settings.app_id
    client = redis_client(redis_server.url)
    try:
        await produce(
            deployment.bootstrap,
            deployment.settings.topic_events,
            [event(u, f"{u}-0", now_ms()) for u in users],
        )

        async def matches() -> bool:
            return not await mirror_matches_table(deployment, redis_server.url)

        async def all_at_risk() -> bool:
            snap = await snapshot(redis_server.url, prefix)
            return set(snap.at_risk) == set(users) and await matches()

        assert await wait_for(all_at_risk, 60, interval_s=1.0), deployment.log_tail()
        keys = MirrorKeys(prefix)
        await client.hset(keys.user("r0"), mapping={"events_total": "999", "tier": "none"})
        for key in keys.both_sets(""):
            await client.zrem(key, "r0")
        assert await mirror_matches_table(deployment, redis_server.url) != []
        await mark_rebuilt(client, keys)

        async def rewritten() -> bool:
            resyncs = await metric(worker, "engagement_redis_resyncs_total", cause="rebuilt")
            return resyncs >= 1 and await matches()

        # nothing else changes: the worker's idle check (every 5 s) sees the counter
        assert await wait_for(rewritten, 60, interval_s=1.0), deployment.log_tail()
    finally:
        await client.aclose()
        deployment.stop_all()


async def test_a_redis_sync_stopped_part_way_still_tells_the_workers(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a failed sync wrote may be older than the tables: it raises the
    rebuild counter all the same (the changelogs are stood in for here)."""
    if not redis_server.running:
        redis_server.start()
    settings = load_settings(redis_url=redis_server.url, app_id=f"sync-{uuid.uuid4().hex[:8]}")

    async def changelog(_settings: Any, topic: str) -> dict[bytes, bytes]:
        return {b"u1": pack_state(state(NOW_MS))} if "users" in topic else {}

    async def fails(*_args: Any, **_kwargs: Any) -> int:
        raise RedisConnectionError("lost mid-way")

    monkeypatch.setattr(redis_sync_module, "read_compacted", changelog)
    monkeypatch.setattr(redis_sync_module, "remove_stale", fails)
    client = redis_client(redis_server.url)
    keys = MirrorKeys(settings.app_id)
    try:
        with pytest.raises(RedisConnectionError):
            await redis_sync_module.redis_sync(settings)
        assert await client.hget(keys.user("u1"), "events_total") == "1"  # written before
        assert await client.get(keys.rebuilds) == "1"
        monkeypatch.undo()
        monkeypatch.setattr(redis_sync_module, "read_compacted", changelog)
        stats = await redis_sync_module.redis_sync(settings)
        assert stats.users == 1 and await client.get(keys.rebuilds) == "2"
    finally:
        await client.aclose()


async def test_a_password_protected_redis_is_mirrored_and_the_password_never_shown(
    embedded_broker: Any, tmp_path: Any
) -> None:
    """Redis as the compose stack runs it (``requirepass``): the worker writes it
    through a URL that carries the password, which neither its log nor its
    /metrics show; a client without the password is refused."""
    password = secrets.token_hex(32)
    redis = RedisServer(password=password)
    redis.start()
    deployment = mirror_deployment(embedded_broker.url, redis.url, tmp_path)
    await deployment.create_topics()
    worker = await deployment.start_worker()
    try:
        users = [f"pw{i}" for i in range(6)]
        await produce(
            deployment.bootstrap,
            deployment.settings.topic_events,
            [event(u, f"{u}-0", now_ms()) for u in users],
        )

        async def mirrored() -> bool:
            snap = await snapshot(redis.url, deployment.settings.app_id)
            return set(snap.users) == set(users)

        assert await wait_for(mirrored, 60), deployment.log_tail()
        anonymous = Redis.from_url(redis.url.replace(f":{password}@", ""))
        try:
            with pytest.raises(AuthenticationError):
                await anonymous.ping()
        finally:
            await anonymous.aclose()
        shown = await asyncio.to_thread(worker.metrics_text)
        assert password not in shown
    finally:
        worker.stop()
        redis.close()
    assert password not in worker.log_path.read_text(errors="replace")


def users_of_group(group: str, count: int) -> list[str]:
    names = (f"g{i}" for i in range(10_000))
    return [u for u in names if group_of(u, CONFIG.holdout_salt, CONFIG.holdout_share) == group][
        :count
    ]


def at_risk_in(tenant: str, days_silent: int = 8) -> UserState:
    return msgspec.structs.replace(
        state(NOW_MS - days_silent * DAY_MS, tier=TIER_AT_RISK), tenant=tenant
    )


async def test_hold_out_and_tenants_have_sets_of_their_own_and_at_risk_reads_one(
    redis_server: RedisServer, mirror_setup: tuple[RedisMirror, FakeSource]
) -> None:
    mirror, source = mirror_setup
    treated = users_of_group("treatment", 2)
    held = users_of_group("holdout", 1)
    source.put(treated[0], at_risk_in("acme"))
    source.put(held[0], at_risk_in("acme", days_silent=9))
    source.put(treated[1], at_risk_in("globex"))
    await mirror.drain()
    snap = await snapshot(redis_server.url, mirror.keys.prefix)
    assert differences(source.states, snap) == []
    assert snap.placed[held[0]] == [mirror.keys.at_risk("acme", "holdout")]
    assert snap.placed[treated[1]] == [mirror.keys.at_risk("globex", "treatment")]
    client = redis_client(redis_server.url)
    try:
        acme = await top_at_risk(client, mirror.keys, 10, "acme")
        assert [u["user_id"] for u in acme] == [treated[0]]  # the hold-out is left out
        both = await top_at_risk(client, mirror.keys, 10, "acme", True)
        assert {u["user_id"] for u in both} == {treated[0], held[0]}
        risks = [u["risk"] for u in both]
        assert risks == sorted(risks, reverse=True)
        assert all(u["tenant"] == "acme" for u in both)
        assert await top_at_risk(client, mirror.keys, 10, "initech") == []
        assert await top_at_risk(client, mirror.keys, 10) == []  # no tenant
    finally:
        await client.aclose()


async def test_a_user_who_moves_tenant_leaves_the_old_tenants_set(
    redis_server: RedisServer, mirror_setup: tuple[RedisMirror, FakeSource]
) -> None:
    mirror, source = mirror_setup
    user = users_of_group("treatment", 1)[0]
    source.put(user, at_risk_in("acme"))
    await mirror.drain()
    source.put(user, at_risk_in("globex", days_silent=10))  # the mirror knows the old set
    await mirror.drain()
    snap = await snapshot(redis_server.url, mirror.keys.prefix)
    assert snap.placed[user] == [mirror.keys.at_risk("globex", "treatment")]
    assert differences(source.states, snap) == []


async def test_a_resync_removes_members_another_writer_left_in_another_tenants_set(
    redis_server: RedisServer, mirror_setup: tuple[RedisMirror, FakeSource]
) -> None:
    """A member this mirror cannot know of (left before a restart, or by a
    previous owner) in the set of a tenant the user no longer has: only a scan
    of every set finds it, which the resync does."""
    mirror, source = mirror_setup
    user = users_of_group("treatment", 1)[0]
    client = redis_client(redis_server.url)
    try:
        await client.zadd(mirror.keys.at_risk("acme", "treatment"), {user: 0.9})
        await client.zadd(mirror.keys.at_risk("acme", "holdout"), {"gone": 0.9})
        source.put(user, at_risk_in("globex"))
        mirror.request_resync(None)
        await mirror.drain()
        snap = await snapshot(redis_server.url, mirror.keys.prefix)
        assert snap.placed == {user: [mirror.keys.at_risk("globex", "treatment")]}
        assert differences(source.states, snap) == []
    finally:
        await client.aclose()
