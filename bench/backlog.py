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

from agents.bench.broker import PARTITIONS, ceiling, produce_fast
from agents.bench.run import FAR_THRESHOLDS, BenchSize, fresh_topics
from agents.bench.shapes import shape_events
from agents.stack.services import EmbeddedBroker, RedisServer
from streams.settings import load_settings
from streams.topics import ensure_topics


@dataclass
class Backlog:
    broker_url: str
    run_dir: Path
    topics: dict[str, str]
    events: int
    ceiling_per_s: float

    def worker_env(self, ingest: str, store: str = "memory://") -> dict[str, str]:
        return {**FAR_THRESHOLDS, "ENGAGEMENT_INGEST": ingest, "ENGAGEMENT_STORE": store}


@contextlib.asynccontextmanager
async def backlog(size: BenchSize, prefix: str, shape: str = "uniform") -> AsyncIterator[Backlog]:
    broker = EmbeddedBroker()
    redis = RedisServer()
    await asyncio.to_thread(broker.start)
    await asyncio.to_thread(redis.start)
    run_dir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        topics = fresh_topics(redis.url)
        settings = load_settings(broker=broker.url, partitions=PARTITIONS, **topics)
        await ensure_topics(settings)
        records = shape_events(shape, size.events, size.users, int(time.time() * 1000), PARTITIONS)
        await produce_fast(broker.bootstrap, settings.topic_events, records)
        rate = await ceiling(broker.bootstrap, settings.topic_events, size.events)
        yield Backlog(broker.url, run_dir, topics, size.events, rate)
    finally:
        broker.stop()
        redis.stop()
        print("logs in", run_dir)
