"""Ceiling and one worker per ingest path only (a shorter loop than `engagement bench`).

Usage: .venv/bin/python bench/worker_rates.py batch stream
"""

import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

from agents import bench as b
from streams.settings import load_settings


async def main():
    size = b.QUICK
    broker = b.EmbeddedBroker()
    redis = b.RedisServer()
    await asyncio.to_thread(broker.start)
    await asyncio.to_thread(redis.start)
    run_dir = Path(tempfile.mkdtemp(prefix="wb-"))
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
        }
        for mode in sys.argv[1:]:
            rate, process = await b.worker_rate(
                broker.url, run_dir, topics, size.events, {**big, "ENGAGEMENT_INGEST": mode}
            )
            process.stop()
            print(
                f"events={size.events} ceiling={ceil:,.0f}/s {mode}={rate:,.0f}/s "
                f"ratio={rate / ceil:.4f}",
                flush=True,
            )
    finally:
        broker.stop()
        redis.stop()
        print("logs in", run_dir)


asyncio.run(main())
