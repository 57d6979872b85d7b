"""py-spy profile of one worker applying a backlog (a profiling aid, not a test).

Usage: .venv/bin/python bench/worker_profile.py EVENTS USERS SECONDS OUT.txt \
    [INGEST [SHAPE [STORE]]]
(defaults: batch, uniform, memory://). Writes py-spy's collapsed stacks (raw
format, ``--nonblocking``: the worker is never paused) to OUT.txt; summarise
with bench/collapsed.py.
"""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from backlog import backlog

from agents.bench.run import BenchSize
from agents.bench.workers import metric_sum, worker_rate

PYSPY = os.environ.get("PYSPY", str(Path(sys.executable).with_name("py-spy")))


async def main() -> None:
    events, users, seconds, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    mode = sys.argv[5] if len(sys.argv) > 5 else "batch"
    shape = sys.argv[6] if len(sys.argv) > 6 else "uniform"
    store = sys.argv[7] if len(sys.argv) > 7 else "memory://"
    size = BenchSize(events=events, users=users, tick_users=0, tick_due=0, latency_users=0)
    async with backlog(size, "wp-", shape) as data:
        env = data.worker_env(mode, store)
        task = asyncio.create_task(
            worker_rate(data.broker_url, data.run_dir, data.topics, data.events, env)
        )
        pid = None
        while pid is None:
            await asyncio.sleep(0.05)
            found = subprocess.run(
                ["pgrep", "-P", str(os.getpid()), "-f", "agents.cli.main worker"],
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
            if metric_sum(text, "engagement_events_total{") > 0:
                break
        record = ["record", "--nonblocking", "-r", "200", "-d", seconds, "-f", "raw"]
        spy = subprocess.Popen([PYSPY, *record, "-o", out, "--pid", pid])
        rate, process = await task
        spy.wait()
        process.stop()
        ceiling = data.ceiling_per_s
        print(
            f"events={size.events} ceiling={ceiling:,.0f}/s worker={rate:,.0f}/s "
            f"ratio={rate / ceiling:.4f}",
            flush=True,
        )


def _port(pid: str) -> str:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for item in env:
        if item.startswith(b"ENGAGEMENT_WEB_PORT="):
            return item.split(b"=", 1)[1].decode()
    raise RuntimeError("no web port")


asyncio.run(main())
