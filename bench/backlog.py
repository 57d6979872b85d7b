"""A broker and Redis with a produced backlog, for the worker scripts in bench/.

``backlog(size)`` starts the embedded broker and redis-server, creates fresh
topics, produces the bench's events of one traffic shape and measures the raw aiokafka ceiling on
them; it yields what a worker needs to consume them (``worker_env`` keeps the
thresholds far away, so nothing falls due while it runs).
"""

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from agents.bench import run as b
from agents.bench.shapes import shape_events
from streams.settings import load_settings


@dataclass
class Backlog:
    broker_url: str
    run_dir: Path
    topics: dict[str, str]
    events: int
    ceiling_per_s: float

    def worker_env(self, ingest: str, store: str = "memory://") -> dict[str, str]:
        return {**b.FAR_THRESHOLDS, "ENGAGEMENT_INGEST": ingest, "ENGAGEMENT_STORE": store}


@contextlib.asynccontextmanager
async def backlog(size: b.BenchSize, prefix: str, shape: str = "uniform") -> AsyncIterator[Backlog]:
    broker = b.EmbeddedBroker()
    redis = b.RedisServer()
    await asyncio.to_thread(broker.start)
    await asyncio.to_thread(redis.start)
    run_dir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        topics = b.fresh_topics(redis.url)
        settings = load_settings(broker=broker.url, partitions=b.PARTITIONS, **topics)
        await b.ensure_topics(settings)
        records = shape_events(
            shape, size.events, size.users, int(time.time() * 1000), b.PARTITIONS
        )
        await b.produce_fast(broker.bootstrap, settings.topic_events, records)
        ceiling = await b.ceiling(broker.bootstrap, settings.topic_events, size.events)
        yield Backlog(broker.url, run_dir, topics, size.events, ceiling)
    finally:
        broker.stop()
        redis.stop()
        print("logs in", run_dir)
