"""The longest event-loop block during a recovery rebuild (``make bench-rebuild``).

N users with packed states in the worker's users table (memory store); the
recovery rebuild as the worker's recovery runs it (``Runtime.rebuild``: due
index, stage and stickiness figures, every user announced to the status
writer again; the worker's collector settings) runs while a probe task
measures how long the loop went without running it. Heartbeats, web probes
and the status and Redis tasks wait that long; the target is under 1 s (a
session timeout is 10 s). ``--compare``: the same rebuild never letting the
loop run, measured in the same run.

    .venv/bin/python bench/rebuild_block.py [users, default 2000000] [--compare]

Measures; asserts nothing.
"""

from __future__ import annotations

import asyncio
import sys
import time

from prometheus_client import CollectorRegistry

from agents.common.collection import tune_for_worker
from agents.worker import runtime as runtime_module
from agents.worker.checkpoint import LocalStore
from agents.worker.wiring import Worker, build_worker
from streams.decode import partition_for
from streams.settings import load_settings
from tables.fold import new_state
from tables.model import ModelEvent
from tables.state import pack_state

PARTITIONS = 8
DAY_MS = 86_400_000
PROBE_S = 0.005


def _fill(worker: Worker, users: int, now_ms: int) -> None:
    """``users`` users, last seen over 40 days (40 packed states, shared)."""
    blobs = [
        pack_state(
            new_state(
                ModelEvent(
                    user_id="user",
                    id_hash=day,
                    type="login",
                    ts_ms=now_ms - day * DAY_MS,
                    append_ms=now_ms,
                    partition=0,
                    offset=day,
                ),
                DAY_MS,
            )
        )
        for day in range(40)
    ]
    local = LocalStore(worker.engine_app.users)
    for index in range(users):
        key = f"user-{index}".encode()
        local.put_now(key, partition_for(key, PARTITIONS), blobs[index % 40])


async def _longest_block_s(worker: Worker, slice_s: float) -> tuple[float, float, float]:
    """(longest block, the process's CPU time in it, whole rebuild) in seconds,
    the loop let run every ``slice_s``. A block with much less CPU than wall
    time is the machine's load (the process waited for a core), not the rebuild."""
    runtime_module.REBUILD_SLICE_S = slice_s
    status = worker.status
    assert status is not None
    longest = longest_cpu = 0.0
    running = True

    async def probe() -> None:
        nonlocal longest, longest_cpu
        while running:
            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.sleep(PROBE_S)
            block = time.perf_counter() - started - PROBE_S
            if block > longest:
                longest, longest_cpu = block, time.process_time() - cpu

    task = asyncio.create_task(probe())
    await asyncio.sleep(PROBE_S * 2)
    started = time.perf_counter()
    await worker.runtime.rebuild(
        set(range(PARTITIONS)), lambda _p, user, state: status.announce(user, state)
    )
    whole = time.perf_counter() - started
    running = False
    await task
    return longest, longest_cpu, whole


async def measure(users: int, compare: bool) -> None:
    settings = load_settings(partitions=PARTITIONS, ingest="stream").with_generated_secrets()
    worker = build_worker(settings, CollectorRegistry(), web_enabled=False)
    worker.app.finalize()
    worker.app.conf.store = "memory://"
    slice_s = runtime_module.REBUILD_SLICE_S
    async with worker.ingest.test_context():
        _fill(worker, users, int(time.time() * 1000))
        tune_for_worker()  # as agents.worker.run does once set up
        block_s, cpu_s, whole_s = await _longest_block_s(worker, slice_s)
        print(
            f"users={users} slice_ms={slice_s * 1000:.0f} "
            f"longest_block_ms={block_s * 1000:.0f} (cpu_ms={cpu_s * 1000:.0f}) "
            f"rebuild_s={whole_s:.1f}",
            flush=True,
        )
        if compare:
            one_block_s, _, one_whole_s = await _longest_block_s(worker, float("inf"))
            print(
                f"never yielding: longest_block_ms={one_block_s * 1000:.0f} "
                f"rebuild_s={one_whole_s:.1f} | ratio={block_s / one_block_s:.3f}"
            )


if __name__ == "__main__":
    asyncio.run(
        measure(int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000, "--compare" in sys.argv)
    )
