"""py-spy profile of one worker applying a backlog (a profiling aid, not a test).

Usage: .venv/bin/python bench/worker_profile.py EVENTS USERS SECONDS OUT.txt [ENGAGEMENT_INGEST]
Writes py-spy's collapsed stacks (raw format) to OUT.txt; summarise with
bench/collapsed.py.
"""

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from agents import bench as b
from streams.settings import load_settings

PYSPY = os.environ.get("PYSPY", "/tmp/pyspy/bin/py-spy")


async def main() -> None:
    events, users, seconds, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    mode = sys.argv[5] if len(sys.argv) > 5 else "batch"
    size = b.BenchSize(events=events, users=users, tick_users=0, tick_due=0, latency_users=0)
    broker = b.EmbeddedBroker()
    redis = b.RedisServer()
    await asyncio.to_thread(broker.start)
    await asyncio.to_thread(redis.start)
    run_dir = Path(tempfile.mkdtemp(prefix="wp-"))
    try:
        tag = uuid.uuid4().hex[:6]
        topics = {
            f"ENGAGEMENT_TOPIC_{k}": f"b{tag}.{k.lower()}"
            for k in ("EVENTS", "SIGNALS", "DLQ", "LIFECYCLE", "STATUS", "CONFIG")
        }
        topics["ENGAGEMENT_REDIS_URL"] = redis.url
        settings = load_settings(broker=broker.url, partitions=b.PARTITIONS, **topics)
        await b.ensure_topics(settings)
        records = b.make_events(size, int(time.time() * 1000) - 3_600_000)
        await b.produce_fast(broker.bootstrap, settings.topic_events, records)
        ceil = await b.ceiling(broker.bootstrap, settings.topic_events, size.events)
        big = {
            "ENGAGEMENT_AT_RISK": "3650d",
            "ENGAGEMENT_DORMANT": "3651d",
            "ENGAGEMENT_CHURNED": "3652d",
            "ENGAGEMENT_THRESHOLD_MAX": "3660d",
            "ENGAGEMENT_INGEST": mode,
        }
        task = asyncio.create_task(b.worker_rate(broker.url, run_dir, topics, size.events, big))
        pid = None
        while pid is None:
            await asyncio.sleep(0.05)
            found = subprocess.run(
                ["pgrep", "-P", str(os.getpid()), "-f", "agents.cli worker"],
                capture_output=True,
                text=True,
            ).stdout.split()
            pid = found[0] if found else None
        while True:  # wait until it applies events
            await asyncio.sleep(0.2)
            try:
                text = subprocess.run(
                    ["curl", "-s", f"localhost:{_port(pid)}/metrics"],
                    capture_output=True,
                    text=True,
                ).stdout
            except Exception:
                continue
            if b._metric(text, "engagement_events_total{") > 0:
                break
        spy = subprocess.Popen(
            [PYSPY, "record", "-r", "200", "-d", seconds, "-f", "raw", "-o", out, "--pid", pid]
        )
        rate, process = await task
        spy.wait()
        process.stop()
        print(
            f"events={size.events} ceiling={ceil:,.0f}/s worker={rate:,.0f}/s "
            f"ratio={rate / ceil:.4f}",
            flush=True,
        )
    finally:
        broker.stop()
        redis.stop()


def _port(pid: str) -> str:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for item in env:
        if item.startswith(b"ENGAGEMENT_WEB_PORT="):
            return item.split(b"=", 1)[1].decode()
    raise RuntimeError("no web port")


asyncio.run(main())
