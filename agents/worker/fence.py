"""The fence: the batch path publishes for an input partition only while this
worker owns it, in the generation the batch was fetched in.

Every send of the batch path (signals, lifecycle transitions, DLQ records,
forwarded events, cohorts, the status writes of the outbox, the state
changelog) names the input partition it publishes for and goes through
``Fence.send``, which refuses it (``Fenced``) unless that partition is
assigned to this worker in the batch's generation.

On revoke (``Fence.revoke``, called by ``BatchIngest.revoke`` before the
worker lets the partitions go):

- a send not yet handed to the producer is refused from then on;
- a send the producer has not accepted yet (waiting for buffer space or
  metadata: a slow or paused broker) is cancelled where it waits, so its
  record never reaches the producer's buffer, and the sender gets ``Fenced``;
- records already in the producer's buffer are awaited, bounded by the
  revoke budget, so they are on the broker before the next owner starts.

So nothing this worker sends for a partition lands after the revoke, and a
new owner's writes are never overwritten by a zombie batch. The batch that
meets the fence is abandoned (``BatchIngest``): it is not acknowledged, and
its records are read again by the next owner from the committed offset.
Refused sends and abandoned batches are counted (metrics with no user ids).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

from prometheus_client import Counter

log = logging.getLogger(__name__)

DELIVERY_WAIT_MIN_S: Final = 0.1  # records already buffered are awaited at least this long


class Fenced(Exception):
    """A send for an input partition this worker does not own in that generation."""

    def __init__(self, partition: int, generation: int | None) -> None:
        super().__init__(f"input partition {partition} is not owned in generation {generation}")
        self.partition = partition


class Fence:
    """Which input partitions this worker may publish for, in which generation,
    and the sends in flight for each (see the module docstring)."""

    def __init__(self, producer: Callable[[], Any], refused: Counter | None = None) -> None:
        self._producer = producer
        self._refused = refused
        self._owned: dict[int, int] = {}  # input partition -> generation it was assigned in
        self._accepting: dict[int, set[asyncio.Task[Any]]] = {}  # sending, not yet buffered
        self._fencing: set[asyncio.Task[Any]] = set()  # cancelled by a revoke while sending
        self._delivering: dict[int, set[asyncio.Future[Any]]] = {}  # buffered, not yet written

    def assign(self, partitions: Iterable[int], generation: int) -> None:
        """``partitions`` are this worker's from ``generation`` on (the assignment)."""
        for partition in partitions:
            self._owned[partition] = generation

    def owns(self, partition: int, generation: int | None = None) -> bool:
        """``partition`` is assigned here (in ``generation``, when given)."""
        owned = self._owned.get(partition)
        return owned is not None and (generation is None or owned == generation)

    async def send(
        self,
        owner: int,
        generation: int | None,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        """The producer's ``send`` for a record of input partition ``owner``;
        returns its delivery future. Raises ``Fenced`` when ``owner`` is not
        this worker's (in ``generation``), also when a revoke comes while the
        producer is still accepting the record."""
        if not self.owns(owner, generation):
            self._refuse()
            raise Fenced(owner, generation)
        # The send runs in the caller's task (no task per record): a revoke while
        # the producer has not accepted the record yet cancels that task here, and
        # the cancellation becomes ``Fenced``.
        task = asyncio.current_task()
        assert task is not None
        pending = self._accepting.setdefault(owner, set())
        pending.add(task)
        try:
            delivery: asyncio.Future[Any] = await self._producer().send(
                topic, key, value, partition, None, headers
            )
        except asyncio.CancelledError:
            if task in self._fencing:
                self._fencing.discard(task)
                if task.uncancel() == 0:  # cancelled by the revoke only
                    self._refuse()
                    raise Fenced(owner, generation) from None
            raise
        finally:
            pending.discard(task)
        delivering = self._delivering.setdefault(owner, set())
        delivering.add(delivery)
        delivery.add_done_callback(delivering.discard)
        return delivery

    async def revoke(self, partitions: Iterable[int], timeout_s: float) -> int:
        """Close the fence for ``partitions``: no send for them passes from now
        on, sends not yet accepted by the producer are cancelled, and records
        already buffered are awaited (at most ``timeout_s``). Returns how many
        buffered records were still not delivered then."""
        closed = set(partitions)
        for partition in closed:
            self._owned.pop(partition, None)
        buffered: set[asyncio.Future[Any]] = set()
        for partition in closed:
            for sending in self._accepting.pop(partition, set()):
                if sending not in self._fencing and sending.cancel():
                    self._fencing.add(sending)
            buffered |= self._delivering.pop(partition, set())
        if not buffered:
            return 0
        _, late = await asyncio.wait(buffered, timeout=max(timeout_s, DELIVERY_WAIT_MIN_S))
        if late:
            log.error(
                "fence: %d records of revoked partitions %s still not delivered",
                len(late),
                sorted(closed),
            )
        return len(late)

    def _refuse(self) -> None:
        if self._refused is not None:
            self._refused.inc()


class PartitionSender:
    """A producer whose ``send`` goes through the fence for the input partition
    the record is written to (changelog and status records: one partition each),
    in the generation ``generation()`` names (the batch's)."""

    def __init__(self, fence: Fence, generation: Callable[[], int | None]) -> None:
        self._fence = fence
        self._generation = generation

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int,
        timestamp: float | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        return await self._fence.send(
            partition, self._generation(), topic, key, value, partition, headers
        )
