"""``engagement bench``: every figure of the event path in ONE run, same broker, same data.

Figures, for each of two traffic shapes (``agents.bench.shapes``: uniform and
sessions), each on its own topic: the raw aiokafka ceiling, the worker end to
end on ``memory://`` and on ``rocksdb://`` and their ratios to the ceiling.
On the uniform shape also: stream ingest, two workers, a naive Faust agent
(one table write per event); and offline replay,
state bytes per user (serialised and resident), the cost of a clock tick with
none and with 10k users due among 1M, signal latency after due + lateness,
and pipelined Redis writes. It measures; it asserts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any, Final

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from agents.bench.shapes import shape_events, uniform_events
from agents.stack.services import EmbeddedBroker, KafkaBroker, RedisServer
from agents.stack.worker_process import WorkerProcess
from streams.decode import id_hash, partition_for
from streams.records import Signal
from streams.risk_params import load_risk_model
from streams.settings import load_settings
from streams.topics import ensure_topics
from tables.engine import DictStore, PartitionEngine
from tables.lifecycle import STAGE_ACTIVE
from tables.model import ModelConfig, ModelEvent
from tables.state import UserState, pack_state
from tables.thresholds import ThresholdPolicy

DAY_MS = 86_400_000
PARTITIONS = 8


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


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def make_events(size: BenchSize, start_ms: int) -> list[tuple[bytes, bytes, int]]:
    """``(key, value, partition)`` of the uniform shape (``agents.bench.shapes``)."""
    return uniform_events(size.events, size.users, start_ms, PARTITIONS)


async def produce_fast(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes, int]]
) -> float:
    """Produce with ``send_batch`` per partition; returns events/s."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20)
    await producer.start()
    started = time.perf_counter()
    try:
        batches: dict[int, Any] = {}
        pending = []
        for key, value, partition in records:
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        for partition, batch in batches.items():
            pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return len(records) / (time.perf_counter() - started)


async def ceiling(bootstrap: str, topic: str, expected: int) -> float:
    """Raw aiokafka getmany + msgspec decode + a trivial per-user update: events/s."""
    rate, _cpu_s = await ceiling_cost(bootstrap, topic, expected)
    return rate


