"""``engagement bench``: every figure of the event path in ONE run, same broker, same data.

Figures, for each of two traffic shapes (``agents.bench.shapes``: uniform and
sessions), each on its own topic: the raw aiokafka ceiling, the worker end to
end on ``memory://`` and on ``rocksdb://`` and their ratios to the ceiling.
On the uniform shape also: stream ingest, two workers, a naive Faust agent
(one table write per event); and offline replay,
state bytes per user (serialised and resident), the cost of a clock tick with
none and with 10k users due among 1M, signal latency after due + lateness
(idle, and under the session shape fed live at 80 % of the worker's rate),
and pipelined Redis writes. It measures; it asserts nothing.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Final

import msgspec
from aiokafka import AIOKafkaConsumer

from agents.bench.broker import PARTITIONS, ceiling_cost, produce_fast, say
from agents.bench.in_process import redis_rate, replay_rate, state_sizes, tick_costs
from agents.bench.loaded_latency import loaded_signal_latency
from agents.bench.shapes import shape_events, uniform_events
from agents.bench.workers import metric_sum, naive_faust_rate, worker_rate, workers_rate
from agents.stack.kafka_broker import KafkaBroker
from agents.stack.services import EmbeddedBroker, RedisServer
from streams.decode import partition_for
from streams.records import Signal
from streams.risk_params import load_risk_model
from streams.settings import load_settings
from streams.topics import ensure_topics
from tables.model import ModelConfig
from tables.thresholds import ThresholdPolicy

DAY_MS = 86_400_000


class BenchSize(msgspec.Struct, frozen=True):
    events: int
    users: int
    tick_users: int
    tick_due: int
    latency_users: int


FULL = BenchSize(
    events=1_000_000, users=100_000, tick_users=1_000_000, tick_due=10_000, latency_users=2_000
)
QUICK = BenchSize(
    events=100_000, users=10_000, tick_users=100_000, tick_due=10_000, latency_users=500
)


# the model the replay, the state sizes, the tick and Redis figures run
BENCH_MODEL: Final = ModelConfig(
    policy=ThresholdPolicy((7 * DAY_MS, 14 * DAY_MS, 30 * DAY_MS), DAY_MS, 90 * DAY_MS),
    lateness_ms=600_000,
    day_ms=DAY_MS,
    horizon_ms=30 * DAY_MS,
    holdout_salt="bench",
)

# thresholds far away: nothing falls due while a worker is measured
FAR_THRESHOLDS: Final = {
    "ENGAGEMENT_AT_RISK": "3650d",
    "ENGAGEMENT_DORMANT": "3651d",
    "ENGAGEMENT_CHURNED": "3652d",
    "ENGAGEMENT_THRESHOLD_MAX": "3660d",
}


def fresh_topics(redis_url: str) -> dict[str, str]:
    """Settings naming a new set of topics (a random tag) and the Redis to use."""
    tag = uuid.uuid4().hex[:6]
    topics = {
        f"ENGAGEMENT_TOPIC_{name}": f"b{tag}.{name.lower()}"
        for name in ("EVENTS", "SIGNALS", "DLQ", "LIFECYCLE", "STATUS", "CONFIG")
    }
    return {**topics, "ENGAGEMENT_REDIS_URL": redis_url}


def make_events(size: BenchSize, start_ms: int) -> list[tuple[bytes, bytes, int]]:
    """``(key, value, partition)`` of the uniform shape (``agents.bench.shapes``)."""
    return uniform_events(size.events, size.users, start_ms, PARTITIONS)


async def signal_latency(
    broker_url: str, bootstrap: str, run_dir: Path, users: int, redis_url: str
) -> tuple[float, float, int]:
    """p50/p99 ms from due + lateness to the signal record's timestamp, when caught up."""
    tag = uuid.uuid4().hex[:6]
    topics = {
        "ENGAGEMENT_TOPIC_EVENTS": f"lat{tag}.events",
        "ENGAGEMENT_TOPIC_SIGNALS": f"lat{tag}.signals",
        "ENGAGEMENT_TOPIC_DLQ": f"lat{tag}.dlq",
        "ENGAGEMENT_TOPIC_LIFECYCLE": f"lat{tag}.lifecycle",
        "ENGAGEMENT_TOPIC_STATUS": f"lat{tag}.status",
        "ENGAGEMENT_TOPIC_CONFIG": f"lat{tag}.config",
    }
    settings = load_settings(broker=broker_url, partitions=PARTITIONS, **topics)
    await ensure_topics(settings)
    lateness_ms, tick_ms = 1000, 1000
    env = {
        "ENGAGEMENT_AT_RISK": "4s",
        "ENGAGEMENT_DORMANT": "1h",
        "ENGAGEMENT_CHURNED": "2h",
        "ENGAGEMENT_THRESHOLD_MIN": "1s",
        "ENGAGEMENT_LATENESS": f"{lateness_ms}ms",
        "ENGAGEMENT_TICK_INTERVAL": f"{tick_ms}ms",
        "ENGAGEMENT_REDIS_URL": redis_url,
    }
    _rate, process = await worker_rate(broker_url, run_dir, topics, 0, env)
    try:
        now = int(time.time() * 1000)
        records = []
        for n in range(users):
            user = f"lat{n}"
            value = json.dumps(
                {"event_id": f"l{n}", "user_id": user, "type": "login", "ts": now}
            ).encode()
            records.append((user.encode(), value, partition_for(user.encode(), PARTITIONS)))
        await produce_fast(bootstrap, settings.topic_events, records)
        consumer = AIOKafkaConsumer(
            settings.topic_signals,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        decoder = msgspec.json.Decoder(Signal)
        delays: list[float] = []
        deadline = time.monotonic() + 120
        try:
            while len(delays) < users and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for part in batches.values():
                    for record in part:
                        signal = decoder.decode(record.value)
                        delays.append(record.timestamp - (signal.as_of + lateness_ms))
        finally:
            await consumer.stop()
        delays.sort()
        return (
            delays[len(delays) // 2],
            delays[min(len(delays) - 1, int(len(delays) * 0.99))],
            tick_ms,
        )
    finally:
        process.stop()


ROCKSDB: Final = {"ENGAGEMENT_STORE": "rocksdb://", "ENGAGEMENT_INGEST": "batch"}
MEMORY: Final = {"ENGAGEMENT_STORE": "memory://", "ENGAGEMENT_INGEST": "batch"}


class ShapeRates(msgspec.Struct, frozen=True):
    """One traffic shape's figures: events/s, and CPU µs per event."""

    events: int
    ceiling_before: float
    ceiling_after: float
    memory: float
    rocksdb: float
    ceiling_cpu_s: float  # both ceiling reads
    memory_cpu_s: float
    rocksdb_cpu_s: float

    @property
    def ceiling(self) -> float:
        return (self.ceiling_before + self.ceiling_after) / 2

    def figures(self, prefix: str) -> dict[str, Any]:
        return {
            f"{prefix}ceiling_events_per_s": round(self.ceiling),
            f"{prefix}ceiling_after_vs_before": round(self.ceiling_after / self.ceiling_before, 3),
            f"{prefix}worker_events_per_s": round(self.memory),
            f"{prefix}worker_vs_ceiling": round(self.memory / self.ceiling, 4),
            f"{prefix}worker_rocksdb_events_per_s": round(self.rocksdb),
            f"{prefix}worker_rocksdb_vs_ceiling": round(self.rocksdb / self.ceiling, 4),
            f"{prefix}rocksdb_vs_memory": round(self.rocksdb / self.memory, 3),
            f"{prefix}ceiling_cpu_us_per_event": self._us(self.ceiling_cpu_s / 2),
            f"{prefix}worker_cpu_us_per_event": self._us(self.memory_cpu_s),
            f"{prefix}worker_rocksdb_cpu_us_per_event": self._us(self.rocksdb_cpu_s),
            f"{prefix}worker_cpu_vs_ceiling": round(self.ceiling_cpu_s / 2 / self.memory_cpu_s, 4),
            f"{prefix}rocksdb_cpu_vs_memory": round(self.memory_cpu_s / self.rocksdb_cpu_s, 3),
        }

    def _us(self, cpu_s: float) -> float:
        return round(cpu_s / self.events * 1e6, 2)


async def shape_rates(
    broker: EmbeddedBroker | KafkaBroker, run_dir: Path, topics: dict[str, str], events: int
) -> ShapeRates:
    """The raw ceiling, one worker (batch ingest) on ``memory://``, one on
    ``rocksdb://``, and the ceiling again, on one pre-filled topic. Ratios use
    the mean of the two ceilings: on a shared machine whose speed drifts, the
    worker is compared with the ceiling around it."""
    topic = topics["ENGAGEMENT_TOPIC_EVENTS"]
    before, cpu_before = await ceiling_cost(broker.bootstrap, topic, events)
    rates, cpu = [], []
    for store in (MEMORY, ROCKSDB):
        say(f"measuring a worker on {store['ENGAGEMENT_STORE']}")
        rate, processes, cpu_s = await workers_rate(
            broker.url, run_dir, topics, events, {**FAR_THRESHOLDS, **store}, 1
        )
        processes[0].stop()
        rates.append(rate)
        cpu.append(cpu_s)
    after, cpu_after = await ceiling_cost(broker.bootstrap, topic, events)
    return ShapeRates(
        events, before, after, rates[0], rates[1], cpu_before + cpu_after, cpu[0], cpu[1]
    )


async def session_shape(
    broker: EmbeddedBroker | KafkaBroker, redis_url: str, run_dir: Path, size: BenchSize
) -> dict[str, Any]:
    """The session shape (``agents.bench.shapes``) on its own topics."""
    topics = fresh_topics(redis_url)
    settings = load_settings(broker=broker.url, partitions=PARTITIONS, **topics)
    await ensure_topics(settings)
    records = shape_events("session", size.events, size.users, int(time.time() * 1000), PARTITIONS)
    await produce_fast(broker.bootstrap, settings.topic_events, records)
    say("measuring the session shape")
    rates = await shape_rates(broker, run_dir, topics, len(records))
    return {
        "session_users": len({key for key, _value, _partition in records}),
        **rates.figures("session_"),
    }


def replay_model(risk_params: Path | None) -> ModelConfig:
    """``BENCH_MODEL``, scoring with the risk file given (a learned model fitted for its
    day and horizon), or with MBG/NBD's defaults without one."""
    if risk_params is None:
        return BENCH_MODEL
    model = load_risk_model(risk_params, BENCH_MODEL.day_ms, BENCH_MODEL.horizon_ms)
    return msgspec.structs.replace(
        BENCH_MODEL, risk=model.params, learned=model.learned, risk_model=model.version
    )


async def run_bench(
    broker_kind: str, quick: bool, risk_params: Path | None = None
) -> dict[str, Any]:
    size = QUICK if quick else FULL
    replayed = replay_model(risk_params)
    broker: EmbeddedBroker | KafkaBroker = (
        KafkaBroker() if broker_kind == "kafka" else EmbeddedBroker()
    )
    redis = RedisServer()
    await asyncio.to_thread(broker.start)
    await asyncio.to_thread(redis.start)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    result: dict[str, Any] = {
        "broker": broker_kind,
        "events": size.events,
        "users": size.users,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
    }
    try:
        topics = fresh_topics(redis.url)
        settings = load_settings(broker=broker.url, partitions=PARTITIONS, **topics)
        await ensure_topics(settings)
        start_ms = int(time.time() * 1000) - 3_600_000
        records = make_events(size, start_ms)
        # first: it needs no broker, and no worker process shares the two cores yet
        say("measuring replay")
        timed, store = replay_rate(records, replayed, start_ms + 3_600_000)
        result["replay_risk_model"] = replayed.risk_model
        result["replay_events_per_s"] = round(timed.events / timed.wall_s)
        result["replay_cpu_events_per_s"] = round(timed.events / timed.cpu_s)
        say("measuring produce")
        result["produce_events_per_s"] = round(
            await produce_fast(broker.bootstrap, settings.topic_events, records)
        )
        say("measuring the uniform shape")
        uniform = await shape_rates(broker, run_dir, topics, size.events)
        result.update(uniform.figures(""))
        result["replay_vs_ceiling"] = round(timed.events / timed.wall_s / uniform.ceiling, 4)
        rate = uniform.memory
        say("measuring a worker with stream ingest")
        stream = {**FAR_THRESHOLDS, "ENGAGEMENT_INGEST": "stream"}
        stream_rate, process = await worker_rate(broker.url, run_dir, topics, size.events, stream)
        process.stop()
        result["worker_stream_events_per_s"] = round(stream_rate)
        result.update(await session_shape(broker, redis.url, run_dir, size))
        default_ingest = settings.ingest_path
        default_mode = {**FAR_THRESHOLDS, "ENGAGEMENT_INGEST": default_ingest}
        say("measuring two workers")
        rate_two, pair, _cpu_s = await workers_rate(
            broker.url, run_dir, topics, size.events, default_mode, 2
        )
        for process in pair:
            process.stop()
        result["two_workers_events_per_s"] = round(rate_two)
        result["two_vs_one_worker"] = round(rate_two / rate, 3)
        say("measuring the naive Faust agent")
        naive = await naive_faust_rate(
            broker.url, settings.topic_events, size.events, run_dir / "naive-faust.log"
        )
        result["naive_faust_events_per_s"] = None if naive is None else round(naive)
        result["naive_vs_ceiling"] = None if naive is None else round(naive / uniform.ceiling, 4)
        serialised, resident = state_sizes(store)
        result["bytes_per_user"] = round(serialised, 1)
        result["rss_bytes_per_user"] = round(resident, 1)
        say("measuring redis_writes (the mirror's write path)")
        mirror_per_s = await redis_rate(redis, store, BENCH_MODEL)
        del records, store
        gc.collect()
        none_ms, due_ms = tick_costs(BENCH_MODEL, size.tick_users, size.tick_due)
        small_none_ms, _ = tick_costs(BENCH_MODEL, 1_000, 10)
        result["tick_users"] = size.tick_users
        result["tick_ms_none_due"] = round(none_ms, 4)
        result["tick_ms_none_due_1k_users"] = round(small_none_ms, 4)
        say("measuring tick_ms_10k_due")
        result["tick_ms_10k_due"] = round(due_ms, 2)
        p50, p99, tick_ms = await signal_latency(
            broker.url, broker.bootstrap, run_dir, size.latency_users, redis.url
        )
        result["signal_latency_p50_ms"] = round(p50)
        say("measuring signal_latency_p99_ms")
        result["signal_latency_p99_ms"] = round(p99)
        result["signal_latency_target_ms"] = tick_ms + 1000
        say("measuring signal latency under the session shape at 80 % of the worker's rate")
        result.update(
            await loaded_signal_latency(
                broker.url,
                broker.bootstrap,
                run_dir,
                redis.url,
                size.events,
                size.users,
                result["session_worker_events_per_s"],
                worker_rate,
                lambda process: metric_sum(process.metrics_text(), "engagement_events_total{"),
            )
        )
        result["redis_writes_per_s"] = round(mirror_per_s)
        return result
    finally:
        await asyncio.to_thread(redis.stop)
        await asyncio.to_thread(broker.stop)


def format_result(result: dict[str, Any]) -> str:
    lines = [
        f"engagement bench on {result['broker']} broker, {result['events']:,} events, "
        f"{result['users']:,} users ({result['machine']})"
    ]
    for key, value in result.items():
        if key in {"broker", "events", "users", "machine"}:
            continue
        lines.append(
            f"  {key:<28} {value:>14,}" if isinstance(value, int) else f"  {key:<28} {value!s:>14}"
        )
    return "\n".join(lines)


def _exit_on_term(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds the finally blocks that stop what we started


def main(broker: str, quick: bool, as_json: bool, risk_params: Path | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_term)
    result = asyncio.run(run_bench(broker, quick, risk_params))
    print(json.dumps(result) if as_json else format_result(result), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main("embedded", True, False))
