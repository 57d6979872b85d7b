"""Ceiling and one worker per ingest path only (a shorter loop than `engagement bench`).

Usage: .venv/bin/python bench/worker_rates.py SHAPE INGEST[:STORE] ...
e.g. ``session batch batch:rocksdb:// stream``.
"""

import asyncio
import sys

from backlog import backlog

from agents.bench.run import QUICK
from agents.bench.workers import worker_rate


async def main():
    async with backlog(QUICK, "wb-", sys.argv[1]) as data:
        for mode in sys.argv[2:]:
            ingest, _, store = mode.partition(":")
            env = data.worker_env(ingest, store or "memory://")
            rate, process = await worker_rate(
                data.broker_url, data.run_dir, data.topics, data.events, env
            )
            process.stop()
            print(
                f"events={data.events} ceiling={data.ceiling_per_s:,.0f}/s {mode}={rate:,.0f}/s "
                f"ratio={rate / data.ceiling_per_s:.4f}",
                flush=True,
            )


asyncio.run(main())
