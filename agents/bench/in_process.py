"""Figures the bench measures without a worker: offline replay, state bytes per
user, the cost of a clock tick, and the Redis mirror's write path."""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

import msgspec

from agents.stack.services import RedisServer
from streams.decode import id_hash
from tables.engine import DictStore, PartitionEngine
from tables.lifecycle import STAGE_ACTIVE
from tables.model import ModelConfig, ModelEvent
from tables.state import UserState, pack_state

DAY_MS = 86_400_000


class TimedReplay(msgspec.Struct):
    events: int
    wall_s: float
    cpu_s: float


def replay_in_own_process(path: Path, as_of_ms: int, config: ModelConfig) -> TimedReplay:
    """``replay`` of ``path`` timed in a fresh interpreter, as ``engagement replay``
    runs (start-up not counted), not in the bench's process with its records and
    broker clients. The configuration goes on stdin (it holds the hold-out salt)."""
    code = "import sys; from agents.bench.in_process import time_replay; time_replay(*sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), str(as_of_ms)],
        input=msgspec.json.encode(config),
        capture_output=True,
        timeout=3_600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the replay's process failed: {done.stderr.decode()[-2000:]}")
    return msgspec.json.decode(done.stdout.splitlines()[-1], type=TimedReplay)


def time_replay(path: str, as_of_ms: str) -> None:
    """The child's side: one ``replay`` call, its figures as one JSON line."""
    from agents.offline.replay import replay

    config = msgspec.json.decode(sys.stdin.buffer.read(), type=ModelConfig)
    started_wall = time.perf_counter()
    started_cpu = time.process_time()
    with open(os.devnull, "w") as scores:
        stats = replay(Path(path), int(as_of_ms), config, scores, progress=False)
    timed = TimedReplay(
        events=stats.events,
        wall_s=time.perf_counter() - started_wall,
        cpu_s=time.process_time() - started_cpu,
    )
    sys.stdout.buffer.write(msgspec.json.encode(timed) + b"\n")


def replay_rate(
    records: list[tuple[bytes, bytes, int]], config: ModelConfig, as_of_ms: int
) -> tuple[TimedReplay, DictStore]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        with path.open("wb") as handle:
            for _key, value, _partition in records:
                handle.write(value + b"\n")
        timed = replay_in_own_process(path, as_of_ms, config)
    if timed.events != len(records):
        raise RuntimeError(f"the replay read {timed.events} events of {len(records)}")
    # the states for the size figures: the same model, in memory
    store = DictStore()
    engine = PartitionEngine(0, config, store)
    decoder = msgspec.json.Decoder()
    for _key, value, _partition in records:
        event = decoder.decode(value)
        engine.on_event(
            ModelEvent(
                event["user_id"],
                id_hash(event["event_id"]),
                event["type"],
                event["ts"],
                event["ts"],
                tenant=event.get("tenant"),
            )
        )
    return timed, store


def state_sizes(store: DictStore) -> tuple[float, float]:
    """Serialised bytes per user, and bytes allocated per user (key + value + dict slot)."""
    states = list(store.states.items())
    serialised = statistics.fmean(len(pack_state(state)) for _user, state in states)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = {user.encode(): pack_state(state) for user, state in states}
    resident = (tracemalloc.get_traced_memory()[0] - before) / len(held)
    tracemalloc.stop()
    del held
    return serialised, resident


def tick_costs(config: ModelConfig, users: int, due: int) -> tuple[float, float]:
    """ms of one clock advance with none due, and with ``due`` users due, among ``users``."""
    store = DictStore()
    base = 1_700_000_000_000
    # Both past their "new" days: only the near users' tier (at risk) falls due
    # at the tick. A user still "new" would become "active" there too: then the
    # tick would judge every user, not ``due`` of them.
    far = UserState(
        first_seen_ms=base, last_seen_ms=base + 30 * DAY_MS, active_days=3, stage=STAGE_ACTIVE
    )
    near = UserState(first_seen_ms=base, last_seen_ms=base, active_days=3, stage=STAGE_ACTIVE)
    for n in range(users):
        store.states[f"u{n}"] = near if n < due else far
    engine = PartitionEngine(0, config, store)
    engine.rebuild_index(store.states.items())
    engine.high_ms = base + config.lateness_ms
    samples = []
    for step in range(20):
        started = time.perf_counter()
        engine.observe(base + config.lateness_ms + 1 + step)
        samples.append(time.perf_counter() - started)
    none_due_ms = statistics.median(samples) * 1000
    started = time.perf_counter()
    emitted = engine.observe(base + config.policy.defaults_ms[0] + config.lateness_ms + 1)
    due_ms = (time.perf_counter() - started) * 1000
    assert len(emitted) == due and len(engine.take_transitions()) == due
    return none_due_ms, due_ms


async def redis_rate(server: RedisServer, store: DictStore, config: ModelConfig) -> float:
    """Users/s the Redis mirror writes: its own client, fields and pipelines, over
    the replay's user states (steady state: no ZREM for users not at risk)."""
    from agents.worker.redis_client import BATCH_USERS, redis_client, round_trip
    from agents.worker.redis_keys import MirrorKeys, write_user
    from agents.worker.user_view import mirror_fields

    client = redis_client(server.url, read_timeout_s=None)
    keys = MirrorKeys(f"bench-{uuid.uuid4().hex[:8]}")
    users = list(store.items())
    clock_ms = max(state.last_seen_ms for _user, state in users)
    started = time.perf_counter()
    for begin in range(0, len(users), BATCH_USERS):
        pipe = client.pipeline(transaction=False)
        for user_id, state in users[begin : begin + BATCH_USERS]:
            fields = mirror_fields(user_id, state, clock_ms, config)
            write_user(pipe, keys, user_id, fields, maybe_member=False)
        await round_trip(pipe.execute())
    rate = len(users) / (time.perf_counter() - started)
    await client.aclose()
    return rate
