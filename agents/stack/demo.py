"""``engagement demo``: broker + worker + simulated users, signals shown live.

Time is compressed (a "day" lasts one second, thresholds 7/14/30 days) so
every signal kind, reactivations and DLQ records appear within two minutes,
from the simulator's ordinary population. The summary counts every signal
kind of ``tables/vocabulary.py``, the lifecycle transitions by stage, the
status records and the DLQ. ``--record DIR`` also writes every record of the
input, signal, lifecycle, status and DLQ topics to ``DIR/{topic}.jsonl``
(``tests/integration/test_demo.py`` validates them against the schemas).
Everything the demo starts is stopped on Ctrl-C, at ``--duration``, or on error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import msgspec
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from agents.simulation.producer import run_simulator
from agents.stack.kafka_broker import KafkaBroker
from agents.stack.processes import free_port
from agents.stack.services import EmbeddedBroker, RedisServer
from agents.stack.worker_process import WorkerProcess
from streams.records import LifecycleTransition, Signal
from streams.settings import Settings, load_settings
from streams.topics import ensure_topics
from tables.vocabulary import SIGNAL_KINDS

# The compressed-day profile: a "day" of one second. docker-compose.yml runs the
# same values by default (tests/unit/test_compose.py holds them equal).
COMPRESSED_DAY = {
    "ENGAGEMENT_DAY_MS": "1000",
    "ENGAGEMENT_AT_RISK": "7s",
    "ENGAGEMENT_DORMANT": "14s",
    "ENGAGEMENT_CHURNED": "30s",
    "ENGAGEMENT_THRESHOLD_MIN": "1s",
    "ENGAGEMENT_THRESHOLD_MAX": "90s",
    "ENGAGEMENT_LATENESS": "1s",
    "ENGAGEMENT_TICK_INTERVAL": "1s",
    "ENGAGEMENT_STALL_GUARD": "20s",
    "ENGAGEMENT_HORIZON": "30s",
    "ENGAGEMENT_NEW_DAYS": "3",
    "ENGAGEMENT_RESURRECTED_DAYS": "5",
}
DEMO_ENV = {
    **COMPRESSED_DAY,
    # the simulator's sign-ups activate by onboarding_completed (or never): not_activated shows
    "ENGAGEMENT_ACTIVATION_TYPES": "onboarding_completed",
    "ENGAGEMENT_PARTITIONS": "4",
    "ENGAGEMENT_SESSION_TIMEOUT": "6s",
    "ENGAGEMENT_LOG_LEVEL": "WARNING",
}
_signal_decoder = msgspec.json.Decoder(Signal)
_transition_decoder = msgspec.json.Decoder(LifecycleTransition)
COLOURS = {"at_risk": "33", "dormant": "35", "churned": "31", "reactivated": "32"}


def demo_settings(broker_url: str, run_dir: Path) -> tuple[Settings, dict[str, str]]:
    """Settings for the demo worker and the environment that carries them."""
    env = dict(DEMO_ENV)
    env["ENGAGEMENT_BROKER"] = broker_url
    env["ENGAGEMENT_WEB_PORT"] = str(free_port())
    env["ENGAGEMENT_DATA_DIR"] = str(run_dir / "worker-data")
    env["ENGAGEMENT_APP_ID"] = f"engagement-demo-{os.getpid()}"
    base = load_settings(**env).with_generated_secrets()
    assert base.holdout_salt and base.erasure_salt and base.clock_keys
    env["ENGAGEMENT_HOLDOUT_SALT"] = base.holdout_salt.get_secret_value()
    env["ENGAGEMENT_ERASURE_SALT"] = base.erasure_salt.get_secret_value()
    env["ENGAGEMENT_CLOCK_KEYS"] = base.clock_keys.get_secret_value()
    env["ENGAGEMENT_CLOCK_SIGNING_KID"] = base.signing_kid
    return base, env


def _line(signal_record: Signal, started: float, colour: bool) -> str:
    days = signal_record.inactive_ms / 1000
    reasons = ",".join(reason.code for reason in signal_record.reasons)
    extra = ""
    if signal_record.kind == "reactivated":
        extra = f" after {signal_record.tier_reached}"
    text = (
        f"+{time.monotonic() - started:6.1f}s  {signal_record.kind:<11} {signal_record.user_id:<8} "
        f"inactive {days:5.1f}d  risk {signal_record.risk:.2f}  {signal_record.group:<9} "
        f"{reasons}{extra}"
    )
    code = COLOURS.get(signal_record.kind)
    return f"\x1b[{code}m{text}\x1b[0m" if colour and code else text


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


class _Recorder:
    """Every record seen, one JSON line per record in ``{dir}/{topic}.jsonl``."""

    def __init__(self, directory: Path | None) -> None:
        self._directory = directory
        self._files: dict[str, IO[str]] = {}
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    @property
    def enabled(self) -> bool:
        return self._directory is not None

    def write(self, record: Any) -> None:
        if self._directory is None:
            return
        out = self._files.get(record.topic)
        if out is None:
            out = self._files[record.topic] = (self._directory / f"{record.topic}.jsonl").open("w")
        line = {
            "partition": record.partition,
            "offset": record.offset,
            "key_b64": _b64(record.key),
            "value_b64": _b64(record.value),
            "headers": [[name, _b64(value)] for name, value in record.headers or ()],
        }
        out.write(json.dumps(line) + "\n")

    def close(self) -> None:
        for out in self._files.values():
            out.close()


async def _watch(
    bootstrap: str,
    settings: Settings,
    counts: Counter[str],
    started: float,
    stop: asyncio.Event,
    recorder: _Recorder,
) -> None:
    topics = [
        settings.topic_signals,
        settings.topic_dlq,
        settings.topic_lifecycle,
        settings.topic_status,
    ]
    if recorder.enabled:
        topics.append(settings.topic_events)
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    colour = sys.stdout.isatty()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    recorder.write(record)
                    _count(record, tp.topic, settings, counts, started, colour)
    finally:
        await consumer.stop()
        recorder.close()


def _count(
    record: Any, topic: str, settings: Settings, counts: Counter[str], started: float, colour: bool
) -> None:
    """Count one record of a watched topic (and print a signal)."""
    if topic == settings.topic_dlq:
        counts["dlq"] += 1
    elif topic == settings.topic_status:
        counts["status"] += 1
    elif topic == settings.topic_lifecycle:
        with contextlib.suppress(msgspec.DecodeError):
            counts[f"stage:{_transition_decoder.decode(record.value or b'').to_stage}"] += 1
    elif topic == settings.topic_signals:
        try:
            signal_record = _signal_decoder.decode(record.value or b"")
        except msgspec.DecodeError:
            return
        counts[signal_record.kind] += 1
        print(_line(signal_record, started, colour), flush=True)


def summary_line(events: int, poison: int, counts: Counter[str]) -> str:
    """The last line of a demo: what went in and every kind of what came out."""
    stages = sorted((key[6:], n) for key, n in counts.items() if key.startswith("stage:"))
    return (
        f"summary: events in {events}, poison sent {poison}, DLQ {counts['dlq']}, signals: "
        + ", ".join(f"{kind} {counts[kind]}" for kind in SIGNAL_KINDS)
        + "; lifecycle: "
        + ", ".join(f"{stage} {n}" for stage, n in stages)
        + f"; status records {counts['status']}"
    )


async def _demo(
    duration_s: float | None, broker_kind: str, users: int, run_dir: Path, record: Path | None
) -> int:
    broker: EmbeddedBroker | KafkaBroker = (
        KafkaBroker(data_dir=run_dir / "kafka") if broker_kind == "kafka" else EmbeddedBroker()
    )
    redis = RedisServer()
    worker: WorkerProcess | None = None
    stop = asyncio.Event()
    watch_stop = asyncio.Event()
    counts: Counter[str] = Counter()
    sim_task: asyncio.Task[Any] | None = None
    watch_task: asyncio.Task[None] | None = None
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        print(f"starting the {broker_kind} broker and redis-server ...", flush=True)
        await asyncio.to_thread(broker.start)
        await asyncio.to_thread(redis.start)
        settings, env = demo_settings(broker.url, run_dir)
        env["ENGAGEMENT_REDIS_URL"] = redis.url
        await ensure_topics(settings)
        worker = WorkerProcess(env, run_dir / "worker.log")
        worker.start()
        print(f"worker starting (log: {run_dir / 'worker.log'}) ...", flush=True)
        await worker.wait_ready()
        started = time.monotonic()
        print(
            f"ready. metrics: http://127.0.0.1:{worker.web_port}/metrics  "
            f"(1 day = 1 s; at_risk 7d, dormant 14d, churned 30d)",
            flush=True,
        )
        watch_task = asyncio.create_task(
            _watch(broker.bootstrap, settings, counts, started, watch_stop, _Recorder(record))
        )
        sim_task = asyncio.create_task(
            run_simulator(
                broker.bootstrap,
                settings.topic_events,
                users=users,
                day_ms=settings.day_ms,
                seed=7,
                duration_s=None,
                poison_every=400,
                stop=stop,
            )
        )
        if duration_s is None:
            await stop.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=duration_s)
        stop.set()
        sim_stats = await sim_task
        # let the worker drain what the simulator sent (bounded), then stop watching
        poison_total = sum(sim_stats.poison_sent.values())
        drain_deadline = time.monotonic() + 60
        if counts["dlq"] < poison_total:
            print("waiting for the worker to catch up ...", flush=True)
        while counts["dlq"] < poison_total and time.monotonic() < drain_deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        watch_stop.set()
        await watch_task
        print("\n" + summary_line(sim_stats.events_sent, poison_total, counts), flush=True)
        if worker is not None:
            with contextlib.suppress(OSError):
                print(growth_line(await asyncio.to_thread(worker.metrics_text)), flush=True)
        return 0
    finally:
        stop.set()
        watch_stop.set()
        for task in (sim_task, watch_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if worker is not None:
            await asyncio.to_thread(worker.stop)
        await asyncio.to_thread(redis.stop)
        await asyncio.to_thread(broker.stop)
        print("stopped broker, worker and redis-server.", flush=True)


def growth_line(metrics_text: str) -> str:
    """The previous period's growth accounting and quick ratio, from a worker's gauges."""
    kinds: Counter[str] = Counter()
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "engagement_growth_users" and sample.labels.get("period") == "1":
                kinds[sample.labels["kind"]] += int(sample.value)
    churned = kinds["churned"]
    quick = f"{(kinds['new'] + kinds['resurrected']) / churned:.2f}" if churned else "n/a"
    return (
        f"previous cohort period: new {kinds['new']}, retained {kinds['retained']}, "
        f"resurrected {kinds['resurrected']}, churned {churned}, quick ratio {quick}"
    )


def run_demo(duration_s: float | None, broker: str, users: int, record: Path | None = None) -> int:
    run_root = Path("run")
    run_root.mkdir(exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="demo-", dir=run_root)).resolve()
    return asyncio.run(_demo(duration_s, broker, users, run_dir, record))
