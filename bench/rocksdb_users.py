"""RocksDB-backed users table: N users on one worker, real Kafka, resident memory.

The question (issue 7): can one worker hold 10M users with
``ENGAGEMENT_STORE=rocksdb://`` under 4 GiB resident, the due index included?
Feeding 10M users through the input topic would take the worker about an hour
on this machine, so the users arrive the way a restarted worker meets them:
N packed states (``tables.state.pack_state``, one event each, last seen spread
over the last 30 days) are produced straight into the users table's changelog
topic, and a worker recovers them into RocksDB, rebuilds its due index and
per-stage gauges from the table, and becomes ready. Then its resident memory
is read from /proc (``VmRSS`` now, ``VmHWM`` the peak).

    .venv/bin/python bench/rocksdb_users.py --users 10000000 [--json]

Measures; asserts nothing. No Redis mirror (``ENGAGEMENT_REDIS_URL`` empty):
the figure is the worker's own state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from agents.bench.broker import PARTITIONS, produce_fast
from agents.stack.kafka_broker import KafkaBroker
from agents.stack.processes import free_port
from agents.stack.worker_process import WorkerProcess
from streams.app import create_app
from streams.decode import id_hash, partition_for
from streams.settings import load_settings
from streams.topics import TopicSpec, ensure_topics, topic_specs
from tables.fold import new_state
from tables.model import ModelEvent
from tables.state import pack_state

DAY_MS = 86_400_000
CHUNK_USERS = 200_000


def _say(text: str) -> None:
    print(f"[rocksdb-users] {text}", file=sys.stderr, flush=True)


def _status_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(rest.split()[0])
    return out


def _users_tracked(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("engagement_users_tracked{")
    )


def _states(first: int, count: int, now_ms: int) -> list[tuple[bytes, bytes, int]]:
    rng = random.Random(first)
    out = []
    for n in range(first, first + count):
        user = f"u{n:08d}"
        key = user.encode()
        partition = partition_for(key, PARTITIONS)
        ts_ms = now_ms - rng.randrange(30 * DAY_MS)
        event = ModelEvent(user, id_hash(f"e{n}"), "view", ts_ms, ts_ms, partition, n)
        out.append((key, pack_state(new_state(event, DAY_MS)), partition))
    return out


async def run(users: int) -> dict[str, Any]:
    broker = KafkaBroker(heap="-Xmx1g")
    await asyncio.to_thread(broker.start)
    run_dir = Path(tempfile.mkdtemp(prefix="rocksdb-users-"))
    tag = uuid.uuid4().hex[:6]
    env = {
        "ENGAGEMENT_BROKER": broker.url,
        "ENGAGEMENT_PARTITIONS": str(PARTITIONS),
        "ENGAGEMENT_APP_ID": f"rdb-{tag}",
        "ENGAGEMENT_TOPIC_EVENTS": f"r{tag}.events",
        "ENGAGEMENT_TOPIC_SIGNALS": f"r{tag}.signals",
        "ENGAGEMENT_TOPIC_DLQ": f"r{tag}.dlq",
        "ENGAGEMENT_TOPIC_LIFECYCLE": f"r{tag}.lifecycle",
        "ENGAGEMENT_TOPIC_STATUS": f"r{tag}.status",
        "ENGAGEMENT_TOPIC_CONFIG": f"r{tag}.config",
        "ENGAGEMENT_REDIS_URL": "",
        "ENGAGEMENT_STORE": "rocksdb://",
        "ENGAGEMENT_DATA_DIR": str(run_dir / "data"),
        "ENGAGEMENT_HOLDOUT_SALT": uuid.uuid4().hex,
        "ENGAGEMENT_ERASURE_SALT": uuid.uuid4().hex,
        "ENGAGEMENT_CLOCK_KEYS": f"k1:{secrets.token_hex(32)}",
        "ENGAGEMENT_LOG_LEVEL": "WARNING",
        "ENGAGEMENT_WEB_PORT": str(free_port()),
    }
    result: dict[str, Any] = {"users": users, "store": "rocksdb://", "broker": "kafka"}
    worker: WorkerProcess | None = None
    try:
        settings = load_settings(**{k: v for k, v in env.items() if k != "ENGAGEMENT_WEB_PORT"})
        changelog = create_app(settings).users.changelog_topic.get_topic_name()
        compact = {"cleanup.policy": "compact"}
        await ensure_topics(
            settings, [*topic_specs(settings), TopicSpec(changelog, PARTITIONS, compact)]
        )
        now_ms = int(time.time() * 1000)
        _say(f"producing {users:,} user states into {changelog}")
        started = time.perf_counter()
        for first in range(0, users, CHUNK_USERS):
            chunk = _states(first, min(CHUNK_USERS, users - first), now_ms)
            await produce_fast(broker.bootstrap, changelog, chunk)
        result["produce_s"] = round(time.perf_counter() - started, 1)
        _say("starting the worker: recovery, then the index rebuild")
        worker = WorkerProcess(env, run_dir / "worker.log")
        started = time.perf_counter()
        worker.start()
        await worker.wait_ready(7200)
        while True:
            with contextlib.suppress(OSError):
                text = await asyncio.to_thread(worker.metrics_text)
                if _users_tracked(text) >= users:
                    break
            await asyncio.sleep(1.0)
        result["recovered_s"] = round(time.perf_counter() - started, 1)
        if worker.proc is None:
            raise RuntimeError("the worker process did not start")
        await asyncio.sleep(5.0)  # settle: the first status flush and gauges
        memory = _status_kib(worker.proc.pid)
        result["users_tracked"] = int(_users_tracked(await asyncio.to_thread(worker.metrics_text)))
        result["rss_bytes"] = memory["VmRSS"] * 1024
        result["peak_rss_bytes"] = memory["VmHWM"] * 1024
        result["rss_bytes_per_user"] = round(memory["VmRSS"] * 1024 / users, 1)
        result["rocksdb_dir_bytes"] = sum(
            path.stat().st_size for path in (run_dir / "data").rglob("*") if path.is_file()
        )
    finally:
        if worker is not None:
            worker.stop()
        await asyncio.to_thread(broker.close)
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--users", type=int, default=10_000_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.users))
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:>22}: {value:,}" if isinstance(value, int) else f"{name:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
