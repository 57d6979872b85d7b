"""Delivery of a batch's outputs and state changelog (steps 1 and 2 of the
checkpoint, ``agents.worker.checkpoint``): the outbox of status writes decided
while records are applied, the changelog records of the batch's changes, and
a batch that runs to its end when its fetcher is cancelled. On the batch path
every send goes through the fence (``agents.worker.fence``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.worker.checkpoint import LocalStore

log = logging.getLogger(__name__)

Change = tuple[bytes, int, bytes | None]  # key, partition, value (None: deleted)


class Outbox:
    """Status writes decided while records are applied (step 1).

    The status writer decides them in a synchronous observer; they are sent
    in order by a task it starts (and by ``drain``), straight to the producer
    (through the fence on the batch path).
    ``take`` hands the batch the futures of what was queued since the last
    call, so the batch delivers them before its changelog."""

    def __init__(self, producer: Callable[[], Any], topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._queue: list[tuple[bytes, bytes | None, int, asyncio.Future[Any]]] = []
        self._futures: list[asyncio.Future[Any]] = []
        self._lock = asyncio.Lock()
        self._task: asyncio.Future[None] | None = None

    def enqueue(self, key: bytes, value: bytes | None, partition: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((key, value, partition, future))
        self._futures.append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self.drain())
        return future

    async def drain(self) -> None:
        """Hand every queued write to the producer, in order."""
        async with self._lock:
            while self._queue:
                key, value, partition, future = self._queue.pop(0)
                try:
                    sent = await self._producer().send(
                        self._topic, key, value, partition, None, None
                    )
                except Exception as exc:  # the status writer retries it
                    future.set_exception(exc)
                    continue
                sent.add_done_callback(lambda done, f=future: _settle(f, done))

    def take(self) -> list[asyncio.Future[Any]]:
        futures, self._futures = self._futures, []
        return futures

    def discard(self) -> int:
        """Drop what is queued and forget every future (an abandoned batch:
        its status writes are the next owner's to make); returns how many."""
        self._queue.clear()
        futures = self.take()
        for future in futures:
            if not future.cancel():
                future.exception()  # retrieved: refused by the fence, or failed
        return len(futures)


def _settle(target: asyncio.Future[Any], done: asyncio.Future[Any]) -> None:
    if target.done():
        return
    if done.cancelled():
        target.cancel()
    elif done.exception() is not None:
        target.set_exception(done.exception())  # type: ignore[arg-type]
    else:
        target.set_result(done.result())


async def publish_changelog(
    producer: Any, changes: list[tuple[LocalStore, Change]]
) -> dict[LocalStore, dict[int, int]]:
    """Step 2: one changelog record per change, all delivered; returns the last
    offset written per store and partition. A failed write raises."""
    futures = []
    for local, (key, partition, value) in changes:
        sent = await producer.send(local.topic, key, value, partition, None, None)
        futures.append((local, partition, sent))
    offsets: dict[LocalStore, dict[int, int]] = {}
    for local, partition, sent in futures:
        metadata = await sent
        last = offsets.setdefault(local, {})
        offset = int(metadata.offset) if metadata is not None else -1
        last[partition] = max(offset, last.get(partition, -1))
    return offsets


FINISH_ON_CANCEL_S = 15.0  # how long a cancelled fetcher lets its batch in flight finish


async def run_to_end(batch: Awaitable[None], bound_s: float = FINISH_ON_CANCEL_S) -> None:
    """Await ``batch``; when the caller is cancelled, let the batch finish first.

    Faust cancels the fetcher on stop and on some rebalances (and cancels it
    again every second while it waits). The batch runs on; the cancellation
    is re-raised once it has ended, or after ``bound_s``, when the batch is
    cancelled too (nothing of it is acknowledged, so it is read again)."""
    task = asyncio.ensure_future(batch)
    loop = asyncio.get_running_loop()
    deadline_s: float | None = None
    while not task.done():
        remaining_s = None if deadline_s is None else deadline_s - loop.time()
        if remaining_s is not None and remaining_s <= 0:
            log.warning("batch ingest: a batch did not finish %.0f s after a cancel", bound_s)
            task.cancel()
            break
        try:
            await asyncio.wait({task}, timeout=remaining_s)
        except asyncio.CancelledError:
            if deadline_s is None:
                deadline_s = loop.time() + bound_s
    if task.done() and not task.cancelled():
        task.result()  # a failed batch raises, cancelled or not
    if deadline_s is not None or task.cancelled():
        raise asyncio.CancelledError