async def ceiling_cost(bootstrap: str, topic: str, expected: int) -> tuple[float, float]:
    """``ceiling``'s events/s and the CPU seconds this process spent meanwhile."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    decoder = msgspec.json.Decoder()
    last_seen: dict[str, int] = {}
    seen = 0
    started = cpu_started = 0.0
    idle_since = time.monotonic()
    try:
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if batches:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 30:
                raise RuntimeError(f"ceiling: only {seen} of {expected} events arrived")
            if not started and batches:
                started = time.perf_counter()
                cpu_started = time.process_time()
            for records in batches.values():
                for record in records:
                    event = decoder.decode(record.value)
                    user = event.get("user_id")
                    if user is None:
                        continue  # a worker's clock tick, once a worker has run
                    if event["ts"] > last_seen.get(user, 0):
                        last_seen[user] = event["ts"]
                    seen += 1
        return seen / (time.perf_counter() - started), time.process_time() - cpu_started
    finally:
        await consumer.stop()


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def worker_rate(
    broker_url: str, run_dir: Path, topics: dict[str, str], expected: int, extra_env: dict[str, str]
) -> tuple[float, WorkerProcess]:
    """Start a worker on a pre-filled topic; events/s from first to last event applied."""
    rate, processes, _cpu_s = await workers_rate(
        broker_url, run_dir, topics, expected, extra_env, 1
    )
    return rate, processes[0]


def _cpu_s(process: WorkerProcess) -> float:
    """CPU seconds (user + system) the process has used, from /proc."""
    if process.proc is None:
        return 0.0
    fields = Path(f"/proc/{process.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def workers_rate(
    broker_url: str,
    run_dir: Path,
    topics: dict[str, str],
    expected: int,
    extra_env: dict[str, str],
    count: int,
) -> tuple[float, list[WorkerProcess], float]:
    """``count`` workers of one new group on a pre-filled topic: events/s from the
    first to the last event applied by any of them (a rebalance included), and
    the CPU seconds the workers used meanwhile (which a busy machine does not
    stretch as it stretches the wall time)."""
    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    shared = {
        "ENGAGEMENT_BROKER": broker_url,
        "ENGAGEMENT_PARTITIONS": str(PARTITIONS),
        "ENGAGEMENT_APP_ID": app_id,
        "ENGAGEMENT_HOLDOUT_SALT": uuid.uuid4().hex,
        "ENGAGEMENT_ERASURE_SALT": uuid.uuid4().hex,
        "ENGAGEMENT_CLOCK_KEYS": f"k1:{secrets.token_hex(32)}",
        "ENGAGEMENT_SESSION_TIMEOUT": "6s",
        "ENGAGEMENT_LOG_LEVEL": "WARNING",
        "ENGAGEMENT_MAX_FUTURE": "3650d",
        **topics,
        **extra_env,
    }
    processes = []
    for n in range(count):
        env = {
            **shared,
            "ENGAGEMENT_WEB_PORT": str(_free_port()),
            "ENGAGEMENT_DATA_DIR": str(run_dir / f"{app_id}-{n}-data"),
        }
        process = WorkerProcess(env, run_dir / f"worker-{app_id}-{n}.log")
        process.start()
        processes.append(process)
    try:
        for process in processes:
            await process.wait_ready(180)
        first = last = cpu_first = cpu_last = 0.0
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            count_now = 0.0
            for process in processes:
                with contextlib.suppress(OSError):
                    text = await asyncio.to_thread(process.metrics_text)
                    count_now += _metric(text, "engagement_events_total{")
            now = time.monotonic()
            if count_now > 0 and not first:
                first = now
                cpu_first = sum(_cpu_s(process) for process in processes)
            if count_now >= expected:
                last = now
                cpu_last = sum(_cpu_s(process) for process in processes)
                break
            await asyncio.sleep(0.1)
        if not last:
            logs = ", ".join(str(process.log_path) for process in processes)
            raise RuntimeError(f"workers did not apply {expected} events; see {logs}")
        # the first poll that saw events is up to one poll late: count from the first poll
    except BaseException:
        for process in processes:
            process.stop()
        raise
    return expected / max(last - first, 1e-6), processes, cpu_last - cpu_first


async def naive_faust_rate(
    broker_url: str, topic: str, expected: int, log_path: Path
) -> float | None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agents.bench.naive",
        broker_url,
        topic,
        str(expected),
        f"naive-{uuid.uuid4().hex[:8]}",
        stdout=asyncio.subprocess.PIPE,
        stderr=log_path.open("ab"),
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60 + expected / 500
        while True:  # the figure line; anything else on stdout goes to the log
            try:
                line = await asyncio.wait_for(
                    proc.stdout.readline(), timeout=max(0.1, deadline - time.monotonic())
                )
            except TimeoutError:
                line = b""
            if not line:
                _say(f"the naive Faust agent gave no figure; see {log_path}")
                return None
            try:  # Faust's spinner may leave terminal codes ahead of the object
                figures = json.loads(line[line.find(b"{") :])
                return float(figures["events"] / (figures["last_s"] - figures["first_s"]))
            except (ValueError, KeyError, TypeError):
                with log_path.open("ab") as log:
                    log.write(b"stdout: " + line)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()


class TimedReplay(msgspec.Struct):
    events: int
    wall_s: float
    cpu_s: float


def replay_in_own_process(path: Path, as_of_ms: int, config: ModelConfig) -> TimedReplay:
    """``replay`` of ``path`` timed in a fresh interpreter, as ``engagement replay``
    runs (start-up not counted), not in the bench's process with its records and
    broker clients. The configuration goes on stdin (it holds the hold-out salt)."""
    code = "import sys; from agents.bench.run import time_replay; time_replay(*sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), str(as_of_ms)],
        input=msgspec.json.encode(config),
        capture_output=True,
        timeout=3_600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the replay's process failed: {done.stderr.decode()[-2000:]}")
    return msgspec.json.decode(done.stdout.splitlines()[-1], type=TimedReplay)


def time_replay(path: str, as_of_ms: str) -> None:
    """The child's side: one ``replay`` call, its figures as one JSON line."""
    from agents.offline.replay import replay

    config = msgspec.json.decode(sys.stdin.buffer.read(), type=ModelConfig)
    started_wall = time.perf_counter()
    started_cpu = time.process_time()
    with open(os.devnull, "w") as scores:
        stats = replay(Path(path), int(as_of_ms), config, scores, progress=False)
    timed = TimedReplay(
        events=stats.events,
        wall_s=time.perf_counter() - started_wall,
        cpu_s=time.process_time() - started_cpu,
    )
    sys.stdout.buffer.write(msgspec.json.encode(timed) + b"\n")


