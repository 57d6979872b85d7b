"""Signal latency under load: the session shape fed live at a share of a worker's rate.

One worker (``memory://``, the Redis mirror on, the default tick interval)
starts on an empty topic; the session shape's events (``agents.bench.shapes``)
are then produced in their order at ``rate_per_s``, each stamped with the
wall time of its send (less how late it was in the shape, so late events stay
late). Every user's at-risk tier falls due a few seconds after its last event,
so signals fall due all through the load. The latency of a signal is its
record's timestamp on the signals topic minus its due time plus the
lateness; only signals due before the load ends count.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agents.bench.shapes import shape_events
from streams.records import Signal
from streams.settings import load_settings
from streams.topics import ensure_topics

LOAD_SHARE: Final = 0.8  # of the worker's measured session rate
SLICE_S: Final = 0.05  # the producer sends what is due every slice
LATENESS_MS: Final = 1000
AT_RISK: Final = "4s"
SETTLE_S: Final = 5.0  # after the load's last due signal could be sent
CATCH_UP_MAX_S: Final = 600.0


async def _pace(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes, int]], rate_per_s: float
) -> tuple[float, float]:
    """Produce ``records`` at ``rate_per_s``, timestamps rewritten to the send time;
    returns (start, end) wall seconds."""
    decode, encode = msgspec.json.decode, msgspec.json.encode
    newest_ms = 0
    late_by: list[int] = []
    for _key, value, _partition in records:
        ts_ms = decode(value)["ts"]
        newest_ms = max(newest_ms, ts_ms)
        late_by.append(newest_ms - ts_ms)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5)
    await producer.start()
    started = time.time()
    sent = 0
    pending = []
    try:
        while sent < len(records):
            due = min(len(records), int((time.time() - started) * rate_per_s) + 1)
            now_ms = int(time.time() * 1000)
            batches: dict[int, Any] = {}
            for n in range(sent, due):
                key, value, partition = records[n]
                event = decode(value)
                event["ts"] = now_ms - late_by[n]
                batch = batches.get(partition)
                if batch is None:
                    batch = batches[partition] = producer.create_batch()
                if batch.append(key=key, value=encode(event), timestamp=None) is None:
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = batches[partition] = producer.create_batch()
                    batch.append(key=key, value=encode(event), timestamp=None)
            for partition, batch in batches.items():
                pending.append(await producer.send_batch(batch, topic, partition=partition))
            sent = due
            await asyncio.sleep(SLICE_S)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return started, time.time()


async def _caught_up_s(applied: Callable[[], float], events: int) -> float:
    """Seconds from now until the worker has applied ``events`` events."""
    started = time.monotonic()
    while time.monotonic() - started < CATCH_UP_MAX_S:
        with contextlib.suppress(OSError):
            if await asyncio.to_thread(applied) >= events:
                break
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def _collect(
    bootstrap: str, topic: str, delays: list[tuple[int, int]], stop: asyncio.Event
) -> None:
    """(due + lateness, record timestamp) ms of every signal until ``stop``."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    decoder = msgspec.json.Decoder(Signal)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            for part in batches.values():
                for record in part:
                    signal = decoder.decode(record.value)
                    delays.append((signal.as_of + LATENESS_MS, record.timestamp))
    finally:
        await consumer.stop()


async def loaded_signal_latency(
    broker_url: str,
    bootstrap: str,
    run_dir: Path,
    redis_url: str,
    events: int,
    users: int,
    worker_rate_per_s: float,
    start_worker: Any,
    events_applied: Callable[[Any], float],
) -> dict[str, Any]:
    """The figures ``loaded_*``; ``start_worker(broker_url, run_dir, topics, expected,
    env)`` starts a ready worker (``agents.bench.run.worker_rate``) and
    ``events_applied(process)`` reads how many events it has applied."""
    tag = uuid.uuid4().hex[:6]
    topics = {
        "ENGAGEMENT_TOPIC_EVENTS": f"load{tag}.events",
        "ENGAGEMENT_TOPIC_SIGNALS": f"load{tag}.signals",
        "ENGAGEMENT_TOPIC_DLQ": f"load{tag}.dlq",
        "ENGAGEMENT_TOPIC_LIFECYCLE": f"load{tag}.lifecycle",
        "ENGAGEMENT_TOPIC_STATUS": f"load{tag}.status",
        "ENGAGEMENT_TOPIC_CONFIG": f"load{tag}.config",
    }
    settings = load_settings(broker=broker_url, partitions=8, **topics)
    await ensure_topics(settings)
    tick_ms = settings.tick_interval_ms  # the default
    env = {
        "ENGAGEMENT_AT_RISK": AT_RISK,
        "ENGAGEMENT_DORMANT": "1h",
        "ENGAGEMENT_CHURNED": "2h",
        "ENGAGEMENT_THRESHOLD_MIN": "1s",
        "ENGAGEMENT_LATENESS": f"{LATENESS_MS}ms",
        "ENGAGEMENT_REDIS_URL": redis_url,
    }
    records = shape_events("session", events, users, int(time.time() * 1000), 8)
    rate_per_s = worker_rate_per_s * LOAD_SHARE
    _rate, process = await start_worker(broker_url, run_dir, topics, 0, env)
    delays: list[tuple[int, int]] = []
    stop = asyncio.Event()
    collector = asyncio.create_task(_collect(bootstrap, settings.topic_signals, delays, stop))
    try:
        started, ended = await _pace(bootstrap, settings.topic_events, records, rate_per_s)
        behind_s = await _caught_up_s(lambda: events_applied(process), len(records))
        await asyncio.sleep(max(0.0, tick_ms / 1000 + SETTLE_S - behind_s))
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await collector
        process.stop()
    end_ms = int(ended * 1000)
    within = sorted(sent - due for due, sent in delays if due <= end_ms)
    if not within:
        raise RuntimeError("no signal fell due during the load")
    return {
        "loaded_rate_events_per_s": round(len(records) / (ended - started)),
        "loaded_rate_vs_worker": round(len(records) / (ended - started) / worker_rate_per_s, 3),
        "loaded_worker_behind_at_end_s": round(behind_s, 1),
        "loaded_signals": len(within),
        "loaded_signal_latency_p50_ms": within[len(within) // 2],
        "loaded_signal_latency_p99_ms": within[min(len(within) - 1, int(len(within) * 0.99))],
        "loaded_signal_latency_target_ms": tick_ms + 1000,
    }
