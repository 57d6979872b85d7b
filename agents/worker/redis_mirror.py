"""The Redis serving mirror of the users table.

Owns the key layout of the serving API, the bounded backlog of user changes
not yet written, and the one task that writes them:

- ``{prefix}:user:{user_id}`` — a hash of the user's serving view
  (``agents.worker.user_view``: stage, tier, risk, last_seen, episode, tenant,
  group, ...); a user id names one user across tenants (docs/CONTRACTS.md);
- ``{prefix}:tenant:{tenant}:at_risk`` — a sorted set of the tenant's
  treatment users whose stage is ``at_risk``, scored by risk, and
  ``{prefix}:tenant:{tenant}:at_risk_holdout`` the same for hold-out users
  (kept apart so that a reader acting on the first never reaches the
  control group). ``{tenant}`` is percent-encoded (no ``:`` inside; empty for
  events without a tenant).

``prefix`` is the app id (``ENGAGEMENT_APP_ID``), so deployments sharing a
Redis never touch each other's keys. Nothing but the user id and the tenant
is in a key.

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
(``ROUND_TRIP_TIMEOUT_S``), not each reply. Once a resync has rewritten a
partition, the mirror knows which of its users it left in the at-risk set
and sends ZREM only for those (a superset is kept, exact for such partitions);
every resync request forgets that knowledge for its partitions, since another
worker or a restarted Redis may have changed the set meanwhile. So the mirror
assumes it is the only writer of its partitions' users, as the ownership
above already does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Final, Protocol, TypeVar, cast
from urllib.parse import quote

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agents.worker.metrics import Metrics
from agents.worker.mirror_window import FLUSH_LINGER_S, MirrorWindow
from agents.worker.user_view import UserFields, is_at_risk, mirror_fields
from streams.decode import partition_for
from tables.errors import StateFormatError
from tables.groups import HOLDOUT
from tables.model import ModelConfig
from tables.state import UserState

log = logging.getLogger(__name__)
T = TypeVar("T")

BATCH_USERS = 1000
SOCKET_TIMEOUT_S = 2.0  # connecting; each reply of a client with read timeouts
# The mirror's bound on one round trip (a pipeline, a SCAN page, a PING): its
# client has no per-reply timeout, which cost as much as the rest of a write.
ROUND_TRIP_TIMEOUT_S = 5.0
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
IDLE_PING_S = 5.0
SCAN_COUNT = 1000
# A Redis outage shows up as any of these; anything else is a bug and stops the task.
_FIELD_NAMES = {
    name: name.encode()
    for name in (
        "stage",
        "tier",
        "risk",
        "as_of",
        "last_seen",
        "episode",
        "tenant",
        "segment",
        "group",
        "events_total",
    )
}
REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)


KEEP: Final = "*"  # ``remove_stale``: leave this user's keys as they are
_SET_KEYS_CACHED = 4096


class MirrorKeys:
    """Key names of the serving API."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.user_prefix = f"{prefix}:user:"
        self.tenant_prefix = f"{prefix}:tenant:"
        self._sets: dict[tuple[str, str], bytes] = {}
        # a counter ``engagement redis-sync`` raises after each rebuild; workers
        # read it with every write and rewrite their partitions when it moves
        self.rebuilds = f"{prefix}:rebuilds"

    def user(self, user_id: str) -> str:
        return self.user_prefix + user_id

    def user_of(self, key: str) -> str | None:
        return key[len(self.user_prefix) :] if key.startswith(self.user_prefix) else None

    @property
    def user_pattern(self) -> str:
        """SCAN pattern of all user hashes (glob characters of the prefix escaped)."""
        return _glob_escaped(self.user_prefix) + "*"

    @property
    def set_pattern(self) -> str:
        """SCAN pattern of every tenant's at-risk sets."""
        return _glob_escaped(self.tenant_prefix) + "*"

    def at_risk(self, tenant: str, group: str) -> str:
        """The at-risk set of ``tenant``'s users of ``group``."""
        return self.at_risk_bytes(tenant, group).decode()

    def at_risk_bytes(self, tenant: str, group: str) -> bytes:
        key = self._sets.get((tenant, group))
        if key is None:
            suffix = "at_risk_holdout" if group == HOLDOUT else "at_risk"
            key = f"{self.tenant_prefix}{quote(tenant, safe='')}:{suffix}".encode()
            if len(self._sets) < _SET_KEYS_CACHED:
                self._sets[(tenant, group)] = key
        return key

    def both_sets(self, tenant: str) -> tuple[bytes, bytes]:
        return (self.at_risk_bytes(tenant, "treatment"), self.at_risk_bytes(tenant, HOLDOUT))


