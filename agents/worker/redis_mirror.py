"""The Redis serving mirror of the users table: the bounded backlog of user changes
not yet written, and the one task that writes them (the keys:
``agents.worker.redis_keys``).

The ingest path only records the change (``observe``: a dict assignment,
coalesced per user, no I/O). When a change is written is the window's
choice (``agents.worker.mirror_window``: a stage or tier change at once, the
rest once per ``REDIS_WINDOW``). One background task writes pipelined batches
(``transaction=False``) of whole hashes and ZADD/ZREM: idempotent (set, never
increment), and in change order per user because there is one writer. A
failed batch goes back to the backlog (a newer change of the same user wins)
and is retried with exponential backoff: Redis errors never reach the
ingest path. If the backlog would pass ``REDIS_BACKLOG_MAX`` users it is
dropped and the mirror is marked "needs resync": once Redis answers, every
user of the owned partitions is rewritten from the table and keys of users
no longer there are removed. The same resync runs after each table recovery
(start, restart, rebalance), which also repairs changes a crash lost; after
Redis restarts (a new ``run_id``: an unpersisted Redis comes back empty); and
after a timed-out write (a hung Redis may still apply the abandoned batch
when it wakes, after newer ones). Changes of partitions this worker no longer
owns are not written: their new owner rewrites them after its recovery.

Each round trip (a pipeline, a SCAN page, a PING) is bounded as a whole
(``ROUND_TRIP_TIMEOUT_S``), not each reply. The mirror sends ZREM only for
the at-risk sets it may have left a user in (``agents.worker.mirror_membership``),
so it assumes it is the only writer of its partitions' users, as the
ownership above already does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from redis.asyncio import Redis
from redis.exceptions import TimeoutError as RedisTimeoutError

from agents.worker.metrics import Metrics
from agents.worker.mirror_membership import MirrorMembership
from agents.worker.mirror_source import MirrorSource
from agents.worker.mirror_window import FLUSH_LINGER_S, MirrorWindow
from agents.worker.redis_client import BATCH_USERS, REDIS_FAILURES, backoff_s, round_trip
from agents.worker.redis_keys import MirrorKeys, delete_user, set_of, write_user
from agents.worker.redis_sweep import KEEP, rebuild_count, remove_stale
from tables.state import UserState

log = logging.getLogger(__name__)

IDLE_PING_S = 5.0


class RedisMirror:
    """Observer of user state changes and their single writer to Redis."""

    RECOVERY = "recovery"
    OVERFLOW = "overflow"
    REDIS_RESTART = "redis_restart"
    TIMEOUT = "timeout"
    REBUILT = "rebuilt"

    def __init__(
        self,
        source: MirrorSource,
        keys: MirrorKeys,
        metrics: Metrics,
        client_factory: Callable[[], Redis],
        *,
        max_backlog: int,
        batch_users: int = BATCH_USERS,
        window_s: float = 1.0,
    ) -> None:
        self.source = source
        self.keys = keys
        self.metrics = metrics
        self._client_factory = client_factory
        self._client: Redis | None = None
        self.max_backlog = max_backlog
        self.batch_users = batch_users
        self._pending: dict[str, UserState | None] = {}
        self.window = MirrorWindow(window_s, max_backlog)
        self.membership = MirrorMembership()
        self._needs_resync = False
        self._resync_partitions: set[int] | None = set()
        self._resync_cause = self.RECOVERY
        self._wake = asyncio.Event()
        self._last_ok = 0.0
        self.failures = 0
        # Redis restarted without persistence is empty: its run_id tells.
        self._run_id: str | None = None
        self._check_run_id = True
        # ``keys.rebuilds`` as last read (None: not read yet)
        self._rebuilds: int | None = None
        metrics.redis_backlog.set_function(lambda: len(self._pending))
        metrics.redis_needs_resync.set_function(lambda: 1 if self.resync_pending else 0)

    # -- the ingest side (no I/O) -----------------------------------------
    def observe(self, user_id: str, state: UserState | None) -> None:
        """``TableStore`` observer: remember the newest state of ``user_id``."""
        if self._needs_resync:
            return  # the resync reads every user from the table anyway
        pending = self._pending
        if user_id not in pending and len(pending) >= self.max_backlog:
            self._overflow()
            return
        was_idle = not pending
        pending[user_id] = state
        if (self.window.note(user_id, state) or was_idle) and not self._wake.is_set():
            self._wake.set()

    def request_resync(self, partitions: Iterable[int] | None, cause: str = RECOVERY) -> None:
        """Rewrite every user of ``partitions`` (``None``: all owned) from the table."""
        self.membership.forget(partitions)
        if not self.resync_pending:
            self._resync_cause = cause
        if partitions is None or self._resync_partitions is None:
            self._resync_partitions = None
        else:
            self._resync_partitions |= set(partitions)
        self._wake.set()

    @property
    def backlog_users(self) -> int:
        return len(self._pending)

    @property
    def resync_pending(self) -> bool:
        return (
            self._needs_resync or self._resync_partitions is None or bool(self._resync_partitions)
        )

    def _overflow(self) -> None:
        if not self._needs_resync:
            log.warning(
                "redis mirror backlog passed %d users: dropped, will resync from the table",
                self.max_backlog,
            )
        self._pending.clear()
        self.window.urgent.clear()
        self.request_resync(None, self.OVERFLOW)
        self._needs_resync = True

    # -- the writer task ----------------------------------------------------
    @property
    def client(self) -> Redis:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    async def run(self) -> None:
        """Write until cancelled; never raises on Redis errors."""
        window = self.window
        try:
            while True:
                in_pass = window.in_pass(len(self._pending))
                try:
                    busy = await self.step(everything=in_pass)
                except REDIS_FAILURES as exc:
                    self._failed(exc)
                    await asyncio.sleep(backoff_s(self.failures))
                    continue
                if self.resync_pending or window.in_pass(len(self._pending)):
                    # a step that needed no I/O did not yield: let the loop run
                    await asyncio.sleep(0)
                    continue
                if busy and not in_pass:
                    if len(window.urgent) < self.batch_users:
                        await asyncio.sleep(FLUSH_LINGER_S)  # let more urgent users gather
                    continue
                await self._idle(window.wait_s() if self._pending else IDLE_PING_S)
        finally:
            await self.aclose()

    async def step(self, everything: bool = True) -> bool:
        """One unit of work: a resync, a batch, or an idle ping. True if there was work.

        ``everything=False``: only users whose stage or tier changed are written."""
        if self._check_run_id:
            await self._notice_restart()
        if self.resync_pending:
            await self.resync()
        elif self._pending and (everything or self.window.urgent):
            await self.flush_batch(everything)
        else:
            if time.monotonic() - self._last_ok >= IDLE_PING_S:
                # the idle round trip: Redis answers, and a redis-sync is noticed
                self._saw_rebuilds(await round_trip(self.client.get(self.keys.rebuilds)))
                self._succeeded()
            return False
        self._succeeded()
        return True

    async def drain(self) -> None:
        """Write everything pending now (tests, shutdown); raises on Redis errors."""
        while self.resync_pending or self._pending:
            await self.step()

    async def _idle(self, wait_s: float) -> None:
        """Wait ``wait_s`` or until woken (a change to write at once, a resync)."""
        self._wake.clear()
        if (self.window.urgent and self._pending) or self.resync_pending or wait_s <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), min(wait_s, IDLE_PING_S))

    async def _notice_restart(self) -> None:
        info = await round_trip(self.client.info("server"))
        run_id = str(info.get("run_id", ""))
        if self._run_id is not None and run_id != self._run_id:
            log.warning("redis restarted (new run_id): rewriting the mirror from the table")
            self.request_resync(None, self.REDIS_RESTART)
        self._run_id = run_id
        self._check_run_id = False

    def _saw_rebuilds(self, value: str | bytes | None) -> None:
        """``engagement redis-sync`` rebuilt the mirror from the changelogs (which
        trail the table): rewrite every owned partition from the table, so that
        no user keeps the sync's older value or at-risk membership."""
        rebuilds = rebuild_count(value)
        if self._rebuilds is not None and rebuilds != self._rebuilds:
            log.warning("redis mirror rebuilt by redis-sync: rewriting it from the table")
            self.request_resync(None, self.REBUILT)
        self._rebuilds = rebuilds

    def _succeeded(self) -> None:
        if self.failures:
            log.info("redis mirror reachable again after %d failed attempts", self.failures)
        self.failures = 0
        self._last_ok = time.monotonic()
        self.metrics.redis_up.set(1)

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self._check_run_id = True
        if isinstance(exc, TimeoutError | RedisTimeoutError):
            # A hung Redis may still apply the abandoned pipeline when it wakes,
            # after newer writes: rewrite everything once it answers again.
            self.request_resync(None, self.TIMEOUT)
        self.metrics.redis_up.set(0)
        self.metrics.redis_errors.inc()
        # The 1st, 2nd, 4th, 8th... failure only: an outage of hours
        # must not flood the log. Only the type: the text may carry the URL.
        level = logging.WARNING if self.failures & (self.failures - 1) == 0 else logging.DEBUG
        log.log(
            level,
            "redis mirror write failed (%s); backlog %d users, retry %d in %.1f s",
            type(exc).__name__,
            len(self._pending),
            self.failures,
            backoff_s(self.failures),
        )

    async def flush_batch(self, everything: bool = True) -> int:
        """Write up to ``batch_users`` pending users (``everything=False``: of those
        whose stage or tier changed); on failure they go back."""
        batch = self.window.choose(self._pending, self.batch_users, everything)
        owned = self.source.owned()
        settled: list[tuple[str, bytes | None]] = []  # membership once this batch is written
        pipe = self.client.pipeline(transaction=False)
        written = deleted = not_owned = 0
        for user_id, state in batch:
            partition = self.source.partition_of(user_id)
            if owned is not None and partition not in owned:
                # Its new owner rewrites the partition after recovering it.
                not_owned += 1
            elif state is None:
                delete_user(pipe, self.keys, user_id, self.membership.sets_of(user_id))
                settled.append((user_id, None))
                deleted += 1
            else:
                fields = self.source.fields(user_id, state)
                unknown = self.membership.unknown(partition)
                was_in = self.membership.sets_of(user_id)
                target = write_user(
                    pipe, self.keys, user_id, fields, maybe_member=unknown, was_in=was_in
                )
                self.membership.may_be_in(user_id, target)
                if target is not None or was_in:
                    settled.append((user_id, target))
                written += 1
        try:
            if written or deleted:
                pipe.get(self.keys.rebuilds)  # in the same round trip
                replies = await round_trip(pipe.execute())
                self._saw_rebuilds(replies[-1])
        except BaseException:
            self._requeue(batch)
            self.metrics.redis_writes.labels(outcome="failed").inc(written + deleted)
            raise
        for user_id, target in settled:
            self.membership.is_in(user_id, target)
        self._count(written=written, deleted=deleted, not_owned=not_owned)
        return written + deleted

    def _requeue(self, batch: list[tuple[str, UserState | None]]) -> None:
        for user_id, state in batch:
            if self._needs_resync:
                return
            if user_id not in self._pending and len(self._pending) >= self.max_backlog:
                self._overflow()
                return
            self._pending.setdefault(user_id, state)  # a newer change wins
            self.window.urgent[user_id] = None  # retried with the next batch, not a window later

    def _count(self, **outcomes: int) -> None:
        for outcome, count in outcomes.items():
            if count:
                self.metrics.redis_writes.labels(outcome=outcome).inc(count)

    async def resync(self) -> int:
        """Rewrite the requested partitions from the table; remove users gone from it."""
        requested = self._resync_partitions
        cause = self._resync_cause
        self._resync_partitions = set()
        # From here on every change is observed again; the table has the rest.
        self._needs_resync = False
        owned = self.source.owned()
        if requested is None:
            partitions = owned
        else:
            partitions = requested if owned is None else requested & owned
        self.membership.forget(partitions)
        try:
            # a rebuild before this point is overwritten by this resync
            self._rebuilds = rebuild_count(await round_trip(self.client.get(self.keys.rebuilds)))
            written = await self._rewrite(partitions)
            removed = await remove_stale(
                self.client, self.keys, lambda user_id: self._placement(user_id, partitions)
            )
        except BaseException:
            self.request_resync(requested, cause)
            raise
        self.membership.learn(partitions, owned, self.source.partition_of)
        self.metrics.redis_resyncs.labels(cause=cause).inc()
        self._count(written=written, deleted=removed)
        log.info(
            "redis mirror resynced (%s): %d users written, %d removed", cause, written, removed
        )
        return written

    async def _rewrite(self, partitions: set[int] | None) -> int:
        if partitions is not None and not partitions:
            return 0
        user_ids = self.source.user_ids(partitions)
        written = 0
        for start in range(0, len(user_ids), self.batch_users):
            pipe = self.client.pipeline(transaction=False)
            # States are read when the pipeline is built: a later change is
            # observed and written after this batch by the same task.
            settled: list[tuple[str, bytes | None]] = []
            for user_id in user_ids[start : start + self.batch_users]:
                state = self.source.get(user_id)
                if state is not None:
                    fields = self.source.fields(user_id, state)
                    was_in = self.membership.sets_of(user_id)
                    target = write_user(pipe, self.keys, user_id, fields, was_in=was_in)
                    self.membership.may_be_in(user_id, target)
                    settled.append((user_id, target))
                    written += 1
            await round_trip(pipe.execute())
            for user_id, target in settled:
                self.membership.is_in(user_id, target)
        return written

    def _placement(self, user_id: str, partitions: set[int] | None) -> str | None:
        """``remove_stale``'s view of a user: ``KEEP`` outside ``partitions``."""
        if partitions is not None and self.source.partition_of(user_id) not in partitions:
            return KEEP
        state = self.source.get(user_id)
        if state is None:
            return None
        target = set_of(self.keys, self.source.fields(user_id, state))
        return "" if target is None else target.decode()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
