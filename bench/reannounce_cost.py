"""Cost of announcing every user's status again after a recovery (docs/BATCH-INGEST.md).

N users with packed states in a dict standing in for the users table; the
status writer scans them (``users_of``), pends them (``reannounce``) and
sends them (``tick``), with sends that resolve at once: the figure is the
worker's own CPU per user, without the producer.

    .venv/bin/python bench/reannounce_cost.py 100000

Measures; asserts nothing.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry

from agents.worker import status as status_module
from agents.worker.metrics import Metrics
from agents.worker.status import StatusWriter, users_of
from streams.decode import partition_for
from streams.model_settings import model_config
from streams.settings import load_settings
from tables.fold import new_state
from tables.model import ModelEvent
from tables.state import pack_state

PARTITIONS = 8
DAY_MS = 86_400_000


class DictTable:
    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = data

    def items(self) -> Any:
        return self.data.items()


async def measure(users: int) -> None:
    settings = load_settings(partitions=PARTITIONS)
    config = model_config(settings)
    now_ms = int(time.time() * 1000)
    data: dict[bytes, bytes] = {}
    for index in range(users):
        user = f"user-{index}"
        event = ModelEvent(
            user_id=user,
            id_hash=index,
            type="login",
            ts_ms=now_ms - (index % 40) * DAY_MS,
            append_ms=now_ms,
            partition=partition_for(user.encode(), PARTITIONS),
            offset=index,
        )
        data[user.encode()] = pack_state(new_state(event, settings.day_ms))
    loop = asyncio.get_running_loop()

    def done(*_: Any) -> asyncio.Future[None]:
        future: asyncio.Future[None] = loop.create_future()
        future.set_result(None)
        return future

    async def send(*_: Any) -> asyncio.Future[None]:
        return done()

    writer = StatusWriter(
        done,
        send,
        config,
        lambda _partition: now_ms,
        lambda _user: None,
        Metrics(CollectorRegistry(), settings.event_types),
        partitions=PARTITIONS,
    )
    status_module.ANNOUNCE_PER_TICK = users  # one tick: the CPU cost, not the pacing
    started = time.perf_counter()
    count = writer.reannounce(users_of(DictTable(data), set(range(PARTITIONS)), PARTITIONS))
    pended = time.perf_counter()
    await writer.tick()
    sent = time.perf_counter()
    print(
        f"users={count} scan_and_pend_s={pended - started:.2f} send_s={sent - pended:.2f} "
        f"per_user_us={(sent - started) / count * 1e6:.1f}"
    )


if __name__ == "__main__":
    asyncio.run(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
