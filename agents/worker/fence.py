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
- the records already in the producer's buffer are delivered (its flush,
  bounded by the revoke budget), so they are on the broker before the next
  owner starts.

So nothing this worker sends for a partition lands after the revoke, and a
new owner's writes are never overwritten by a zombie batch. The batch that
meets the fence is abandoned (``BatchIngest``): it is not acknowledged, and
its records are read again by the next owner from the committed offset.
Refused sends and abandoned batches are counted (metrics with no user ids).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final

from prometheus_client import Counter

log = logging.getLogger(__name__)

FLUSH_MIN_S: Final = 0.1  # the producer's flush on revoke is given at least this long


class Fenced(Exception):
    """A send for an input partition this worker does not own in that generation."""

    def __init__(self, partition: int, generation: int | None) -> None:
        super().__init__(f"input partition {partition} is not owned in generation {generation}")
        self.partition = partition


class Fence:
    """Which input partitions this worker may publish for, in which generation,
    and the sends under way for each (see the module docstring)."""

    def __init__(self, producer: Callable[[], Any], refused: Counter | None = None) -> None:
        self._producer = producer
        self._refused = refused
        self._owned: dict[int, int] = {}  # input partition -> generation it was assigned in
        # task -> input partition of the record it is handing to the producer (one at a time)
        self._sending: dict[asyncio.Task[Any], int] = {}
        self._fencing: set[asyncio.Task[Any]] = set()  # cancelled by a revoke while sending

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
        owned = self._owned.get(owner)
        if owned is None or (generation is not None and owned != generation):
            self._refuse()
            raise Fenced(owner, generation)
        # The send runs in the caller's task (no task per record): a revoke while
        # the producer has not accepted the record yet cancels that task here, and
        # the cancellation becomes ``Fenced``.
        task = asyncio.current_task()
        assert task is not None
        sending = self._sending
        sending[task] = owner
        try:
            delivery: asyncio.Future[Any] = await self._producer().send(
                topic, key, value, partition, None, headers
            )
            return delivery
        except asyncio.CancelledError:
            if task in self._fencing:
                self._fencing.discard(task)
                if task.uncancel() == 0:  # cancelled by the revoke only
                    self._refuse()
                    raise Fenced(owner, generation) from None
            raise
        finally:
            sending.pop(task, None)

    async def revoke(self, partitions: Iterable[int], timeout_s: float) -> bool:
        """Close the fence for ``partitions``: no send for them passes from now
        on, sends not yet accepted by the producer are cancelled, and the
        records in the producer's buffer are delivered (the producer's flush,
        at most ``timeout_s``). False if they were not all delivered by then."""
        closed = set(partitions)
        for partition in closed:
            self._owned.pop(partition, None)
        for task, owner in list(self._sending.items()):
            if owner in closed and task not in self._fencing and task.cancel():
                self._fencing.add(task)
        try:
            await asyncio.wait_for(self._producer().flush(), max(timeout_s, FLUSH_MIN_S))
        except TimeoutError:
            log.error(
                "fence: records of revoked partitions %s not delivered within %.1f s",
                sorted(closed),
                timeout_s,
            )
            return False
        return True

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

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int,
        timestamp: float | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Coroutine[Any, Any, asyncio.Future[Any]]:
        """As the producer's ``send`` (awaited: the delivery future)."""
        return self._fence.send(
            partition, self._generation(), topic, key, value, partition, headers
        )
