"""The memory soak: a flood of distinct users through one real worker.

N events, each of a user never seen before, go through the input topic into
one worker process (``memory://`` by default, ``--store rocksdb://``). The
worker's resident memory (``VmRSS`` of its process) is read when it is ready
and idle, and again once it tracks every user; the difference divided by N is
the resident cost of a user. Resident memory is also read when half the
users are in: what the second half adds per user is the marginal cost,
without the fixed growth of buffers and allocator arenas that any flood
brings (input fetches, producer batches). The serialised state per user is the mean
length of the users changelog's latest values (what the table holds per user,
key not counted). Thresholds are far away and the Redis mirror is off, so
the figure is the worker's own state: table, due index, stage and stickiness
counts, and status bookkeeping.

    python -m agents.bench.flood --users 1000000 [--store rocksdb://] [--json]

Measures; asserts nothing. The accounting it reports (users sent, users the
worker tracks, events applied, users in the changelog) is what
tests/integration/test_flood.py checks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Final

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from agents.bench.broker import PARTITIONS, produce_fast
from agents.bench.run import FAR_THRESHOLDS
from agents.ops.redis_sync import read_compacted
from agents.stack.kafka_broker import KafkaBroker
from agents.stack.processes import free_port
from agents.stack.worker_process import WorkerProcess
from streams.decode import partition_for
from streams.settings import load_settings
from streams.topics import ensure_topics

CHUNK_USERS: Final = 200_000
SETTLE_S: Final = 5.0  # after ready, and after the last user: the status flush and gauges
TRACKED_TIMEOUT_S: Final = 7200.0


class FloodResult(msgspec.Struct):
    store: str
    users_sent: int
    users_tracked: int
    events_applied: int
    dlq_records: int
    changelog_users: int
    state_bytes_per_user: float
    state_bytes_max: int
    rss_before_bytes: int
    rss_after_bytes: int
    peak_rss_bytes: int
    rss_bytes_per_user: float
    rss_halfway_bytes: int
    rss_bytes_per_user_second_half: float
    flood_s: float


def say(text: str) -> None:
    print(f"[flood] {text}", file=sys.stderr, flush=True)


def flood_events(first: int, count: int, start_ms: int) -> list[tuple[bytes, bytes, int]]:
    """``(key, value, partition)`` of one event for each of users ``first`` … ``first+count-1``."""
    out = []
    for n in range(first, first + count):
        user = f"f{n:09d}"
        key = user.encode()
        value = (
            f'{{"event_id":"f{n}","user_id":"{user}","type":"view",'
            f'"ts":{start_ms + n % 3_600_000},"tenant":"acme"}}'
        ).encode()
        out.append((key, value, partition_for(key, PARTITIONS)))
    return out


def rss_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` (now) and ``VmHWM`` (the peak) of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(rest.split()[0])
    return out


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


async def _metrics(worker: WorkerProcess) -> str:
    with contextlib.suppress(OSError):
        return await asyncio.to_thread(worker.metrics_text)
    return ""


def worker_env(broker_url: str, store: str, run_dir: Path) -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    return {
        "ENGAGEMENT_BROKER": broker_url,
        "ENGAGEMENT_PARTITIONS": str(PARTITIONS),
        "ENGAGEMENT_APP_ID": f"flood-{tag}",
        **{
            f"ENGAGEMENT_TOPIC_{name}": f"f{tag}.{name.lower()}"
            for name in ("EVENTS", "SIGNALS", "DLQ", "LIFECYCLE", "STATUS", "CONFIG")
        },
        **FAR_THRESHOLDS,
        "ENGAGEMENT_REDIS_URL": "",
        "ENGAGEMENT_STORE": store,
        "ENGAGEMENT_DATA_DIR": str(run_dir / "data"),
        "ENGAGEMENT_HOLDOUT_SALT": uuid.uuid4().hex,
        "ENGAGEMENT_ERASURE_SALT": uuid.uuid4().hex,
        "ENGAGEMENT_CLOCK_KEYS": f"k1:{uuid.uuid4().hex}",
        "ENGAGEMENT_LOG_LEVEL": "WARNING",
        "ENGAGEMENT_WEB_PORT": str(free_port()),
    }


async def flood(
    broker_url: str, bootstrap: str, users: int, store: str, run_dir: Path
) -> FloodResult:
    """Start a worker, flood it with ``users`` new users, measure, stop it."""
    env = worker_env(broker_url, store, run_dir)
    settings = load_settings(**{k: v for k, v in env.items() if k != "ENGAGEMENT_WEB_PORT"})
    await ensure_topics(settings)
    worker = WorkerProcess(env, run_dir / "worker.log")
    worker.start()
    try:
        await worker.wait_ready(300)
        await asyncio.sleep(SETTLE_S)
        if worker.proc is None:
            raise RuntimeError("the worker process did not start")
        pid = worker.proc.pid
        before = rss_kib(pid)["VmRSS"]
        say(f"worker ready at {before * 1024:,} bytes resident; sending {users:,} users")
        started = time.perf_counter()
        start_ms = int(time.time() * 1000) - 3_600_000
        half = users // 2
        await _send(bootstrap, settings.topic_events, 0, half, start_ms)
        await _wait_tracked(worker, half)
        await asyncio.sleep(SETTLE_S)
        halfway = rss_kib(pid)["VmRSS"]
        await _send(bootstrap, settings.topic_events, half, users, start_ms)
        text = await _wait_tracked(worker, users)
        flood_s = time.perf_counter() - started
        await asyncio.sleep(SETTLE_S)
        memory = rss_kib(pid)
        text = await _metrics(worker) or text
    finally:
        worker.stop()
    say(f"reading the users changelog ({users:,} users)")
    blobs = await read_compacted(settings, f"{settings.app_id}-users-changelog")
    sizes = [len(blob) for blob in blobs.values()]
    return FloodResult(
        store=store,
        users_sent=users,
        users_tracked=round(metric_sum(text, "engagement_users_tracked")),
        events_applied=round(metric_sum(text, "engagement_events_total", outcome="applied")),
        dlq_records=round(metric_sum(text, "engagement_dlq_total")),
        changelog_users=len(blobs),
        state_bytes_per_user=round(sum(sizes) / max(len(sizes), 1), 1),
        state_bytes_max=max(sizes, default=0),
        rss_before_bytes=before * 1024,
        rss_after_bytes=memory["VmRSS"] * 1024,
        peak_rss_bytes=memory["VmHWM"] * 1024,
        rss_bytes_per_user=round((memory["VmRSS"] - before) * 1024 / max(users, 1), 1),
        rss_halfway_bytes=halfway * 1024,
        rss_bytes_per_user_second_half=round(
            (memory["VmRSS"] - halfway) * 1024 / max(users - half, 1), 1
        ),
        flood_s=round(flood_s, 1),
    )


async def _send(bootstrap: str, topic: str, first: int, end: int, start_ms: int) -> None:
    """The events of users ``first`` … ``end - 1``, in chunks (bounded memory here)."""
    for chunk_first in range(first, end, CHUNK_USERS):
        chunk = flood_events(chunk_first, min(CHUNK_USERS, end - chunk_first), start_ms)
        await produce_fast(bootstrap, topic, chunk)


async def _wait_tracked(worker: WorkerProcess, users: int) -> str:
    """The metrics text once the worker tracks ``users`` users."""
    deadline = time.monotonic() + TRACKED_TIMEOUT_S
    while time.monotonic() < deadline:
        text = await _metrics(worker)
        if text and metric_sum(text, "engagement_users_tracked") >= users:
            return text
        if worker.proc is not None and worker.proc.poll() is not None:
            break
        await asyncio.sleep(1.0)
    raise RuntimeError(f"the worker did not track {users:,} users; see {worker.log_path}")


async def run(users: int, store: str) -> FloodResult:
    broker = KafkaBroker(heap="-Xmx1g")
    await asyncio.to_thread(broker.start)
    run_dir = Path(tempfile.mkdtemp(prefix="flood-"))
    try:
        return await flood(broker.url, broker.bootstrap, users, store, run_dir)
    finally:
        await asyncio.to_thread(broker.close)
        shutil.rmtree(run_dir, ignore_errors=True)


def _exit_on_term(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds the finally blocks: worker and broker stopped


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_term)
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--store", default="memory://", choices=["memory://", "rocksdb://"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.users, args.store))
    fields: dict[str, Any] = msgspec.to_builtins(result)
    if args.json:
        print(json.dumps(fields))
    else:
        for name, value in fields.items():
            shown = f"{value:,}" if isinstance(value, int | float) else value
            print(f"{name:>22}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
