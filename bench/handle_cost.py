"""CPU cost of the worker's per-record path, without a broker (a profiling aid).

Drives the real ``Runtime`` (decode, model, tables through the batch ingest's
``BatchTable``, metrics, the status writer's and Redis mirror's observers) over
the bench's quick data of one shape, in batches as the batch ingest applies
them (states held and packed once per batch), and measures CPU time per
record; then the Redis mirror's per-user preparation
(fields and pipeline commands, not sent). Outputs go to completed futures.

Usage: .venv/bin/python bench/handle_cost.py [--profile] [--events N] [--users N]
    [--shape uniform|session]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import time
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from agents.bench.broker import PARTITIONS
from agents.bench.shapes import shape_events
from agents.worker.batch_ingest import BatchIngest
from agents.worker.metrics import Metrics
from agents.worker.redis_keys import write_user
from agents.worker.runtime import Runtime
from agents.worker.status import StatusWriter, clock_reader
from agents.worker.wiring import observing_mirror
from streams.app import create_app
from streams.settings import load_settings

BATCH = 500
FLUSH_EVERY = 20_000


class Sent:
    """An output topic whose sends complete at once."""

    def __init__(self) -> None:
        self.count = 0

    async def send(self, **kwargs: Any) -> asyncio.Future[Any]:
        self.count += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def done(*args: Any) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


async def main(events: int, users: int, shape: str, profile: bool) -> None:
    settings = load_settings(broker="kafka://localhost:1", partitions=PARTITIONS)
    engine_app = create_app(settings)
    engine_app = msgspec.structs.replace(
        engine_app, signals=Sent(), lifecycle=Sent(), dlq=Sent(), status=Sent()
    )
    metrics = Metrics(CollectorRegistry(), settings.event_types)
    runtime = Runtime(engine_app, metrics)
    ingest = BatchIngest(engine_app.app, runtime, settings.topic_status)
    runtime.write_tables_through(ingest.tables)
    outputs = Sent()

    async def send_output(topic: Any, key: bytes | None, value: bytes) -> Any:
        return await outputs.send()

    runtime.send_output = send_output

    async def send(key: bytes, value: bytes | None, partition: int) -> Any:
        return done()

    status = StatusWriter(
        done,
        send,
        runtime.config,
        clock_reader(runtime),
        runtime.store.get,
        metrics,
        partitions=settings.partitions,
    )
    runtime.store.observers.append(status.observe)
    mirror = observing_mirror(
        engine_app, runtime, metrics, lambda: Redis(), owned=None, max_backlog=10**9
    )
    source = mirror.source

    now_ms = int(time.time() * 1000)
    records = shape_events(shape, events, users, now_ms, PARTITIONS)
    offsets: dict[int, int] = {}
    prepared = []
    for key, value, partition in records:
        offset = offsets.get(partition, 0)
        offsets[partition] = offset + 1
        prepared.append((key, value, partition, offset, now_ms - len(records) + len(prepared)))

    async def run() -> None:
        handle = runtime.handle
        for first in range(0, len(prepared), BATCH):
            outputs: list[Any] = []
            runtime.outputs = outputs
            runtime.store.hold()
            for key, value, partition, offset, append_ms in prepared[first : first + BATCH]:
                ingest.writes.partition = partition
                await handle(key, value, {}, partition, offset, append_ms)
            runtime.store.release()
            runtime.metrics.flush_records()
            runtime.outputs = None
            for future in outputs:
                await future
            for table in ingest.writes.tables:
                table.pending.clear()
            if first % FLUSH_EVERY == 0:  # the status writer's timer (1 s at ~20k/s)
                await status.send_pending()
                status._settle()

    profiler = cProfile.Profile() if profile else None
    cpu = time.process_time()
    if profiler:
        profiler.enable()
    await run()
    if profiler:
        profiler.disable()
    cpu = time.process_time() - cpu
    print(
        f"handle: {len(prepared):,} records, {cpu / len(prepared) * 1e6:.2f} µs CPU/record, "
        f"{outputs.count:,} outputs"
    )

    pending = list(mirror._pending.items())
    mirror._pending.clear()
    pipe = Redis().pipeline(transaction=False)
    cpu = time.process_time()
    if profiler:
        profiler.enable()
    for user_id, state in pending:
        assert state is not None
        write_user(pipe, mirror.keys, user_id, source.fields(user_id, state))
    if profiler:
        profiler.disable()
    cpu = time.process_time() - cpu
    per_user_us = cpu / max(1, len(pending)) * 1e6
    print(f"mirror prep: {len(pending):,} users, {per_user_us:.2f} µs CPU/user")
    if profiler:
        pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "tottime")).print_stats(
            int(os.environ.get("TOP", "30"))
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--shape", choices=("uniform", "session"), default="session")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.users, args.shape, args.profile))