def replay_rate(
    records: list[tuple[bytes, bytes, int]], config: ModelConfig, as_of_ms: int
) -> tuple[TimedReplay, DictStore]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        with path.open("wb") as handle:
            for _key, value, _partition in records:
                handle.write(value + b"\n")
        timed = replay_in_own_process(path, as_of_ms, config)
    if timed.events != len(records):
        raise RuntimeError(f"the replay read {timed.events} events of {len(records)}")
    # the states for the size figures: the same model, in memory
    store = DictStore()
    engine = PartitionEngine(0, config, store)
    decoder = msgspec.json.Decoder()
    for _key, value, _partition in records:
        event = decoder.decode(value)
        engine.on_event(
            ModelEvent(
                event["user_id"],
                id_hash(event["event_id"]),
                event["type"],
                event["ts"],
                event["ts"],
                tenant=event.get("tenant"),
            )
        )
    return timed, store


def state_sizes(store: DictStore) -> tuple[float, float]:
    """Serialised bytes per user, and bytes allocated per user (key + value + dict slot)."""
    states = list(store.states.items())
    serialised = statistics.fmean(len(pack_state(state)) for _user, state in states)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = {user.encode(): pack_state(state) for user, state in states}
    resident = (tracemalloc.get_traced_memory()[0] - before) / len(held)
    tracemalloc.stop()
    del held
    return serialised, resident


def tick_costs(config: ModelConfig, users: int, due: int) -> tuple[float, float]:
    """ms of one clock advance with none due, and with ``due`` users due, among ``users``."""
    store = DictStore()
    base = 1_700_000_000_000
    # Both past their "new" days: only the near users' tier (at risk) falls due
    # at the tick. A user still "new" would become "active" there too: then the
    # tick would judge every user, not ``due`` of them.
    far = UserState(
        first_seen_ms=base, last_seen_ms=base + 30 * DAY_MS, active_days=3, stage=STAGE_ACTIVE
    )
    near = UserState(first_seen_ms=base, last_seen_ms=base, active_days=3, stage=STAGE_ACTIVE)
    for n in range(users):
        store.states[f"u{n}"] = near if n < due else far
    engine = PartitionEngine(0, config, store)
    engine.rebuild_index(store.states.items())
    engine.high_ms = base + config.lateness_ms
    samples = []
    for step in range(20):
        started = time.perf_counter()
        engine.observe(base + config.lateness_ms + 1 + step)
        samples.append(time.perf_counter() - started)
    none_due_ms = statistics.median(samples) * 1000
    started = time.perf_counter()
    emitted = engine.observe(base + config.policy.defaults_ms[0] + config.lateness_ms + 1)
    due_ms = (time.perf_counter() - started) * 1000
    assert len(emitted) == due and len(engine.take_transitions()) == due
    return none_due_ms, due_ms


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


