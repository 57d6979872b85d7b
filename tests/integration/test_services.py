"""The services tests and local runs depend on start, answer, and leave no
process behind when stopped."""

from __future__ import annotations

import socket
import uuid

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from support.kafka_util import consume_all, create_topics

from agents.stack.kafka_broker import KafkaBroker
from agents.stack.processes import group_alive, pid_alive
from agents.stack.services import EmbeddedBroker, RedisServer, kafka_answers
from tables.errors import ServiceStartError

pytestmark = pytest.mark.integration

Broker = EmbeddedBroker | KafkaBroker


def _topic() -> str:
    return f"svc-{uuid.uuid4().hex[:12]}"


async def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> int:
    """Produce one record, acknowledged by all replicas; returns its partition."""
    async with AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all") as producer:
        meta = await producer.send_and_wait(topic, value, key=key, headers=[("kind", b"probe")])
    partition: int = meta.partition
    return partition


async def test_broker_returns_the_record_it_was_given(any_broker: Broker) -> None:
    topic = _topic()
    await create_topics(any_broker.bootstrap, {topic: 3}, {"cleanup.policy": "delete"})

    partition = await _produce(any_broker.bootstrap, topic, b"user-1", b"hello")
    records = await consume_all(any_broker.bootstrap, topic, timeout_s=20, expected=1)

    assert [(r.key, r.value, r.partition, r.headers) for r in records] == [
        (b"user-1", b"hello", partition, (("kind", b"probe"),))
    ]
    assert records[0].offset == 0
    assert records[0].timestamp_ms > 0


def test_broker_urls_name_the_local_port(any_broker: Broker) -> None:
    assert any_broker.bootstrap == f"127.0.0.1:{any_broker.port}"
    assert any_broker.url == f"kafka://127.0.0.1:{any_broker.port}"


def test_stopped_embedded_broker_leaves_no_process() -> None:
    with EmbeddedBroker() as broker:
        pid = broker.pid
        assert pid is not None and pid_alive(pid)
        broker.stop()

        assert not group_alive(pid)
        assert not kafka_answers(broker.bootstrap)
        assert broker.pid is None


async def test_kafka_restart_and_kill9_keep_data_and_leave_no_old_jvm(
    kafka_broker: KafkaBroker,
) -> None:
    topic = _topic()
    await create_topics(kafka_broker.bootstrap, {topic: 1}, {"cleanup.policy": "delete"})
    await _produce(kafka_broker.bootstrap, topic, b"a", b"before restart")
    first_pid = kafka_broker.pid
    assert first_pid is not None

    kafka_broker.restart()
    assert not group_alive(first_pid)
    await _produce(kafka_broker.bootstrap, topic, b"b", b"before kill -9")
    second_pid = kafka_broker.pid
    assert second_pid is not None and second_pid != first_pid

    kafka_broker.kill9()
    assert not group_alive(second_pid)
    assert not kafka_answers(kafka_broker.bootstrap)
    kafka_broker.start()

    records = await consume_all(kafka_broker.bootstrap, topic, timeout_s=30, expected=2)
    assert [r.value for r in records] == [b"before restart", b"before kill -9"]


async def test_redis_answers_set_and_get(redis_server: RedisServer) -> None:
    client = aioredis.from_url(redis_server.url)
    try:
        await client.set("svc:probe", b"1")
        assert await client.get("svc:probe") == b"1"
    finally:
        await client.aclose()


async def test_redis_restarts_empty_on_the_same_port() -> None:
    with RedisServer() as server:
        client = aioredis.from_url(server.url, socket_timeout=2)
        try:
            await client.set("svc:probe", b"1")
            pid = server.pid
            assert pid is not None

            server.stop()
            assert not group_alive(pid)
            with pytest.raises(RedisConnectionError):
                await client.get("svc:probe")

            server.start()
            assert server.pid != pid
            assert await client.get("svc:probe") is None  # no persistence
            await client.set("svc:probe", b"2")
            assert await client.get("svc:probe") == b"2"
        finally:
            await client.aclose()


async def test_frozen_redis_times_out_until_thawed() -> None:
    with RedisServer() as server:
        client = aioredis.from_url(server.url, socket_timeout=0.5)
        try:
            await client.set("svc:probe", b"1")
            server.freeze()
            with pytest.raises(RedisTimeoutError):
                await client.get("svc:probe")
            server.thaw()
            assert await client.get("svc:probe") == b"1"
        finally:
            await client.aclose()


def test_service_that_cannot_bind_reports_its_log() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = RedisServer(port=taken.getsockname()[1], start_timeout_s=5)
        try:
            with pytest.raises(ServiceStartError, match=r"(?i)address already in use"):
                server.start()
            assert server.pid is None
        finally:
            server.close()
