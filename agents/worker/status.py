"""The user-status writer: latest stage, tier, risk, episode, last_seen per user.

It listens to ``TableStore.observers`` and writes ``engagement.user-status``
(compacted, key = user id, partition = the user's input partition, so only
the worker owning that partition writes a user's status):

- a stage or tier change is sent at once;
- other changes wait, coalesced per user (newest wins), for the next flush,
  at most ``STATUS_FLUSH`` later;
- everything pending is sent, and its delivery awaited, before each offset
  commit (a committed offset never outruns the status it produced) and when
  partitions are revoked (a worker never writes for a partition it no longer
  owns);
- an erasure drops the user's pending write and sends a tombstone.

Immediate writes and tombstones are queued from the observer, which runs
before the state is written: on the batch path once per changed user per
batch, with its newest state (a stage held only within one batch is not
written), into the checkpoint's outbox,
delivered with the batch's outputs before its changelog
(``agents.worker.checkpoint``); on the stream path into Faust's producer buffer,
ahead of the state's changelog record. Either way a crash cannot keep a
state and lose the status derived from it. Coalesced writes are sent
directly from a task (the buffer throttles the agent when it grows), except
for a user whose queued write is still undelivered: that one queues behind
it, so per user the newest write is the last in the topic. A record
re-delivered after a crash is announced again by the runtime, which
rewrites a coalesced status the crash lost, and every recovery announces
all users of the recovered partitions again, kept partitions included (a
rebalance during a recovery ends with another recovery, and only the last
one reads the table complete): ``reannounce``, a bounded number per flush
interval, outside the commit's flush. To know whether stage or
tier changed, the writer remembers the last written pair of the most recently
written users (bounded); a user it has forgotten is written at once, which
is never wrong, only less coalesced.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from itertools import islice
from typing import Any, Final, NamedTuple

import msgspec

from agents.worker.metrics import Metrics
from streams.decode import partition_for
from streams.records import UserStatus
from tables.clock import NEVER
from tables.judgement import stage_at
from tables.lifecycle import STAGES
from tables.model import ModelConfig
from tables.state import TIER_NAMES, UserState, unpack_state
from tables.user_risk import risk_at

log = logging.getLogger(__name__)

REMEMBERED_USERS: Final = 200_000
ANNOUNCE_PER_TICK: Final = 5_000  # re-announced statuses sent per flush interval
DELIVERY_TIMEOUT_S: Final = 60.0
IMMEDIATE: Final = "immediate"
COALESCED: Final = "coalesced"
TOMBSTONE: Final = "tombstone"
_STAGE_CODE: Final = {name: index for index, name in enumerate(STAGES)}


# (key, value or None for a tombstone, partition) -> a future resolved on delivery.
# ``enqueue`` is synchronous and FIFO with the table's changelog writes (Faust's
# producer buffer); ``send`` hands the record to the Kafka client at once.
Enqueue = Callable[[bytes, bytes | None, int], "asyncio.Future[Any]"]
Send = Callable[[bytes, bytes | None, int], Awaitable["asyncio.Future[Any]"]]
StateReader = Callable[[str], UserState | None]


class _Pending(NamedTuple):
    partition: int
    state: UserState
    clock_ms: int
    change: int  # the writer's change count when it was pended


class _InFlight(NamedTuple):
    user_id: str
    partition: int
    future: asyncio.Future[Any]


_encoder = msgspec.json.Encoder()


def status_of(user_id: str, state: UserState, clock_ms: int, config: ModelConfig) -> UserStatus:
    """The status record of a user as of ``clock_ms``."""
    at_ms = max(clock_ms, state.last_seen_ms)
    return UserStatus(
        user_id=user_id,
        stage=stage_at(state, at_ms, config),
        tier=TIER_NAMES[state.tier] or None,
        risk=risk_at(state, at_ms, config),  # already rounded to 6 decimals
        episode=state.episode_ms,
        last_seen=state.last_seen_ms,
        as_of=at_ms,
        tenant=state.tenant,
        segment=state.segment,
    )


class StatusWriter:
    """Coalesces status writes per user.

    Writes decided in the observer (stage or tier changes, tombstones) are
    enqueued: the observer runs before the table write, so they are queued
    ahead of the state's changelog record and a crash cannot keep the state
    but lose its status. Coalesced writes are flushed later from a task and
    sent directly (not through Faust's producer buffer, which throttles the
    agent when it grows), except for a user whose enqueued write is still
    undelivered: that one is enqueued behind it, so per user the newest
    write stays the last.
    """

    def __init__(
        self,
        enqueue: Enqueue,
        send: Send,
        config: ModelConfig,
        clock_of: Callable[[int], int],
        read_state: StateReader,
        metrics: Metrics,
        *,
        partitions: int,
        owned: Callable[[], set[int]] | None = None,
        remembered_users: int = REMEMBERED_USERS,
        delivery_timeout_s: float = DELIVERY_TIMEOUT_S,
    ) -> None:
        self._enqueue = enqueue
        self._send = send
        self._config = config
        self._clock_of = clock_of
        self._read_state = read_state
        self._metrics = metrics
        self._partitions = partitions
        self._owned = owned
        self._remembered_users = remembered_users
        self._delivery_timeout_s = delivery_timeout_s
        self._pending: dict[str, _Pending] = {}
        self._written: OrderedDict[str, int] = OrderedDict()
        self._in_flight: list[_InFlight] = []
        self._queued: dict[str, asyncio.Future[Any]] = {}  # user -> last enqueued write
        # Changes seen while a flush is sending (user -> change count): a write
        # chosen before one of them is older than what follows it, and is dropped.
        self._changes = 0
        self._sending = 0
        self._changed_while_sending: dict[str, int] = {}
        # statuses announced again after a recovery, sent ANNOUNCE_PER_TICK a tick
        self._announce: dict[str, _Pending] = {}
        metrics.status_pending.set_function(lambda: len(self._pending) + len(self._announce))

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._announce)

    # -- the observer --------------------------------------------------
    def observe(self, user_id: str, state: UserState | None) -> None:
        """``TableStore`` observer: a user's state is being written (``None``: deleted)."""
        self._changes += 1
        if self._sending:
            self._changed_while_sending[user_id] = self._changes
        if self._announce:
            self._announce.pop(user_id, None)  # this newer write supersedes it
        if state is None:
            self._pending.pop(user_id, None)
            self._written.pop(user_id, None)
            partition = partition_for(user_id.encode(), self._partitions)
            self._enqueue_write(user_id, partition, None, TOMBSTONE)
            return
        clock_ms = self._clock_of(state.partition)
        stage = stage_at(state, max(clock_ms, state.last_seen_ms), self._config)
        code = _STAGE_CODE[stage] * len(TIER_NAMES) + state.tier
        if self._written.get(user_id) != code:
            self._pending.pop(user_id, None)
            value = self._encode(user_id, state, clock_ms, code)
            self._enqueue_write(user_id, state.partition, value, IMMEDIATE)
        else:
            self._pending[user_id] = _Pending(state.partition, state, clock_ms, self._changes)

    def reannounce(self, users: Iterable[tuple[str, UserState]]) -> int:
        """Write each user's current status again (a recovered partition: what its
        last owner decided after its last commit may not be on the topic).

        Sent ``ANNOUNCE_PER_TICK`` a tick, outside the commit's flush: these
        statuses belong to states already committed, and a partition of a
        million users would hold the next commit for a minute."""
        return sum(self.announce(user_id, state) for user_id, state in users)

    def announce(self, user_id: str, state: UserState) -> bool:
        """``reannounce`` of one user; False if a newer write of it is pending."""
        if user_id in self._pending:
            return False
        partition = state.partition
        self._announce[user_id] = _Pending(
            partition, state, self._clock_of(partition), self._changes
        )
        return True

    def forget_announced(self, partitions: Iterable[int]) -> None:
        """Partitions given away: their new owner announces their users."""
        gone = set(partitions)
        for user_id in [u for u, item in self._announce.items() if item.partition in gone]:
            del self._announce[user_id]

    # -- flushing ------------------------------------------------------
    async def send_pending(self, partitions: Iterable[int] | None = None) -> int:
        """Send the coalesced writes (of ``partitions``, default all); returns how many."""
        if partitions is None:
            chosen = list(self._pending.items())
            self._pending = {}
        else:
            wanted = set(partitions)
            chosen = [(u, p) for u, p in self._pending.items() if p.partition in wanted]
            for user_id, _ in chosen:
                del self._pending[user_id]
        await self._send_chosen(chosen)
        return len(chosen)

    async def _send_chosen(self, chosen: list[tuple[str, _Pending]]) -> None:
        sent = 0
        changed = self._changed_while_sending
        self._sending += 1
        try:
            for user_id, item in chosen:
                if changed.get(user_id, -1) > item.change:
                    continue  # changed since it was chosen: the newer write follows
                value = self._encode(user_id, item.state, item.clock_ms)
                queued = self._queued.get(user_id)
                if queued is not None and not queued.done():
                    self._enqueue_write(user_id, item.partition, value, COALESCED)
                    continue
                try:
                    future = await self._send(user_id.encode(), value, item.partition)
                except Exception as exc:  # the producer refused it: keep it for the next flush
                    failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                    failed.set_exception(exc)
                    future = failed
                self._in_flight.append(_InFlight(user_id, item.partition, future))
                sent += 1
        finally:  # one counter update per flush, not per record
            self._sending -= 1
            if not self._sending:
                changed.clear()
            if sent:
                self._metrics.status_writes.labels(kind=COALESCED).inc(sent)

    async def tick(self) -> None:
        """The periodic flush (every ``STATUS_FLUSH``): send, do not wait."""
        await self.send_pending()
        if self._announce:
            announce = self._announce
            # a recovery may have announced a partition given away since: its new
            # owner announces it
            owned = None if self._owned is None else self._owned()
            chosen = []
            for user_id in list(islice(announce, ANNOUNCE_PER_TICK)):
                item = announce.pop(user_id)
                if owned is None or item.partition in owned:
                    chosen.append((user_id, item))
            await self._send_chosen(chosen)
        self._settle()

    async def flush(
        self, partitions: Iterable[int] | None = None, timeout_s: float | None = None
    ) -> bool:
        """Send pending writes and wait until every write so far is delivered.

        Returns False if a write failed or timed out; the affected users are
        pending again (with their current state), so the caller must not
        commit offsets this time.
        """
        wanted = None if partitions is None else set(partitions)
        await self.send_pending(wanted)
        # Writes sent while we wait (the agent keeps processing) belong to later commits.
        waiting = {
            item.future for item in self._in_flight if wanted is None or item.partition in wanted
        }
        if waiting:
            await asyncio.wait(waiting, timeout=timeout_s or self._delivery_timeout_s)
        return self._settle(waiting)

    def discard(self, partitions: Iterable[int]) -> int:
        """Drop what is still pending for partitions given away (after a failed flush)."""
        gone = set(partitions)
        dropped = [u for u, item in self._pending.items() if item.partition in gone]
        for user_id in dropped:
            del self._pending[user_id]
        if dropped:
            log.warning("%d user-status writes dropped with revoked partitions", len(dropped))
        return len(dropped)

    def _settle(self, awaited: set[asyncio.Future[Any]] | None = None) -> bool:
        """Forget delivered writes and re-pend failed ones; False if one of
        ``awaited`` failed or is still not delivered."""
        ok = True
        keep: list[_InFlight] = []
        for item in self._in_flight:
            future = item.future
            if not future.done():
                keep.append(item)
                if awaited is not None and future in awaited:
                    ok = False  # not delivered within the timeout: try again later
            elif future.cancelled() or future.exception() is not None:
                ok = False
                self._retry(item)
        self._in_flight = keep
        self._queued = {user: f for user, f in self._queued.items() if not f.done()}
        return ok

    def _retry(self, item: _InFlight) -> None:
        self._written.pop(item.user_id, None)
        if item.user_id in self._pending:
            return
        if self._owned is not None and item.partition not in self._owned():
            return  # given away meanwhile: the new owner re-processes its records
        state = self._read_state(item.user_id)
        if state is not None:  # None: erased meanwhile, its tombstone follows in order
            self._pending[item.user_id] = _Pending(
                item.partition, state, self._clock_of(item.partition), self._changes
            )
        log.warning("a user-status write failed; it will be sent again")

    # -- records -------------------------------------------------------
    def _encode(
        self, user_id: str, state: UserState, clock_ms: int, code: int | None = None
    ) -> bytes:
        """The record's bytes; remembers the written (stage, tier) of the user."""
        status = status_of(user_id, state, clock_ms, self._config)
        if code is None:
            code = _STAGE_CODE[status.stage] * len(TIER_NAMES) + state.tier
        written = self._written
        written[user_id] = code
        written.move_to_end(user_id)
        if len(written) > self._remembered_users:
            written.popitem(last=False)
        return _encoder.encode(status)

    def _enqueue_write(self, user_id: str, partition: int, value: bytes | None, kind: str) -> None:
        future = self._enqueue(user_id.encode(), value, partition)
        self._in_flight.append(_InFlight(user_id, partition, future))
        self._queued[user_id] = future
        self._metrics.status_writes.labels(kind=kind).inc()


def users_of(table: Any, partitions: set[int], count: int) -> Iterable[tuple[str, UserState]]:
    """The users of ``partitions`` in the users table (``count`` partitions in all)."""
    if not partitions:
        return
    for key, blob in table.items():
        if blob is not None and partition_for(key, count) in partitions:
            yield key.decode(), unpack_state(blob)


def clock_reader(runtime: Any) -> Callable[[int], int]:
    """The partition clock from the runtime's engines (``NEVER`` if none yet)."""

    def clock_of(partition: int) -> int:
        engine = runtime.engines.get(partition)
        return NEVER if engine is None else int(engine.clock_ms)

    return clock_of