async def redis_rate(server: RedisServer, store: DictStore, config: ModelConfig) -> float:
    """Users/s the Redis mirror writes: its own client, fields and pipelines, over
    the replay's user states (steady state: no ZREM for users not at risk)."""
    from agents.worker.redis_mirror import (
        BATCH_USERS,
        MirrorKeys,
        redis_client,
        round_trip,
        write_user,
    )
    from agents.worker.user_view import mirror_fields

    client = redis_client(server.url, read_timeout_s=None)
    keys = MirrorKeys(f"bench-{uuid.uuid4().hex[:8]}")
    users = list(store.items())
    clock_ms = max(state.last_seen_ms for _user, state in users)
    started = time.perf_counter()
    for begin in range(0, len(users), BATCH_USERS):
        pipe = client.pipeline(transaction=False)
        for user_id, state in users[begin : begin + BATCH_USERS]:
            fields = mirror_fields(user_id, state, clock_ms, config)
            write_user(pipe, keys, user_id, fields, maybe_member=False)
        await round_trip(pipe.execute())
    rate = len(users) / (time.perf_counter() - started)
    await client.aclose()
    return rate


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
        _say(f"measuring a worker on {store['ENGAGEMENT_STORE']}")
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
    _say("measuring the session shape")
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
        _say("measuring replay")
        timed, store = replay_rate(records, replayed, start_ms + 3_600_000)
        result["replay_risk_model"] = replayed.risk_model
        result["replay_events_per_s"] = round(timed.events / timed.wall_s)
        result["replay_cpu_events_per_s"] = round(timed.events / timed.cpu_s)
        _say("measuring produce")
        result["produce_events_per_s"] = round(
            await produce_fast(broker.bootstrap, settings.topic_events, records)
        )
        _say("measuring the uniform shape")
        uniform = await shape_rates(broker, run_dir, topics, size.events)
        result.update(uniform.figures(""))
        result["replay_vs_ceiling"] = round(timed.events / timed.wall_s / uniform.ceiling, 4)
        rate = uniform.memory
        _say("measuring a worker with stream ingest")
        stream = {**FAR_THRESHOLDS, "ENGAGEMENT_INGEST": "stream"}
        stream_rate, process = await worker_rate(broker.url, run_dir, topics, size.events, stream)
        process.stop()
        result["worker_stream_events_per_s"] = round(stream_rate)
        result.update(await session_shape(broker, redis.url, run_dir, size))
        default_ingest = settings.ingest_path
        default_mode = {**FAR_THRESHOLDS, "ENGAGEMENT_INGEST": default_ingest}
        _say("measuring two workers")
        rate_two, pair, _cpu_s = await workers_rate(
            broker.url, run_dir, topics, size.events, default_mode, 2
        )
        for process in pair:
            process.stop()
        result["two_workers_events_per_s"] = round(rate_two)
        result["two_vs_one_worker"] = round(rate_two / rate, 3)
        _say("measuring the naive Faust agent")
        naive = await naive_faust_rate(
            broker.url, settings.topic_events, size.events, run_dir / "naive-faust.log"
        )
        result["naive_faust_events_per_s"] = None if naive is None else round(naive)
        result["naive_vs_ceiling"] = None if naive is None else round(naive / uniform.ceiling, 4)
        serialised, resident = state_sizes(store)
        result["bytes_per_user"] = round(serialised, 1)
        result["rss_bytes_per_user"] = round(resident, 1)
        _say("measuring redis_writes (the mirror's write path)")
        mirror_per_s = await redis_rate(redis, store, BENCH_MODEL)
        del records, store
        gc.collect()
        none_ms, due_ms = tick_costs(BENCH_MODEL, size.tick_users, size.tick_due)
        small_none_ms, _ = tick_costs(BENCH_MODEL, 1_000, 10)
        result["tick_users"] = size.tick_users
        result["tick_ms_none_due"] = round(none_ms, 4)
        result["tick_ms_none_due_1k_users"] = round(small_none_ms, 4)
        _say("measuring tick_ms_10k_due")
        result["tick_ms_10k_due"] = round(due_ms, 2)
        p50, p99, tick_ms = await signal_latency(
            broker.url, broker.bootstrap, run_dir, size.latency_users, redis.url
        )
        result["signal_latency_p50_ms"] = round(p50)
        _say("measuring signal_latency_p99_ms")
        result["signal_latency_p99_ms"] = round(p99)
        result["signal_latency_target_ms"] = tick_ms + 1000
        result["redis_writes_per_s"] = round(mirror_per_s)
        return result
    finally:
        await asyncio.to_thread(redis.stop)
        await asyncio.to_thread(broker.stop)


def _free_port() -> int:
    from agents.stack.services import free_port

    return free_port()


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
