"""Fault-injection harness: a steady event feed, progress by committed offsets,
a three-broker cluster, and the final verdict.

A scenario starts a ``FaultRun`` (one isolated deployment, real workers),
feeds at least 100k events at a fixed rate in real time (``ts`` = now, so
event time and broker time agree, as in production), injects its faults
while waiting on *outcomes* (committed offsets, readiness), then stops the
workers and judges everything they wrote against the independent reference
model run over the same input log and the feed's own record of what it sent
(``support.fault_verdict``). One line of figures per scenario is printed and
kept in ``run/faults/figures.jsonl`` for docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from agents.simulation.population import POISON_REASONS, poison_record
from agents.simulation.producer import forged_tick, misrouted_event
from agents.stack.services import KAFKA_SCRIPT, kafka_answers
from agents.stack.worker_process import WorkerProcess
from support.fault_figures import FeedLedger, Figures, Outputs, RedisView, last_per_key
from support.fault_verdict import judge
from support.kafka_util import Record, _partitions
from support.workers import Deployment

REPO = Path(__file__).resolve().parents[2]
FIGURES = REPO / "run" / "faults" / "figures.jsonl"
EVENT_TYPES = ("login", "view", "add_to_cart", "purchase", "checkout_failed", "support_ticket")
# the population's poison, then wrong_partition and bad_signature
POISON_KINDS = len(POISON_REASONS) + 2
REDIS_OUTAGE_S = 30.0
REDIS_FREEZE_S = 20.0
# key, value, partition (None: the key's), headers, and the record's tag in the
# feed's ledger (``FeedLedger``; a 4-tuple is a record the ledger does not know)
OutRecord = tuple[bytes | None, bytes, int | None, list[tuple[str, bytes]] | None, int]


# ---------------------------------------------------------------- the feed


@dataclass
class FeedPlan:
    """What the feed sends; shares are of all records sent."""

    events: int = 100_000
    rate_per_s: float = 2_000.0
    users: int = 2_000
    seed: int = 7
    late_share: float = 0.02  # ts up to 2 s in the past
    dup_share: float = 0.0  # the same event (event_id) sent again at a new offset
    poison_every: int = 0  # one bad record after every N events, cycling every DLQ reason
    hot_share: float = 0.0  # share of events of one hot user
    acks: str | int = "all"


class EventFeed:
    """Deterministic event content (user, type, ids) from a seed; ``ts`` is now."""

    def __init__(self, plan: FeedPlan, prefix: str, partitions: int) -> None:
        self.plan = plan
        self.prefix = prefix
        self.partitions = partitions
        self.rng = random.Random(plan.seed)
        self.users = [f"{prefix}-u{i}" for i in range(plan.users)]
        self.hot_user = f"{prefix}-hot"
        # Zipf-like activity: a few busy users, a long tail of rare ones (they go silent
        # for seconds and get signals); a tenth stop for good at some point (churn).
        weights = [1.0 / (i + 10) ** 0.9 for i in range(plan.users)]
        total = sum(weights)
        self.cumulative: list[float] = []
        acc = 0.0
        for weight in weights:
            acc += weight / total
            self.cumulative.append(acc)
        self.stop_at = {
            user: self.rng.randrange(plan.events)
            for user in self.rng.sample(self.users, plan.users // 10)
        }
        self.sent = 0
        self.poison_sent = 0
        self.recent: list[tuple[int, bytes]] = []  # (tag, value) of the last events
        self.ledger = FeedLedger()  # what was sent, and (``run_feed``) where it landed

    def _user(self) -> str:
        if self.plan.hot_share and self.rng.random() < self.plan.hot_share:
            return self.hot_user
        while True:
            index = bisect.bisect_left(self.cumulative, self.rng.random())
            user = self.users[min(index, len(self.users) - 1)]
            if self.stop_at.get(user, self.plan.events + 1) > self.sent:
                return user

    def next_records(self, count: int, now_ms: int) -> list[OutRecord]:
        out: list[OutRecord] = []
        for _ in range(count):
            plan = self.plan
            if plan.poison_every and self.sent and self.sent % plan.poison_every == 0:
                out.append(self._poison(now_ms))
            self.sent += 1
            if plan.dup_share and self.recent and self.rng.random() < plan.dup_share:
                tag, value = self.recent[self.rng.randrange(len(self.recent))]
                out.append((json.loads(value)["user_id"].encode(), value, None, None, tag))
                continue
            user = self._user()
            ts = now_ms
            if self.rng.random() < plan.late_share:
                ts -= self.rng.randrange(1, 2_000)
            event_id = f"{self.prefix}-e{self.sent}"
            tag = self.ledger.event(event_id, user)
            value = json.dumps(
                {
                    "event_id": event_id,
                    "user_id": user,
                    "type": self.rng.choice(EVENT_TYPES),
                    "ts": ts,
                    "tenant": "acme" if zlib.crc32(user.encode()) % 2 else "globex",
                }
            ).encode()
            self.recent.append((tag, value))
            if len(self.recent) > 50:
                self.recent.pop(0)
            out.append((user.encode(), value, None, None, tag))
        return out

    def _poison(self, now_ms: int) -> OutRecord:
        index = self.poison_sent
        self.poison_sent += 1
        kind = index % POISON_KINDS
        if kind < len(POISON_REASONS):  # the reason of that kind, in the variant of this round
            round_ = index // POISON_KINDS
            bad = poison_record(kind + round_ * len(POISON_REASONS), self.plan.seed, now_ms=now_ms)
            return (bad.key, bad.value, None, None, self.ledger.poison(bad.reason))
        if kind == len(POISON_REASONS):
            key, value, partition = misrouted_event(index, self.plan.seed, now_ms, self.partitions)
            return (key, value, partition, None, self.ledger.poison("wrong_partition"))
        value, headers = forged_tick(now_ms)
        tag = self.ledger.poison("bad_signature")
        return (None, value, index % self.partitions, headers, tag)


@dataclass
class FeedStats:
    records: int = 0
    failed: int = 0
    offsets: dict[int, list[int]] = field(default_factory=dict)  # partition -> sorted offsets
    done: bool = False


async def run_feed(bootstrap: str, topic: str, feed: EventFeed, stats: FeedStats) -> None:
    """Send ``plan.events`` events at ``plan.rate_per_s``; survives broker outages.

    A record whose send fails is sent again (as a real producer would: if
    the failed attempt did land, the retry is a producer duplicate, skipped
    by ``event_id``), so the log holds at least ``plan.events`` events.
    """
    plan = feed.plan
    step_s = 0.05
    per_step = max(1, round(plan.rate_per_s * step_s))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=plan.acks,
        linger_ms=10,
        request_timeout_ms=15_000,
        retry_backoff_ms=200,
    )
    await producer.start()
    retry: list[OutRecord] = []
    try:
        next_at = time.monotonic()
        while feed.sent < plan.events or retry:
            count = min(per_step, plan.events - feed.sent)
            batch, retry = retry + feed.next_records(count, int(time.time() * 1000)), []
            sending: list[tuple[OutRecord, Any]] = []
            for record in batch:
                key, value, partition, headers = record[:4]
                try:
                    future = await producer.send(
                        topic, value=value, key=key, partition=partition, headers=headers
                    )
                    sending.append((record, future))
                except Exception:  # broker down: send it again later
                    stats.failed += 1
                    retry.append(record)
            results = await asyncio.gather(*(f for _, f in sending), return_exceptions=True)
            for (record, _), result in zip(sending, results, strict=True):
                if isinstance(result, BaseException):
                    stats.failed += 1
                    retry.append(record)
                    continue
                stats.records += 1
                bisect.insort(stats.offsets.setdefault(result.partition, []), result.offset)
                tag = record[4] if len(record) > 4 else 0
                feed.ledger.landed(tag, result.partition, result.offset)
            next_at += step_s
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_at = time.monotonic()  # fell behind (outage): no catch-up burst
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
        stats.done = True


# ---------------------------------------------------------------- reading topics


async def read_all(bootstrap: str, topic: str, timeout_s: float = 180.0) -> list[Record]:
    """Every record of ``topic`` up to its end offsets at the time of the call."""
    partitions = await _partitions(bootstrap, topic, timeout_s)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    try:
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not all records read in {timeout_s} s")
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, batch in batches.items():
                for msg in batch:
                    if msg.offset < ends[tp]:
                        records.append(
                            Record(
                                topic=msg.topic,
                                partition=msg.partition,
                                offset=msg.offset,
                                timestamp_ms=msg.timestamp,
                                key=msg.key,
                                value=msg.value,
                                headers=tuple((k, bytes(v)) for k, v in msg.headers),
                            )
                        )
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


# ---------------------------------------------------------------- a three-broker cluster


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class KafkaCluster:
    """Three KRaft nodes (each broker and controller) via ``kafka.sh cluster-*``."""

    def __init__(self) -> None:
        rng = random.Random()
        while True:
            base = rng.randrange(20_000, 40_000)
            ports = [base, base + 1, base + 2, base + 1000, base + 1001, base + 1002]
            if all(_port_free(p) for p in ports):
                break
        self.base = base
        self.data = Path(tempfile.mkdtemp(prefix="engagement-kcluster-"))

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.base + i}" for i in range(3))

    @property
    def url(self) -> str:
        # Faust splits broker lists on ';' (settings.broker_hosts accepts both)
        return ";".join(f"kafka://127.0.0.1:{self.base + i}" for i in range(3))

    def _env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KAFKA_PORT=str(self.base),
            KAFKA_CLUSTER_DATA=str(self.data),
            KAFKA_HEAP="-Xmx400m",
            KAFKA_PYTHON=sys.executable,
            KAFKA_START_TIMEOUT="90",
        )
        env.update(extra)
        return env

    def _run(self, command: str, timeout_s: float = 180.0, **extra: str) -> None:
        done = subprocess.run(
            ["bash", str(KAFKA_SCRIPT), command],
            env=self._env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            start_new_session=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kafka.sh {command} failed: {done.stderr[-3000:]}")

    def start(self) -> None:
        self._run("cluster-start")

    def _node_env(self, node: int) -> dict[str, str]:
        quorum = ",".join(f"{i}@127.0.0.1:{self.base + 999 + i}" for i in (1, 2, 3))
        return {
            "KAFKA_NODE_ID": str(node),
            "KAFKA_PORT": str(self.base + node - 1),
            "KAFKA_DATA": str(self.data / f"node-{node}"),
            "KAFKA_CONTROLLER_PORT": str(self.base + 999 + node),
            "KAFKA_QUORUM": quorum,
            "KAFKA_CLUSTER_ID": (self.data / "cluster.id").read_text().strip(),
        }

    def kill_node(self, node: int) -> None:
        self._run("kill9", **self._node_env(node))

    def start_node(self, node: int) -> None:
        self._run("start", **self._node_env(node))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._run("cluster-stop", timeout_s=120)
        with contextlib.suppress(Exception):
            self._run("cluster-kill9", timeout_s=60)
        shutil.rmtree(self.data, ignore_errors=True)

    def answers(self) -> bool:
        return kafka_answers(self.bootstrap)


# ---------------------------------------------------------------- the run


class FaultRun:
    """One isolated deployment under fault injection."""

    def __init__(
        self,
        name: str,
        broker_url: str,
        run_dir: Path,
        plan: FeedPlan,
        *,
        redis_url: str | None = None,
        **overrides: str,
    ) -> None:
        self.name = name
        env = dict(overrides)
        if redis_url is not None:
            env["ENGAGEMENT_REDIS_URL"] = redis_url
        self.deployment = Deployment(broker_url, run_dir, **env)
        self.settings = self.deployment.settings
        self.plan = plan
        self.feed = EventFeed(plan, self.deployment.settings.app_id, self.settings.partitions)
        self.stats = FeedStats()
        self.redis_url = redis_url
        self.recoveries_s: list[float] = []
        self._feed_task: asyncio.Task[None] | None = None
        self._committed: dict[int, int] = {}
        self._admin: AIOKafkaAdminClient | None = None
        self.workers: dict[str, WorkerProcess] = {}
        self.notes: list[str] = []
        self._t0 = time.monotonic()

    def mark(self, what: str) -> None:
        """Keep a timestamped note (printed with a failure, kept with the figures)."""
        self.notes.append(f"{time.monotonic() - self._t0:.1f}s {what}")

    @property
    def bootstrap(self) -> str:
        return self.deployment.bootstrap

    # -- lifecycle -------------------------------------------------------
    async def start(self, *names: str) -> None:
        self._t0 = time.monotonic()
        await self.deployment.create_topics()
        for name in names or ("w0",):
            self.workers[name] = await self.deployment.start_worker(name)
        self.mark("workers ready, feed starts")
        self._feed_task = asyncio.create_task(
            run_feed(self.bootstrap, self.settings.topic_events, self.feed, self.stats)
        )

    async def start_worker(self, name: str, wait_ready: bool = True) -> WorkerProcess:
        process = self.deployment.worker(name)
        process.start()
        self.workers[name] = process
        if wait_ready:
            await process.wait_ready(180)
        return process

    def kill9(self, name: str = "w0") -> None:
        self.workers[name].kill9()
        self.mark(f"kill -9 {name}")

    async def restart(self, name: str = "w0", *, kill_during_recovery: bool = False) -> float:
        """Start ``name`` again after a crash; returns seconds until it processes again."""
        # Committed offsets of every record, ticks included: the feed may have
        # ended (and been committed) before the crash, and ticks keep flowing.
        before = sum((await self.committed()).values())
        started = time.monotonic()
        process = await self.start_worker(name, wait_ready=not kill_during_recovery)
        if kill_during_recovery:
            # crash again as soon as its web server answers, before it is ready
            # (restoring its tables); the note says whether it was still recovering
            assert await _wait_for(lambda: _http_status(process, "/healthz") == 200, 120, 0.05)
            recovering = _http_status(process, "/readyz") != 200
            process.kill9()
            self.mark(f"kill -9 {name} again {'during' if recovering else 'after'} recovery")
            process = await self.start_worker(name)

        async def committed_more() -> bool:
            return sum((await self.committed()).values()) > before

        return await self._recovered(committed_more, started)

    async def wait_processing_since(self, before: int, started: float) -> float:
        """Seconds from ``started`` until the committed event count passes ``before``."""
        return await self._recovered(self._progressed(before), started)

    async def _recovered(self, progressed: Any, started: float) -> float:
        ok = await _wait_for(progressed, 300)
        assert ok, f"no progress after the fault\n{self.deployment.log_tail()}"
        seconds = time.monotonic() - started
        self.recoveries_s.append(seconds)
        self.mark(f"processing again after {seconds:.1f}s")
        return seconds

    def _progressed(self, before: int) -> Any:
        async def check() -> bool:
            return await self.processed() > before

        return check

    async def metric(self, name: str, worker: str = "w0", **labels: str) -> float | None:
        """A worker's metric (summed over matching samples); ``None`` if it does not answer."""
        from support.metrics import sample

        try:
            text = await asyncio.to_thread(self.workers[worker].metrics_text)
        except OSError:
            return None
        return sample(text, name, **labels)

    async def wait_metric(
        self, name: str, predicate: Any, worker: str = "w0", timeout_s: float = 300.0, **labels: str
    ) -> None:
        async def holds() -> bool:
            value = await self.metric(name, worker, **labels)
            return value is not None and bool(predicate(value))

        assert await _wait_for(holds, timeout_s), (
            f"{self.name}: {name} never satisfied the condition\n{self.deployment.log_tail()}"
        )

    async def redis_outage(self, redis_server: Any, *, freeze: bool) -> None:
        """Take Redis away (stopped, data lost; or frozen by SIGSTOP) for a fixed
        time while the worker processes: it must keep processing, and the mirror
        must catch up afterwards (checked at the verdict)."""
        before = await self.processed()
        if freeze:
            redis_server.freeze()
            self.mark("redis frozen (SIGSTOP)")
        else:
            await asyncio.to_thread(redis_server.stop)
            self.mark("redis stopped")
        try:
            # the fault itself lasts this long; nothing to wait for
            await asyncio.sleep(REDIS_FREEZE_S if freeze else REDIS_OUTAGE_S)
            during = await self.processed()
            self.mark(f"{during - before} records processed during the outage")
            assert during > before, "the worker must keep processing while Redis is away"
        finally:
            if freeze:
                redis_server.thaw()
            else:
                await asyncio.to_thread(redis_server.start)
        back = time.monotonic()
        self.mark("redis back")
        await self.wait_metric("engagement_redis_up", lambda v: v == 1)
        await self.wait_metric("engagement_redis_needs_resync", lambda v: v == 0)
        self.recoveries_s.append(time.monotonic() - back)
        self.mark(f"mirror writing again after {self.recoveries_s[-1]:.1f}s")

    async def wait_quiet(self, timeout_s: float = 120.0) -> None:
        """Wait until the live workers stop changing anything: no new signal for
        three polls, nothing pending for Redis or the status topic.

        After the feed, ticks keep judging users until every one has churned;
        the comparison is of what the outputs converge to. (A worker stopped
        in the middle of such changes leaves its last Redis writes to the
        resync of the next start: see docs/RELIABILITY.md, limits.)"""
        live = [n for n, p in self.workers.items() if p.proc is not None and p.proc.poll() is None]
        names = (
            "engagement_signals_total",
            "engagement_redis_backlog_users",
            "engagement_status_pending",
        )
        last: tuple[float, ...] | None = None
        same = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = tuple([(await self.metric(m, n)) or 0.0 for n in live for m in names])
            idle = all(v == 0 for i, v in enumerate(now) if i % len(names) != 0)
            same = same + 1 if now == last and idle else 0
            if same >= 3:
                self.mark("workers quiet")
                return
            last = now
            await asyncio.sleep(1.0)
        self.mark(f"workers still busy after {timeout_s:.0f}s")

    # -- progress --------------------------------------------------------
    async def committed(self) -> dict[int, int]:
        """The group's committed offsets on the input topic (the last answer if
        the broker does not answer now)."""
        try:
            if self._admin is None:
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self.bootstrap, request_timeout_ms=5_000
                )
                await admin.start()
                self._admin = admin
            offsets = await self._admin.list_consumer_group_offsets(self.settings.app_id)
            self._committed = {
                tp.partition: meta.offset
                for tp, meta in offsets.items()
                if tp.topic == self.settings.topic_events and meta.offset >= 0
            }
        except Exception:  # broker down: keep the last answer, reconnect next time
            await self._close_admin()
        return dict(self._committed)

    async def _close_admin(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()

    async def processed(self) -> int:
        """Events (and poison) sent by the feed whose offsets the group has committed."""
        committed = await self.committed()
        return sum(
            bisect.bisect_left(offsets, committed.get(partition, 0))
            for partition, offsets in list(self.stats.offsets.items())
        )

    async def wait_fraction(self, fraction: float, timeout_s: float = 600.0) -> None:
        target = int(self.plan.events * fraction)

        async def reached() -> bool:
            return await self.processed() >= target

        assert await _wait_for(reached, timeout_s, 0.3), (
            f"{self.name}: {fraction:.0%} not processed in {timeout_s} s\n"
            f"{self.deployment.log_tail()}"
        )
        self.mark(f"{fraction:.0%} processed")

    async def wait_done(self, timeout_s: float = 900.0) -> None:
        """The feed finished and every record it sent is committed."""
        if self._feed_task is not None:
            await asyncio.wait_for(asyncio.shield(self._feed_task), timeout_s)

        async def caught_up() -> bool:
            return await self.processed() >= self.stats.records

        self.mark(f"feed done: {self.stats.records} records, {self.stats.failed} sends retried")
        assert await _wait_for(caught_up, timeout_s, 0.5), (
            f"{self.name}: not caught up ({await self.processed()} of {self.stats.records})\n"
            f"{self.deployment.log_tail()}"
        )
        self.mark("all committed")

    def stop_all(self) -> None:
        for process in self.workers.values():
            process.stop(grace_s=20.0)

    async def close(self) -> None:
        await self._close_admin()
        if self._feed_task is not None and not self._feed_task.done():
            self._feed_task.cancel()
            with contextlib.suppress(BaseException):
                await self._feed_task
        self.stop_all()

    # -- the verdict -----------------------------------------------------
    async def verdict(self) -> Figures:
        """Stop the workers, read everything back, judge it (``support.fault_verdict``)."""
        await self.wait_quiet()
        for name, process in self.workers.items():
            if process.proc is not None and process.proc.poll() is None:
                backlog = await self.metric("engagement_redis_backlog_users", name)
                resync = await self.metric("engagement_redis_needs_resync", name)
                pending = await self.metric("engagement_status_pending", name)
                dup_offset = await self.metric(
                    "engagement_duplicates_dropped_total", name, kind="duplicate_offset"
                )
                dup_id = await self.metric(
                    "engagement_duplicates_dropped_total", name, kind="duplicate_id"
                )
                self.mark(
                    f"{name} at stop: redis backlog {backlog}, resync pending {resync}, "
                    f"status pending {pending}, duplicates dropped since its start: "
                    f"offset {dup_offset}, id {dup_id}"
                )
        self.stop_all()
        codes = {n: p.proc.returncode for n, p in self.workers.items() if p.proc is not None}
        self.mark(f"workers stopped, exit codes {codes} (-9: killed after the grace time)")
        committed = await self.committed()
        settings = self.settings

        async def read(topic: str) -> list[Record]:
            records = await asyncio.wait_for(read_all(self.bootstrap, topic), 300)
            self.mark(f"read {len(records)} records of {topic}")
            return records

        log = await read(settings.topic_events)
        changelog = await read(f"{settings.app_id}-users-changelog")
        outputs = Outputs(
            signals=await read(settings.topic_signals),
            dlq=await read(settings.topic_dlq),
            changelog=changelog,
            status=await read(settings.topic_status),
            lifecycle=await read(settings.topic_lifecycle),
            redis=await asyncio.wait_for(self._redis_view(), 120),
        )
        started = time.monotonic()
        figures = await asyncio.to_thread(
            judge,
            self.name,
            settings,
            log,
            committed,
            outputs,
            self.feed.ledger,
            max(self.recoveries_s, default=0.0),
        )
        self.mark(f"judged against the reference in {time.monotonic() - started:.1f}s")
        figures.notes = list(self.notes)
        figures.store = settings.store
        if settings.store.startswith("rocksdb://"):
            figures.local_mismatches = local_store_mismatches(
                self.deployment.run_dir, changelog, figures.examples
            )
        return figures

    async def _redis_view(self) -> RedisView | None:
        """The mirror's hashes and at-risk sets of this run, ``None`` when there is no mirror."""
        if self.redis_url is None:
            return None
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.redis_url, decode_responses=True)
        try:
            view = RedisView(hashes={}, at_risk={})
            prefix = f"{self.settings.app_id}:user:"  # agents.worker.redis_keys.MirrorKeys
            async for key in client.scan_iter(match=f"{prefix}*", count=1000):
                view.hashes[key[len(prefix) :]] = await client.hgetall(key)
            async for key in client.scan_iter(match=f"{self.settings.app_id}:tenant:*", count=1000):
                view.at_risk[key] = set(await client.zrange(key, 0, -1))
            return view
        finally:
            await client.aclose()


