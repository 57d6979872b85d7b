"""Send the simulated population to Kafka in real time, or write it as JSON Lines.

Events are keyed by the UTF-8 user id and partitioned by aiokafka's default
partitioner (murmur2 of the key, as the Java client and the contract). Each
loop step sends the population's events for ``[last, now)`` of simulated time,
which is wall time at ``speed`` 1; at another speed event time drifts away
from broker time, which the engine caps by the append time.

With ``poison_every`` N, one bad record follows every N events, cycling
through every DLQ reason a producer can cause: the population's
``POISON_REASONS``, then ``wrong_partition`` (a valid event sent to a
partition its key does not hash to; skipped on a one-partition topic) and
``bad_signature`` (a ``$tick`` with the control header and a forged
signature), which need the topic and are built here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec
from aiokafka import AIOKafkaProducer

from agents.simulation.habits import user_id_of
from agents.simulation.population import (
    CALLER_POISON_REASONS,
    POISON_REASONS,
    PoisonRecord,
    Population,
    poison_record,
)
from streams.decode import partition_for
from streams.records import CONTROL_HEADER
from tables.errors import ConfigurationError

log = logging.getLogger(__name__)

STEP_S: Final = 0.1
LINGER_MS: Final = 20
PROGRESS_EVERY_S: Final = 10.0
PRODUCER_POISON_REASONS: Final = POISON_REASONS + CALLER_POISON_REASONS
# A kid a deployment may well use, so the tick fails on its signature, not its kid.
FORGED_KID: Final = "k1"


class SimStats(msgspec.Struct):
    """What one simulator run sent."""

    users: int
    events_sent: int = 0
    poison_sent: dict[str, int] = msgspec.field(default_factory=dict)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def misrouted_event(
    index: int, seed: int, now_ms: int, partitions: int
) -> tuple[bytes, bytes, int]:
    """A valid event and a partition its key does not hash to: ``wrong_partition``."""
    if partitions < 2:
        raise ConfigurationError("wrong_partition needs a topic with at least two partitions")
    user = user_id_of(index % 1000)
    value = msgspec.json.encode(
        {"event_id": f"misrouted-{seed}-{index}", "user_id": user, "type": "view", "ts": now_ms}
    )
    right = partition_for(user.encode(), partitions)
    return user.encode(), value, (right + 1) % partitions


def forged_tick(now_ms: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A far-future ``$tick`` with the control header and a made-up signature:
    ``bad_signature``. A forger who could pass would flag every user at once."""
    value = msgspec.json.encode(
        {
            "type": "$tick",
            "wall_ms": now_ms + 365 * 86_400_000,
            "events_seen_append_ms": now_ms + 365 * 86_400_000,
            "kid": FORGED_KID,
            "sig": "0" * 64,
        }
    )
    return value, [(CONTROL_HEADER, b"tick")]


async def run_simulator(
    bootstrap: str,
    topic: str,
    *,
    users: int,
    day_ms: int,
    seed: int,
    duration_s: float | None,
    poison_every: int = 0,
    stop: asyncio.Event | None = None,
    speed: float = 1.0,
    client_options: Mapping[str, Any] | None = None,
    clock: Callable[[], int] = wall_ms,
) -> SimStats:
    """Produce the population's events until ``duration_s`` passes, ``stop`` is set
    or the task is cancelled; the producer is flushed and closed in every case.

    ``client_options`` are extra ``AIOKafkaProducer`` arguments (TLS, SASL).
    """
    if speed <= 0:
        raise ConfigurationError(f"speed must be positive: {speed}")
    if poison_every < 0:
        raise ConfigurationError(f"poison_every must not be negative: {poison_every}")
    stop = stop if stop is not None else asyncio.Event()
    start_ms = clock()
    population = Population(users, seed, day_ms, start_ms)
    stats = SimStats(users=users)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=LINGER_MS,
        acks="all",
        **dict(client_options or {}),
    )
    try:
        await producer.start()
        partitions = len(await producer.partitions_for(topic))
        sender = _Sender(producer, topic, seed, poison_every, partitions, stats, clock)
        started = time.monotonic()
        last_progress = started
        sim_last_ms = start_ms
        while True:
            elapsed_s = time.monotonic() - started
            if duration_s is not None:
                elapsed_s = min(elapsed_s, duration_s)
            sim_now_ms = start_ms + int(elapsed_s * speed * 1000)
            await sender.send_events(population.events_between(sim_last_ms, sim_now_ms))
            sim_last_ms = sim_now_ms
            if duration_s is not None and elapsed_s >= duration_s:
                break
            if time.monotonic() - last_progress >= PROGRESS_EVERY_S:
                last_progress = time.monotonic()
                log.info(
                    "simulator: %d events, %d poison, day %d",
                    stats.events_sent,
                    sum(stats.poison_sent.values()),
                    population.day_of(sim_now_ms),
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STEP_S)
            if stop.is_set():
                break
        await producer.flush()
    finally:
        await producer.stop()
    return stats


