"""The worker end to end on real brokers: idle partitions, DLQ, restarts, backlogs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections import Counter
from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.metrics import sample
from support.workers import (
    Deployment,
    event,
    latest_states,
    produce,
    read_topic,
    signals_of,
    wait_for,
)

from agents.simulation.population import POISON_REASONS, poison_records
from streams.decode import partition_for
from streams.records import CONTROL_HEADER, DLQ_REASONS, DlqRecord

PARTITIONS = 4


def now_ms() -> int:
    return int(time.time() * 1000)


def users_on(partition: int, count: int, prefix: str = "user") -> list[str]:
    out = []
    for i in range(10_000):
        user = f"{prefix}{i}"
        if partition_for(user.encode(), PARTITIONS) == partition:
            out.append(user)
            if len(out) == count:
                return out
    raise AssertionError("not enough users")


async def test_idle_partition_still_signals(any_broker: Any, tmp_path: Any) -> None:
    deployment = Deployment(any_broker.url, tmp_path)
    await deployment.create_topics()
    worker = await deployment.start_worker()
    quiet = users_on(0, 3, "quiet")
    alive = users_on(1, 1, "alive")[0]
    stop = asyncio.Event()

    async def keep_partition_1_busy() -> None:
        n = 0
        while not stop.is_set():
            await produce(
                deployment.bootstrap,
                deployment.settings.topic_events,
                [event(alive, f"alive-{n}", now_ms())],
            )
            n += 1
            await asyncio.sleep(0.5)

    try:
        start = now_ms()
        await produce(
            deployment.bootstrap,
            deployment.settings.topic_events,
            [event(user, f"{user}-1", start) for user in quiet],
        )
        busy = asyncio.create_task(keep_partition_1_busy())

        def all_quiet_at_risk(records: list[Any]) -> bool:
            kinds = {(s.user_id, s.kind) for s in signals_of(records)}
            return all((user, "at_risk") in kinds for user in quiet)

        records = await read_topic(
            deployment.bootstrap,
            deployment.settings.topic_signals,
            until=all_quiet_at_risk,
            timeout_s=60,
        )
        stop.set()
        await busy
        signals = signals_of(records)
        at_risk = {s.user_id: s for s in signals if s.kind == "at_risk"}
        assert set(quiet) <= set(at_risk), deployment.log_tail()
        for user in quiet:
            assert at_risk[user].as_of == start + 3000
            assert at_risk[user].episode == start
            assert at_risk[user].signal_id == f"{user}:{start}:at_risk"
        assert all(s.user_id != alive for s in signals)
    finally:
        stop.set()
        worker.stop()


@pytest.mark.parametrize("ingest", ["stream", "batch"])
async def test_every_bad_record_goes_to_the_dlq_with_its_reason(
    any_broker: Any, tmp_path: Any, ingest: str
) -> None:
    deployment = Deployment(any_broker.url, tmp_path, ENGAGEMENT_INGEST=ingest)
    await deployment.create_topics()
    worker = await deployment.start_worker()
    settings = deployment.settings
    try:
        triples = poison_records(len(POISON_REASONS), seed=3)
        raw: list[tuple[bytes | None, bytes]] = [(key, value) for _reason, key, value in triples]
        expected = Counter(reason for reason, _key, _value in triples)
        await produce(deployment.bootstrap, settings.topic_events, raw)
        # wrong_partition: a valid event sent to a partition its key does not hash to
        user = users_on(2, 1, "misplaced")[0]
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                settings.topic_events,
                key=user.encode(),
                value=json.dumps(event(user, "m1", now_ms())).encode(),
                partition=3,
            )
            forged = json.dumps(
                {
                    "type": "$tick",
                    "wall_ms": now_ms() + 10**9,
                    "events_seen_append_ms": now_ms() + 10**9,
                    "kid": "k1",
                    "sig": "00" * 32,
                }
            ).encode()
            await producer.send_and_wait(
                settings.topic_events,
                value=forged,
                partition=0,
                headers=[(CONTROL_HEADER, b"tick")],
            )
        finally:
            await producer.stop()
        expected["wrong_partition"] += 1
        expected["bad_signature"] += 1
        total = sum(expected.values())
        records = await read_topic(
            deployment.bootstrap,
            settings.topic_dlq,
            until=lambda recs: len(recs) >= total,
            timeout_s=60,
        )
        decoder = msgspec.json.Decoder(DlqRecord)
        dlq = [decoder.decode(r.value) for r in records]
        assert Counter(d.reason for d in dlq) == expected, deployment.log_tail()
        assert set(expected) == set(DLQ_REASONS)
        for item in dlq:
            assert item.topic == settings.topic_events
            assert item.offset >= 0
            assert item.value_b64 is not None and base64.b64decode(item.value_b64)
        # the worker survived and still applies good events
        ok_user = users_on(1, 1, "ok")[0]
        await produce(
            deployment.bootstrap, settings.topic_events, [event(ok_user, "ok-1", now_ms())]
        )

        async def applied() -> bool:
            with contextlib.suppress(OSError):
                text = await asyncio.to_thread(worker.metrics_text)
                return sample(text, "engagement_events_total", outcome="applied") >= 1
            return False

        assert await wait_for(applied, 30), deployment.log_tail()
        text = await asyncio.to_thread(worker.metrics_text)
        for reason, count in expected.items():
            assert sample(text, "engagement_dlq_total", reason=reason) == count
        assert "misplaced" not in text and ok_user not in text
    finally:
        worker.stop()


async def test_backlog_after_downtime_raises_no_false_alarm(
    kafka_broker: Any, tmp_path: Any
) -> None:
    deployment = Deployment(kafka_broker.url, tmp_path)
    await deployment.create_topics()
    topic = deployment.settings.topic_events
    users = [f"busy{i}" for i in range(6)]
    last_seen: dict[str, int] = {}
    worker = await deployment.start_worker()
    try:
        for user in users:
            last_seen[user] = now_ms()
        await produce(
            deployment.bootstrap, topic, [event(u, f"{u}-0", last_seen[u]) for u in users]
        )
        worker.stop()
        # the worker is down for 3x the at_risk threshold; users stay active throughout
        for step in range(1, 19):
            await asyncio.sleep(0.5)
            stamp = now_ms()
            await produce(
                deployment.bootstrap, topic, [event(u, f"{u}-{step}", stamp) for u in users]
            )
            for u in users:
                last_seen[u] = stamp
        worker = await deployment.start_worker("w1")

        def all_at_risk(records: list[Any]) -> bool:
            return {s.user_id for s in signals_of(records) if s.kind == "at_risk"} >= set(users)

        records = await read_topic(
            deployment.bootstrap, deployment.settings.topic_signals, until=all_at_risk, timeout_s=90
        )
        signals = [s for s in signals_of(records) if s.kind == "at_risk"]
        assert {s.user_id for s in signals} == set(users), deployment.log_tail()
        for s in signals:
            # the only at_risk is the true one, after the last event of the backlog
            assert s.episode == last_seen[s.user_id], (s, last_seen[s.user_id])
    finally:
        worker.stop()


@pytest.mark.parametrize(
    ("ingest", "store"),
    [("stream", "memory://"), ("batch", "memory://"), ("batch", "rocksdb://")],
)
async def test_restart_after_crash_does_not_double_count(
    kafka_broker: Any, tmp_path: Any, ingest: str, store: str
) -> None:
    deployment = Deployment(
        kafka_broker.url,
        tmp_path,
        ENGAGEMENT_INGEST=ingest,
        ENGAGEMENT_STORE=store,
        ENGAGEMENT_AT_RISK="1h",
        ENGAGEMENT_DORMANT="2h",
        ENGAGEMENT_CHURNED="3h",
    )
    await deployment.create_topics()
    topic = deployment.settings.topic_events
    users = [f"count{i}" for i in range(20)]
    worker = await deployment.start_worker()
    try:
        base = now_ms()
        first = [event(u, f"{u}-{n}", base + n) for n in range(5) for u in users]
        await produce(deployment.bootstrap, topic, first)

        seen: list[float] = []

        async def processed(count: int) -> bool:
            with contextlib.suppress(OSError):
                text = await asyncio.to_thread(worker.metrics_text)
                seen.append(sample(text, "engagement_events_total"))
                return seen[-1] >= count
            return False

        def stalled() -> str:
            return f"events counted: {seen[-3:]}\n{deployment.log_tail()}"

        assert await wait_for(lambda: processed(len(first)), 180), stalled()
        worker.kill9()
        second = [event(u, f"{u}-{n}", base + n) for n in range(5, 10) for u in users]
        await produce(deployment.bootstrap, topic, second)
        # a producer retry: the same event ids again at new offsets
        await produce(deployment.bootstrap, topic, second[-len(users) :])
        worker = await deployment.start_worker("w1")
        seen.clear()
        assert await wait_for(lambda: processed(len(second)), 240), stalled()

        async def settled() -> bool:
            states = await latest_states(deployment)
            return all(u in states and states[u].events_total >= 10 for u in users)

        assert await wait_for(settled, 60, interval_s=1.0), deployment.log_tail()
        states = await latest_states(deployment)
        for user in users:
            assert states[user].events_total == 10, (user, states[user])
            assert states[user].active_days >= 1
    finally:
        worker.stop()


async def test_due_index_is_rebuilt_after_restart(kafka_broker: Any, tmp_path: Any) -> None:
    # Users seen once, then the worker restarts before they fall due; nothing
    # new arrives for them, so only the rebuilt due index can signal them.
    deployment = Deployment(
        kafka_broker.url,
        tmp_path,
        ENGAGEMENT_AT_RISK="6s",
        ENGAGEMENT_DORMANT="12s",
        ENGAGEMENT_CHURNED="18s",
    )
    await deployment.create_topics()
    users = [f"idle{i}" for i in range(8)]
    worker = await deployment.start_worker()
    try:
        start = now_ms()
        await produce(
            deployment.bootstrap,
            deployment.settings.topic_events,
            [event(u, f"{u}-0", start) for u in users],
        )

        async def applied() -> bool:
            with contextlib.suppress(OSError):
                text = await asyncio.to_thread(worker.metrics_text)
                return sample(text, "engagement_events_total", outcome="applied") >= len(users)
            return False

        assert await wait_for(applied, 60), deployment.log_tail()
        worker.stop()
        worker = await deployment.start_worker("w1")
        text = await asyncio.to_thread(worker.metrics_text)
        assert sum(
            sample(text, "engagement_users_tracked", partition=str(p)) for p in range(PARTITIONS)
        ) == len(users)

        def all_at_risk(records: list[Any]) -> bool:
            return {s.user_id for s in signals_of(records) if s.kind == "at_risk"} >= set(users)

        records = await read_topic(
            deployment.bootstrap, deployment.settings.topic_signals, until=all_at_risk, timeout_s=60
        )
        at_risk = [s for s in signals_of(records) if s.kind == "at_risk"]
        assert sorted(s.user_id for s in at_risk) == sorted(users), deployment.log_tail()
        assert all(s.as_of == start + 6000 for s in at_risk)
    finally:
        worker.stop()


PER_PARTITION = (
    "engagement_clock_seconds",
    "engagement_clock_lag_seconds",
    "engagement_consumer_lag_records",
    "engagement_users_by_stage",
    "engagement_mau",
)


def exported_partitions(text: str, name: str) -> set[int]:
    return {
        int(item.labels["partition"])
        for family in text_string_to_metric_families(text)
        for item in family.samples
        if item.name == name
    }


async def test_a_worker_stops_exporting_the_partitions_it_hands_over(
    kafka_broker: Any, tmp_path: Any
) -> None:
    """A second worker joins: the first hands over half its partitions and stops
    exporting their series, so sums over workers count every user once."""
    deployment = Deployment(kafka_broker.url, tmp_path)
    await deployment.create_topics()
    users = [u for p in range(PARTITIONS) for u in users_on(p, 3, prefix="move")]
    first = await deployment.start_worker("w0")
    try:
        await produce(
            deployment.bootstrap,
            deployment.settings.topic_events,
            [event(u, f"{u}-0", now_ms()) for u in users],
        )

        async def tracked_by_first() -> bool:
            with contextlib.suppress(OSError):
                text = await asyncio.to_thread(first.metrics_text)
                return sample(text, "engagement_users_tracked") == len(users)
            return False

        assert await wait_for(tracked_by_first, 60), deployment.log_tail()
        second = await deployment.start_worker("w1")
        workers = (first, second)

        async def handed_over() -> bool:
            with contextlib.suppress(OSError):
                texts = [await asyncio.to_thread(w.metrics_text) for w in workers]
                owned = [exported_partitions(t, "engagement_users_tracked") for t in texts]
                return (
                    all(owned)
                    and owned[0].isdisjoint(owned[1])
                    and owned[0] | owned[1] == set(range(PARTITIONS))
                    and sum(sample(t, "engagement_users_tracked") for t in texts) == len(users)
                    and all(
                        exported_partitions(text, name) == partitions
                        for text, partitions in zip(texts, owned, strict=True)
                        for name in PER_PARTITION
                    )
                )
            return False

        assert await wait_for(handed_over, 90, interval_s=1.0), deployment.log_tail()
    finally:
        deployment.stop_all()


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_a_worker_joining_mid_backlog_leaves_every_event_applied_once(
    kafka_broker: Any, tmp_path: Any, store: str
) -> None:
    """A second worker joins while the first applies a backlog: the revoke may
    cut a batch in flight (the fence abandons it, the new owner reads it
    again). Neither worker crashes, and the changelog ends with every user's
    state counting each event once: no zombie write of the first worker
    lands after the new owner's."""
    deployment = Deployment(
        kafka_broker.url, tmp_path, ENGAGEMENT_STORE=store, ENGAGEMENT_INGEST="batch"
    )
    await deployment.create_topics()
    users = [f"join{i}" for i in range(200)]
    per_user = 20
    first = await deployment.start_worker("w0")
    try:
        base = now_ms() - per_user
        backlog = [event(u, f"{u}-{n}", base + n) for n in range(per_user) for u in users]
        await produce(deployment.bootstrap, deployment.settings.topic_events, backlog)
        second = await deployment.start_worker("w1")
        workers = (first, second)

        async def settled() -> bool:
            states = await latest_states(deployment)
            return all(u in states and states[u].events_total >= per_user for u in users)

        assert await wait_for(settled, 240, interval_s=2.0), deployment.log_tail()
        await asyncio.sleep(3.0)  # a late write would land by now
        states = await latest_states(deployment)
        assert {u: states[u].events_total for u in users} == dict.fromkeys(users, per_user)
        for worker in workers:
            assert worker.proc is not None and worker.proc.poll() is None, deployment.log_tail()
        assert "did not finish publishing" not in deployment.log_tail(400)
    finally:
        deployment.stop_all()