def record_figures(figures: Figures, reporter: Any = None) -> None:
    """Print the one line and keep the figures for docs/RELIABILITY.md."""
    line = "FAULTS " + figures.line()
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(line)
    else:
        print(line, flush=True)
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a") as out:
        row = {
            **asdict(figures),
            "at": time.strftime("%FT%TZ", time.gmtime()),
        }
        out.write(json.dumps(row))
        out.write("\n")


ROCKS_OFFSET_KEY = b"__faust\0offset__"  # where Faust's RocksDB store keeps its changelog offset


def local_store_mismatches(run_dir: Path, changelog: list[Record], examples: list[str]) -> int:
    """Compare, per partition, the local RocksDB users database that went furthest
    (its stored changelog offset) with the changelog: it must have reached the
    partition's last record and hold exactly its last value per key."""
    from rocksdict import AccessType, Options, Rdict

    last: dict[int, dict[bytes, bytes | None]] = {}
    ends: dict[int, int] = {}
    for record in changelog:
        if record.key is not None:
            last.setdefault(record.partition, {})[record.key] = record.value
        ends[record.partition] = max(ends.get(record.partition, -1), record.offset)
    best: dict[int, tuple[int, dict[bytes, bytes]]] = {}
    for path in sorted(run_dir.glob("data-*/v1/tables/users-*.db")):
        partition = int(path.name.removesuffix(".db").rsplit("-", 1)[1])
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            stored = db.get(ROCKS_OFFSET_KEY)
            offset = -1 if stored is None else int(stored)
            if offset > best.get(partition, (-2, {}))[0]:
                content = {k: v for k, v in db.items() if k != ROCKS_OFFSET_KEY}
                best[partition] = (offset, content)
        finally:
            db.close()
    mismatches = 0
    for partition, end in ends.items():
        offset, content = best.get(partition, (-1, {}))
        if offset != end:
            mismatches += 1
            examples.append(f"users-{partition}.db reached changelog offset {offset} of {end}")
            continue
        want = {k: v for k, v in last.get(partition, {}).items() if v is not None}
        for key in want.keys() | content.keys():
            if want.get(key) != content.get(key):
                mismatches += 1
                if len(examples) < 40:
                    examples.append(
                        f"local users-{partition}.db differs from the changelog at {key!r}"
                    )
    return mismatches


