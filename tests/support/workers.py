"""Start real worker processes for integration and fault tests, isolated by names."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import secrets
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agents.stack.processes import free_port
from agents.stack.worker_process import WorkerProcess
from streams.records import Signal
from streams.settings import Settings, load_settings
from streams.topics import ensure_topics
from tables.state import UserState, unpack_state

FAST = {
    "ENGAGEMENT_DAY_MS": "1000",
    "ENGAGEMENT_AT_RISK": "3s",
    "ENGAGEMENT_DORMANT": "6s",
    "ENGAGEMENT_CHURNED": "9s",
    "ENGAGEMENT_THRESHOLD_MIN": "1s",
    "ENGAGEMENT_LATENESS": "500ms",
    "ENGAGEMENT_TICK_INTERVAL": "500ms",
    "ENGAGEMENT_STALL_GUARD": "15m",
    "ENGAGEMENT_SESSION_TIMEOUT": "6s",
    "ENGAGEMENT_COMMIT_INTERVAL": "500ms",
    "ENGAGEMENT_LOG_LEVEL": "INFO",
}
_counter = itertools.count()
_DIGITS = re.compile(r"\d+")


class Deployment:
    """One isolated deployment: its own topic names, app id, secrets."""

    def __init__(self, broker_url: str, run_dir: Path, **overrides: str) -> None:
        tag = f"t{os.getpid()}x{next(_counter)}x{uuid.uuid4().hex[:6]}"
        env = dict(FAST)
        env.update(
            {
                "ENGAGEMENT_BROKER": broker_url,
                "ENGAGEMENT_PARTITIONS": "4",
                "ENGAGEMENT_APP_ID": f"eng-{tag}",
                "ENGAGEMENT_TOPIC_EVENTS": f"{tag}.events",
                "ENGAGEMENT_TOPIC_SIGNALS": f"{tag}.signals",
                "ENGAGEMENT_TOPIC_LIFECYCLE": f"{tag}.lifecycle",
                "ENGAGEMENT_TOPIC_STATUS": f"{tag}.user-status",
                "ENGAGEMENT_TOPIC_DLQ": f"{tag}.dlq",
                "ENGAGEMENT_TOPIC_CONFIG": f"{tag}.config",
                "ENGAGEMENT_TOPIC_COHORTS": f"{tag}.cohorts",
                "ENGAGEMENT_HOLDOUT_SALT": uuid.uuid4().hex,
                "ENGAGEMENT_ERASURE_SALT": uuid.uuid4().hex,
                "ENGAGEMENT_CLOCK_KEYS": f"k1:{secrets.token_hex(32)}",
                "ENGAGEMENT_CLOCK_SIGNING_KID": "k1",
            }
        )
        env.update(overrides)
        self.env = env
        self.run_dir = run_dir / tag
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.settings: Settings = load_settings(**env)
        self.workers: list[WorkerProcess] = []

    @property
    def bootstrap(self) -> str:
        return self.settings.broker_hosts

    async def create_topics(self) -> None:
        await ensure_topics(self.settings)

    def worker(self, name: str = "w0") -> WorkerProcess:
        env = dict(self.env)
        env["ENGAGEMENT_WEB_PORT"] = str(free_port())
        env["ENGAGEMENT_DATA_DIR"] = str(self.run_dir / f"data-{name}")
        process = WorkerProcess(env, self.run_dir / f"{name}.log")
        self.workers.append(process)
        return process

    async def start_worker(self, name: str = "w0") -> WorkerProcess:
        process = self.worker(name)
        process.start()
        await process.wait_ready(120)
        return process

    def stop_all(self) -> None:
        for process in self.workers:
            process.stop()

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` of each worker's log, a retry repeated with other
        numbers counted instead of repeated (so it does not hide what came before)."""
        out = []
        for path in sorted(self.run_dir.glob("*.log")):
            text = _collapse_repeats(path.read_text(errors="replace").splitlines())[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


def _collapse_repeats(lines: list[str]) -> list[str]:
    kept: list[str] = []
    shape = ""
    repeats = 0
    for line in lines:
        this = _DIGITS.sub("#", line)
        if this == shape:
            repeats += 1
            continue
        if repeats:
            kept.append(f"    (the line above {repeats} more times)")
        kept.append(line)
        shape, repeats = this, 0
    if repeats:
        kept.append(f"    (the line above {repeats} more times)")
    return kept


def now_ms() -> int:
    return int(time.time() * 1000)


def event(
    user_id: str, event_id: str, ts_ms: int, type_: str = "login", **extra: Any
) -> dict[str, Any]:
    return {"event_id": event_id, "user_id": user_id, "type": type_, "ts": ts_ms, **extra}


async def produce(
    bootstrap: str, topic: str, records: Iterable[dict[str, Any] | tuple[bytes | None, bytes]]
) -> int:
    """Produce events (dicts keyed by user_id) or raw ``(key, value)`` pairs."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    count = 0
    try:
        for record in records:
            if isinstance(record, dict):
                key, value = record["user_id"].encode(), json.dumps(record).encode()
            else:
                key, value = record
            await producer.send(topic, key=key, value=value)
            count += 1
        await producer.flush()
    finally:
        await producer.stop()
    return count


async def read_topic(
    bootstrap: str, topic: str, *, until: Any = None, timeout_s: float = 60.0, idle_s: float = 2.0
) -> list[Any]:
    """All records of ``topic``; stops when ``until(records)`` holds, or idle after ``timeout_s``."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=250)
            for part in batch.values():
                records.extend(part)
                last_new = time.monotonic()
            if until is not None and until(records):
                break
            if until is None and records and time.monotonic() - last_new > idle_s:
                break
    finally:
        await consumer.stop()
    return records


def signals_of(records: list[Any]) -> list[Signal]:
    import msgspec

    decoder = msgspec.json.Decoder(Signal)
    return [decoder.decode(record.value) for record in records]


async def latest_states(deployment: Deployment, timeout_s: float = 10.0) -> dict[str, UserState]:
    """The users table as its changelog holds it (last value per key)."""
    topic = f"{deployment.settings.app_id}-users-changelog"
    records = await read_topic(deployment.bootstrap, topic, timeout_s=timeout_s, idle_s=1.5)
    states: dict[str, UserState] = {}
    for record in records:
        if record.value is None:
            states.pop(record.key.decode(), None)
        else:
            states[record.key.decode()] = unpack_state(record.value)
    return states


async def wait_for(predicate: Any, timeout_s: float, interval_s: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return True
        await asyncio.sleep(interval_s)
    return False
