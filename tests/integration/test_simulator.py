"""The simulator against a real broker: what it counts is what the topic holds."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import msgspec
import pytest
from support.kafka_util import Record, consume_all, create_topics

from agents.simulation.population import Population
from agents.simulation.producer import run_simulator, wall_ms
from agents.stack.services import EmbeddedBroker
from streams.decode import DecodeRules, decode_record, partition_for
from streams.records import DLQ_REASONS
from streams.validate import Rejected
from tables.model import ModelEvent

pytestmark = pytest.mark.integration

PARTITIONS = 4
USERS = 40
SEED = 5
DAY_MS = 200


class RecordingClock:
    """Wall time in ms that remembers its first reading (the simulator's start)."""

    def __init__(self) -> None:
        self.first_ms: int | None = None

    def __call__(self) -> int:
        now = wall_ms()
        if self.first_ms is None:
            self.first_ms = now
        return now


async def _topic(bootstrap: str) -> str:
    topic = f"sim-{uuid.uuid4().hex[:12]}"
    await create_topics(bootstrap, {topic: PARTITIONS}, {"cleanup.policy": "delete"})
    return topic


def _rules(topic: str) -> DecodeRules:
    return DecodeRules(topic=topic, partitions=PARTITIONS)


def _decode(record: Record, rules: DecodeRules) -> Any:
    return decode_record(
        record.key,
        record.value,
        list(record.headers),
        record.partition,
        record.timestamp_ms,
        record.offset,
        rules,
    )


async def test_simulator_sends_the_population_keyed_and_partitioned_by_user(
    embedded_broker: EmbeddedBroker,
) -> None:
    bootstrap = embedded_broker.bootstrap
    topic = await _topic(bootstrap)
    clock = RecordingClock()
    duration_s = 2.0

    stats = await run_simulator(
        bootstrap,
        topic,
        users=USERS,
        day_ms=DAY_MS,
        seed=SEED,
        duration_s=duration_s,
        poison_every=7,
        clock=clock,
    )

    total = stats.events_sent + sum(stats.poison_sent.values())
    records = await consume_all(bootstrap, topic, timeout_s=60, expected=total)
    assert len(records) == total
    rules = _rules(topic)
    valid: list[dict[str, Any]] = []
    rejected: Counter[str] = Counter()
    for record in records:
        decoded = _decode(record, rules)
        if isinstance(decoded, Rejected):
            rejected[decoded.reason] += 1
            continue
        assert isinstance(decoded, ModelEvent)
        assert record.key == decoded.user_id.encode()
        assert record.partition == partition_for(record.key, PARTITIONS)
        assert record.value is not None
        valid.append(msgspec.json.decode(record.value))
    assert stats.users == USERS
    assert rejected == Counter(stats.poison_sent)
    assert set(rejected) == set(DLQ_REASONS)
    assert clock.first_ms is not None
    expected = Population(USERS, SEED, DAY_MS, clock.first_ms).events_between(
        clock.first_ms, clock.first_ms + int(duration_s * 1000)
    )
    key = lambda event: (event["ts"], event["event_id"])  # noqa: E731
    assert sorted(valid, key=key) == expected


async def test_simulator_stops_cleanly_when_asked(embedded_broker: EmbeddedBroker) -> None:
    bootstrap = embedded_broker.bootstrap
    topic = await _topic(bootstrap)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(1.0, stop.set)

    stats = await asyncio.wait_for(
        run_simulator(
            bootstrap, topic, users=USERS, day_ms=DAY_MS, seed=SEED, duration_s=None, stop=stop
        ),
        timeout=30,
    )

    assert stats.events_sent > 0
    records = await consume_all(bootstrap, topic, timeout_s=60, expected=stats.events_sent)
    assert len(records) == stats.events_sent


async def test_cancelled_simulator_delivers_what_it_handed_to_the_producer(
    embedded_broker: EmbeddedBroker,
) -> None:
    bootstrap = embedded_broker.bootstrap
    topic = await _topic(bootstrap)
    clock = RecordingClock()
    task = asyncio.create_task(
        run_simulator(
            bootstrap,
            topic,
            users=USERS,
            day_ms=DAY_MS,
            seed=SEED,
            duration_s=None,
            clock=clock,
        )
    )
    asyncio.get_running_loop().call_later(1.0, task.cancel)

    with pytest.raises(asyncio.CancelledError):
        await task

    records = await consume_all(bootstrap, topic, timeout_s=30, idle_s=2.0)
    assert records
    assert clock.first_ms is not None
    sent = sorted(
        (msgspec.json.decode(r.value) for r in records if r.value is not None),
        key=lambda event: (event["ts"], event["event_id"]),
    )
    timeline = Population(USERS, SEED, DAY_MS, clock.first_ms).events_between(
        clock.first_ms, clock.first_ms + 60_000
    )
    # a prefix of the timeline without holes: nothing handed over was lost
    assert sent == timeline[: len(sent)]