def markdown_table(path: Path = FIGURES) -> str:
    """The latest figures of each (scenario, store) judged by the reference as the
    table of docs/RELIABILITY.md (``cd tests && ../.venv/bin/python -m support.faults``)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["events_in"] >= 100_000 and "state_mismatches" in row:
            latest[(row["scenario"], row.get("store", "memory://"))] = row
    head = (
        "| scenario | store | events in | applied | DLQ (copies) | de-duplicated | lost "
        "| double applied | state mismatches | signals | missing / extra / different "
        "| duplicate ids | transitions missing / extra / different "
        "| Redis mismatches | status mismatches | local mismatches | recovery s |"
    )
    out = [head, "|" + "---|" * 17]
    for (name, store), row in sorted(latest.items(), key=lambda item: (item[0][1], item[0][0])):
        redis = "n/a" if row["redis_mismatches"] is None else row["redis_mismatches"]
        local = row.get("local_mismatches")
        out.append(
            f"| {name} | {store} | {row['events_in']} | {row['applied']} "
            f"| {row['dlq']} ({row['dlq_copies']}) | {row['deduplicated']} | {row['lost']} "
            f"| {row['double_applied']} | {row['state_mismatches']} | {row['signals']} "
            f"| {row['signals_missing']} / {row['signals_extra']} / {row['signals_different']} "
            f"| {row['duplicate_signal_ids']} | {row['transitions_missing']} / "
            f"{row['transitions_extra']} / {row['transitions_different']} "
            f"| {redis} | {row['status_mismatches']} | {'n/a' if local is None else local} "
            f"| {row['recovery_s']:.1f} |"
        )
    return "\n".join(out)


async def _wait_for(predicate: Any, timeout_s: float, interval_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return True
        await asyncio.sleep(interval_s)
    return False


def _http_status(process: WorkerProcess, path: str) -> int | None:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{process.web_port}{path}", timeout=1
        ) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


__all__ = [
    "EventFeed",
    "FaultRun",
    "FeedPlan",
    "Figures",
    "KafkaCluster",
    "last_per_key",
    "markdown_table",
    "read_all",
    "record_figures",
]


if __name__ == "__main__":
    print(markdown_table())