class _Sender:
    """Sends one step's events, slipping in poison, and counts what was delivered."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        seed: int,
        poison_every: int,
        partitions: int,
        stats: SimStats,
        clock: Callable[[], int],
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._seed = seed
        self._poison_every = poison_every
        self._reasons = tuple(
            reason
            for reason in PRODUCER_POISON_REASONS
            if reason != "wrong_partition" or partitions > 1
        )
        self._partitions = partitions
        self._stats = stats
        self._clock = clock
        self._poison_index = 0
        self._since_poison = 0

    async def send_events(self, events: list[dict[str, Any]]) -> None:
        deliveries: list[asyncio.Future[Any]] = []
        poison: dict[str, int] = {}
        for event in events:
            deliveries.append(
                await self._producer.send(
                    self._topic,
                    key=event["user_id"].encode(),
                    value=msgspec.json.encode(event),
                )
            )
            self._since_poison += 1
            if self._poison_every and self._since_poison >= self._poison_every:
                self._since_poison = 0
                reason, delivery = await self._send_poison()
                deliveries.append(delivery)
                poison[reason] = poison.get(reason, 0) + 1
        # Count only what the broker acknowledged; a failed send raises here.
        await asyncio.gather(*deliveries)
        self._stats.events_sent += len(events)
        for reason, count in poison.items():
            self._stats.poison_sent[reason] = self._stats.poison_sent.get(reason, 0) + count

    async def _send_poison(self) -> tuple[str, asyncio.Future[Any]]:
        index = self._poison_index
        self._poison_index += 1
        reason = self._reasons[index % len(self._reasons)]
        now_ms = self._clock()
        if reason == "wrong_partition":
            key, value, partition = misrouted_event(index, self._seed, now_ms, self._partitions)
            delivery = await self._producer.send(
                self._topic, key=key, value=value, partition=partition
            )
        elif reason == "bad_signature":
            value, headers = forged_tick(now_ms)
            delivery = await self._producer.send(self._topic, value=value, headers=headers)
        else:
            # The same reason in each round of the cycle, a fresh variant each time.
            round_ = index // len(self._reasons)
            record: PoisonRecord = poison_record(
                POISON_REASONS.index(reason) + round_ * len(POISON_REASONS),
                self._seed,
                now_ms=now_ms,
            )
            delivery = await self._producer.send(self._topic, key=record.key, value=record.value)
        return reason, delivery


def write_history(
    path: Path | str, users: int, days: int, seed: int, day_ms: int, start_ms: int
) -> int:
    """Write ``days`` days of the population as JSON Lines (``engagement replay``
    input), with the history's producer duplicates and late lines; returns lines."""
    population = Population(users, seed, day_ms, start_ms)
    encoder = msgspec.json.Encoder()
    lines = 0
    with Path(path).open("wb") as out:
        for event in population.history(days):
            out.write(encoder.encode(event))
            out.write(b"\n")
            lines += 1
    return lines
