"""The recovery rebuild lets the event loop run while it reads the users table, and indexes every user as the engine's own one-pass
rebuild does."""

from __future__ import annotations

import asyncio
import time

import pytest
from support.agent_context import agent_context

from agents.worker import runtime as runtime_module
from agents.worker.checkpoint import LocalStore
from streams.decode import partition_for
from tables.engine import DictStore, PartitionEngine
from tables.fold import new_state
from tables.model import ModelEvent
from tables.state import UserState, pack_state

PARTITIONS = 4
USERS = 1_000
CHUNK = 100
DAY_MS = 1_000


def _states(now_ms: int) -> dict[str, UserState]:
    states = {}
    for index in range(USERS):
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
        states[user] = new_state(event, DAY_MS)
    return states


async def test_rebuild_yields_between_chunks_and_indexes_every_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime_module, "REBUILD_CHECK_USERS", CHUNK)
    monkeypatch.setattr(runtime_module, "REBUILD_SLICE_S", 0.0)  # yield at every look
    now_ms = int(time.time() * 1000)
    states = _states(now_ms)
    async with agent_context(partitions=PARTITIONS, day_ms="1s") as (worker, _ctx):
        local = LocalStore(worker.engine_app.users)
        for user, state in states.items():
            local.put_now(user.encode(), state.partition, pack_state(state))
        turns = 0
        running = True

        async def other_task() -> None:
            nonlocal turns
            while running:
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(other_task())
        await asyncio.sleep(0)
        before = turns
        visited: list[tuple[int, str]] = []
        counts = await worker.runtime.rebuild(
            set(range(PARTITIONS)),
            lambda partition, user, _state: visited.append((partition, user)),
        )
        during = turns - before
        running = False
        await task

        assert during >= USERS // CHUNK - 1  # the other task ran between the chunks
        assert sorted(user for _, user in visited) == sorted(states)
        by_partition: dict[int, dict[str, UserState]] = {}
        for user, state in states.items():
            by_partition.setdefault(state.partition, {})[user] = state
        assert counts == {p: len(by_partition.get(p, {})) for p in range(PARTITIONS)}
        for partition, engine in worker.runtime.engines.items():
            reference = PartitionEngine(
                partition, engine.config, DictStore(), high_ms=engine.high_ms
            )
            reference.rebuild_index(by_partition.get(partition, {}).items())
            assert len(engine.index) == len(reference.index)
            assert engine.index.next_bucket_start_ms() == reference.index.next_bucket_start_ms()
            for days in range(0, 60, 3):  # who falls due, clock step by clock step
                clock_ms = now_ms + days * DAY_MS
                assert engine.index.pop_candidates(clock_ms) == reference.index.pop_candidates(
                    clock_ms
                )
            assert len(engine.index) == len(reference.index) == 0