def _glob_escaped(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def set_of(keys: MirrorKeys, fields: UserFields) -> bytes | None:
    """The at-risk set the user belongs in (``None``: not at risk)."""
    if not is_at_risk(fields):
        return None
    return keys.at_risk_bytes(str(fields["tenant"]), str(fields["group"]))


class _HiredisPacking:
    """Commands packed by hiredis (C), as redis-py's sync client packs them; its
    asyncio connections pack in Python, half the cost of a pipelined write."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._packer.pack(*args)
        return packed


_PACKED_CLASSES: dict[type, type] = {}


def _packed_class(connection_class: type) -> type:
    packed = _PACKED_CLASSES.get(connection_class)
    if packed is None:
        name = f"Hiredis{connection_class.__name__}"
        packed = _PACKED_CLASSES[connection_class] = type(
            name, (_HiredisPacking, connection_class), {}
        )
    return packed


def redis_client(url: str, read_timeout_s: float | None = SOCKET_TIMEOUT_S) -> Redis:
    """A client that fails fast: the mirror retries with its own backoff.

    ``read_timeout_s=None``: no timeout per reply; the caller bounds each
    round trip itself (the mirror: ``round_trip``)."""
    client: Redis = Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=read_timeout_s,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )
    pool = client.connection_pool
    pool.connection_class = _packed_class(pool.connection_class)
    return client


async def round_trip(call: Awaitable[T]) -> T:
    """``await call`` within ``ROUND_TRIP_TIMEOUT_S`` (``TimeoutError`` after it)."""
    async with asyncio.timeout(ROUND_TRIP_TIMEOUT_S):
        return await call


def _encoded(value: str | int | float) -> bytes:
    return value.encode() if isinstance(value, str) else repr(value).encode()


def write_user(
    pipe: Any,
    keys: MirrorKeys,
    user_id: str,
    fields: UserFields,
    *,
    maybe_member: bool = True,
    was_in: Iterable[bytes] = (),
) -> bytes | None:
    """Queue the user's whole hash and their at-risk membership (idempotent);
    returns the at-risk set the user is in (``None``: none).

    ``was_in``: the sets the caller may have left the user in (a ZREM from
    each the user no longer belongs in). ``maybe_member=False``: the caller knows the
    user is in no at-risk set but ``was_in``, so nothing else is removed (half
    the commands); otherwise both sets of the user's tenant are cleared but
    the one the user belongs in (another tenant's set: ``remove_stale``).
    Arguments go as bytes: redis-py's per-argument encoding of str, int and
    float was most of the mirror's cost per user.
    """
    args: list[bytes] = [keys.user(user_id).encode()]
    for name, value in fields.items():
        args.append(_FIELD_NAMES.get(name) or name.encode())
        args.append(_encoded(value))
    pipe.execute_command("HSET", *args)
    target = set_of(keys, fields)
    member = user_id.encode()
    if target is not None:
        pipe.execute_command("ZADD", target, _encoded(fields["risk"]), member)
    leave_sets(pipe, keys, member, fields, target, was_in, maybe_member)
    return target


def leave_sets(
    pipe: Any,
    keys: MirrorKeys,
    member: bytes,
    fields: UserFields,
    target: bytes | None,
    was_in: Iterable[bytes],
    maybe_member: bool,
) -> None:
    """ZREM the user from the sets they may be in but no longer belong in."""
    doomed = set(keys.both_sets(str(fields["tenant"]))) if maybe_member else set()
    doomed.update(was_in)
    if target is not None:
        doomed.discard(target)
    for key in sorted(doomed):
        pipe.execute_command("ZREM", key, member)


def delete_user(pipe: Any, keys: MirrorKeys, user_id: str, was_in: Iterable[bytes] = ()) -> None:
    """Remove the user's hash and their memberships of ``was_in``; a membership
    the caller does not know of is left for ``remove_stale``."""
    pipe.delete(keys.user(user_id))
    for key in sorted(was_in):
        pipe.execute_command("ZREM", key, user_id.encode())


async def scan_keys(client: Redis, pattern: str) -> AsyncIterator[str]:
    cursor = 0
    while True:
        cursor, found = await round_trip(client.scan(cursor, match=pattern, count=SCAN_COUNT))
        for key in found:
            yield str(key)
        if not cursor:
            break


async def scan_members(client: Redis, key: str) -> AsyncIterator[str]:
    cursor = 0
    while True:
        cursor, members = await round_trip(client.zscan(key, cursor, count=SCAN_COUNT))
        for member, _score in members:
            yield str(member)
        if not cursor:
            break


async def remove_stale(
    client: Redis,
    keys: MirrorKeys,
    placement: Callable[[str], str | None],
    batch: int = BATCH_USERS,
) -> int:
    """Delete the keys of users gone from the table and the memberships of sets
    users no longer belong in; returns how many users lost a key.

    ``placement(user_id)``: ``None`` for a user no longer stored, else the
    at-risk set key the user belongs in (``""``: none), or ``KEEP`` for a user
    this caller does not own."""
    known: dict[str, str | None] = {}

    def where(user_id: str) -> str | None:
        if user_id not in known:
            known[user_id] = placement(user_id)
        return known[user_id]

    doomed_hashes: set[str] = set()
    async for key in scan_keys(client, keys.user_pattern):
        user_id = keys.user_of(key)
        if user_id is not None and where(user_id) is None:
            doomed_hashes.add(user_id)
    doomed_members: list[tuple[str, str]] = []
    async for key in scan_keys(client, keys.set_pattern):
        if not key.endswith((":at_risk", ":at_risk_holdout")):
            continue
        async for user_id in scan_members(client, key):
            proper = where(user_id)
            if proper != KEEP and proper != key:
                doomed_members.append((key, user_id))
    commands = [("DEL", keys.user(u), "") for u in sorted(doomed_hashes)]
    commands += [("ZREM", key, u) for key, u in doomed_members]
    for start in range(0, len(commands), batch):
        pipe = client.pipeline(transaction=False)
        for command, key, member in commands[start : start + batch]:
            if command == "DEL":
                pipe.delete(key)
            else:
                pipe.zrem(key, member)
        await round_trip(pipe.execute())
    return len(doomed_hashes | {u for _k, u in doomed_members})


async def mark_rebuilt(client: Redis, keys: MirrorKeys) -> int:
    """Tell the workers' mirrors that the mirror was rebuilt from the changelogs
    (``engagement redis-sync``): each rewrites its partitions from its table."""
    return int(await round_trip(client.incr(keys.rebuilds)))


def _rebuild_count(value: str | bytes | None) -> int:
    return int(value) if value else 0


async def top_at_risk(
    client: Redis, keys: MirrorKeys, limit: int, tenant: str = "", include_holdout: bool = False
) -> list[dict[str, Any]]:
    """The ``limit`` users of ``tenant`` most at risk, highest risk first, with their
    hashes; hold-out users only when asked (``include_holdout``)."""
    groups = ["treatment", HOLDOUT] if include_holdout else ["treatment"]
    members: list[tuple[str, float]] = []
    for group in groups:
        members += cast(
            list[tuple[str, float]],
            await client.zrevrange(keys.at_risk(tenant, group), 0, limit - 1, withscores=True),
        )
    members = sorted(members, key=lambda item: (-item[1], str(item[0])))[:limit]
    if not members:
        return []
    pipe = client.pipeline(transaction=False)
    for member, _score in members:
        pipe.hgetall(keys.user(str(member)))
    hashes = await pipe.execute()
    return [
        {**dict(fields), "user_id": str(member), "risk": float(score)}
        for (member, score), fields in zip(members, hashes, strict=True)
        if fields and fields.get("tenant", "") == tenant
    ]


class MirrorSource(Protocol):
    """What the mirror reads from the worker: ownership, the table, the clock."""

    def owned(self) -> set[int] | None:
        """Input partitions this worker owns now (``None``: all of them)."""

    def partition_of(self, user_id: str) -> int: ...

    def user_ids(self, partitions: set[int] | None) -> list[str]:
        """A snapshot of the users stored for ``partitions`` (``None``: all)."""

    def get(self, user_id: str) -> UserState | None: ...

    def fields(self, user_id: str, state: UserState) -> UserFields: ...


class StateReader(Protocol):
    def get(self, user_id: str) -> UserState | None: ...


class TableSource:
    """``MirrorSource`` over the worker's users table (UTF-8 keys, packed states).

    States are read through ``store`` (the runtime's ``TableStore``), keys
    are listed from ``table``.
    """

    def __init__(
        self,
        store: StateReader,
        table: Any,
        partitions: int,
        config: ModelConfig,
        clock_of: Callable[[int], int],
        owned: Callable[[], set[int]] | None = None,
    ) -> None:
        self._store = store
        self._table = table
        self._partitions = partitions
        self._config = config
        self._clock_of = clock_of
        self._owned = owned

    def owned(self) -> set[int] | None:
        return None if self._owned is None else self._owned()

    def partition_of(self, user_id: str) -> int:
        return partition_for(user_id.encode(), self._partitions)

    def user_ids(self, partitions: set[int] | None) -> list[str]:
        # A snapshot of the keys: the agent keeps writing while the mirror reads.
        keys: list[bytes] = list(self._table.keys())
        n = self._partitions
        return [
            key.decode()
            for key in keys
            if partitions is None or partition_for(key, n) in partitions
        ]

    def get(self, user_id: str) -> UserState | None:
        try:
            return self._store.get(user_id)
        except StateFormatError:
            log.error("redis mirror: a user state of an unknown format is not mirrored")
            return None

    def fields(self, user_id: str, state: UserState) -> UserFields:
        clock = self._clock_of(self.partition_of(user_id))
        return mirror_fields(user_id, state, clock, self._config)


def backoff_s(failures: int) -> float:
    return float(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(failures - 1, 0)))


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
        # At-risk membership as written: ``_members`` holds every user this
        # mirror may have left in an at-risk set, with those sets (a superset);
        # it is exact for the users of ``_known`` partitions (rewritten by a
        # resync since their last resync request), so a user there not in it
        # needs no ZREM.
        self._members: dict[str, set[bytes]] = {}
        self._known: set[int] = set()
        self._known_all = False
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
        self._forget_membership(partitions)
        if not self.resync_pending:
            self._resync_cause = cause
        if partitions is None or self._resync_partitions is None:
            self._resync_partitions = None
        else:
            self._resync_partitions |= set(partitions)
        self._wake.set()

    def _forget_membership(self, partitions: Iterable[int] | None) -> None:
        """Membership of ``partitions`` (``None``: all) is no longer known exactly:
        another worker may have written their users meanwhile, or Redis lost them."""
        self._known_all = False
        if partitions is None:
            self._known.clear()
        else:
            self._known.difference_update(partitions)

    def _unknown(self, partition: int) -> bool:
        """Whether the partition's users may be in sets this mirror does not know of."""
        return not (self._known_all or partition in self._known)

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
        rebuilds = _rebuild_count(value)
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
                delete_user(pipe, self.keys, user_id, self._members.get(user_id, ()))
                settled.append((user_id, None))
                deleted += 1
            else:
                fields = self.source.fields(user_id, state)
                unknown = self._unknown(partition)
                was_in = self._members.get(user_id, ())
                target = write_user(
                    pipe, self.keys, user_id, fields, maybe_member=unknown, was_in=was_in
                )
                self._may_be_in(user_id, target)
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
            self._is_in(user_id, target)
        self._count(written=written, deleted=deleted, not_owned=not_owned)
        return written + deleted

    def _may_be_in(self, user_id: str, target: bytes | None) -> None:
        """Before a write: the user may be in ``target`` too (a superset stays one)."""
        if target is not None:
            self._members.setdefault(user_id, set()).add(target)

    def _is_in(self, user_id: str, target: bytes | None) -> None:
        """After a write: the user is in ``target`` only."""
        if target is None:
            self._members.pop(user_id, None)
        else:
            self._members[user_id] = {target}

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
        self._forget_membership(partitions)
        try:
            # a rebuild before this point is overwritten by this resync
            self._rebuilds = _rebuild_count(await round_trip(self.client.get(self.keys.rebuilds)))
            written = await self._rewrite(partitions)
            removed = await remove_stale(
                self.client, self.keys, lambda user_id: self._placement(user_id, partitions)
            )
        except BaseException:
            self.request_resync(requested, cause)
            raise
        self._learn_membership(partitions, owned)
        self.metrics.redis_resyncs.labels(cause=cause).inc()
        self._count(written=written, deleted=removed)
        log.info(
            "redis mirror resynced (%s): %d users written, %d removed", cause, written, removed
        )
        return written

    def _learn_membership(self, partitions: set[int] | None, owned: set[int] | None) -> None:
        """After a resync of ``partitions``: their users' membership is as written."""
        if partitions is None:
            self._known_all = True
        else:
            self._known |= partitions
        if owned is not None:  # forget users given away (their owner writes them now)
            self._members = {
                user_id: sets
                for user_id, sets in self._members.items()
                if self.source.partition_of(user_id) in owned
            }

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
                    was_in = self._members.get(user_id, ())
                    target = write_user(pipe, self.keys, user_id, fields, was_in=was_in)
                    self._may_be_in(user_id, target)
                    settled.append((user_id, target))
                    written += 1
            await round_trip(pipe.execute())
            for user_id, target in settled:
                self._is_in(user_id, target)
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
