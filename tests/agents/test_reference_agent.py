"""The independent reference model, read over the raw input log as the fault
suite's verdict reads it, agrees with the running agent.

Without a broker, on a seeded mix of events (late, duplicated, re-delivered),
signed ticks, threshold versions, an erasure and poison: the same DLQ codes,
signals and transitions with their payloads, every user's state.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from support.agent_context import agent_context
from support.kafka_util import Record
from support.reference_verdict import close, run_reference_log, state_mismatches

from agents.simulation.population import poison_record
from agents.worker.wiring import Worker
from streams.decode import partition_for
from streams.records import ConfigUpdate, DlqRecord, Erase
from tables.state import UserState, unpack_state

PARTITIONS = 2
T0 = 1_800_000_000_000


class Recorder:
    """Feeds the agent and keeps every record as the input topic would hold it."""

    def __init__(self, worker: Worker, ctx: Any) -> None:
        self.worker = worker
        self.ctx = ctx
        self.log: list[Record] = []
        self.signals: dict[str, dict[str, Any]] = {}  # id -> payload
        self.transitions: dict[str, dict[str, Any]] = {}
        self.dlq: dict[tuple[int, int], str] = {}

    async def put(
        self,
        key: bytes | None,
        value: bytes,
        partition: int,
        append_ms: int,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        offset = self.ctx.sent_offset
        self.log.append(
            Record(
                topic=self.worker.engine_app.settings.topic_events,
                partition=partition,
                offset=offset,
                timestamp_ms=append_ms,
                key=key,
                value=value,
                headers=tuple(headers or ()),
            )
        )
        await self.ctx.put(
            value, key=key, partition=partition, timestamp=append_ms / 1000, headers=headers
        )

    async def control(self, record: Any, partition: int, append_ms: int) -> None:
        signer = self.worker.runtime.signer
        assert signer is not None
        value, headers = signer.sign(
            self.worker.engine_app.settings.topic_events, partition, record
        )
        await self.put(None, value, partition, append_ms, headers)


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    async with agent_context(
        partitions=PARTITIONS,
        at_risk_ms="3s",
        dormant_ms="6s",
        churned_ms="9s",
        lateness_ms="500ms",
        day_ms="1s",
        stall_guard_ms="1h",
        erasure_suppress_ms="5s",
    ) as (worker, ctx):
        rec = Recorder(worker, ctx)
        dlq_decoder = msgspec.json.Decoder(DlqRecord)

        async def capture_signal(*, key: bytes, value: bytes, **_: Any) -> None:
            payload = msgspec.json.decode(value)
            rec.signals[payload["signal_id"]] = payload

        async def capture_dlq(*, key: bytes | None, value: bytes, **_: Any) -> None:
            item = dlq_decoder.decode(value)
            rec.dlq[(item.partition, item.offset)] = item.reason

        def done(**_: Any) -> asyncio.Future[Any]:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future

        async def done_now(**_: Any) -> asyncio.Future[Any]:
            return done()

        async def capture_transition(*, key: bytes, value: bytes, **_: Any) -> None:
            payload = msgspec.json.decode(value)
            rec.transitions[payload["transition_id"]] = payload

        worker.engine_app.signals.send = capture_signal
        worker.engine_app.lifecycle.send = capture_transition
        worker.engine_app.dlq.send = capture_dlq
        worker.engine_app.status.send_soon = done
        worker.engine_app.status.send = done_now
        yield rec


async def feed_mix(recorder: Recorder) -> list[str]:
    """Late, duplicated and re-delivered events, ticks, a threshold version, an
    erasure and poison, then a tick late enough for everyone to churn; the users."""
    rng = random.Random(5)
    users = [f"user{i}" for i in range(24)]
    clock = T0
    sent: list[tuple[bytes, bytes, int, int]] = []
    for step in range(400):
        clock += rng.randrange(0, 300)
        roll = rng.random()
        if roll < 0.04:
            for partition in range(PARTITIONS):
                seen = clock - rng.randrange(0, 2_000)
                tick = recorder.worker.runtime.tick_record  # signs with the worker's key
                recorder.worker.runtime.events_seen_append_ms = seen
                value, headers = tick(partition, clock + rng.randrange(0, 3_000))
                await recorder.put(None, value, partition, clock, headers)
            continue
        if roll < 0.06 and sent:  # a re-delivered record (same bytes, new offset)
            key, value, partition, _ = rng.choice(sent)
            await recorder.put(key, value, partition, clock)
            continue
        if roll < 0.08:
            bad = poison_record(step, seed=3, now_ms=clock)
            partition = partition_for(bad.key, PARTITIONS) if bad.key else 0
            await recorder.put(bad.key, bad.value, partition, clock)
            continue
        user = rng.choice(users)
        ts = clock - (rng.randrange(0, 2_000) if rng.random() < 0.1 else 0)
        body = {"event_id": f"e{step}", "user_id": user, "type": "view", "ts": ts}
        if step % 7 == 0:
            body["tenant"] = "acme"
        key, value = user.encode(), json.dumps(body).encode()
        partition = partition_for(key, PARTITIONS)
        await recorder.put(key, value, partition, clock)
        sent.append((key, value, partition, clock))
        if step == 150:
            erased = users[3]
            await recorder.control(
                Erase(user_id=erased, issued_ms=clock), partition_for(erased.encode(), 2), clock
            )
        if step == 200:
            version = ConfigUpdate(
                scope="acme",
                effective_from=clock,
                at_risk_ms=2_000,
                dormant_ms=4_000,
                churned_ms=8_000,
            )
            for p in range(PARTITIONS):
                await recorder.control(version, p, clock)

    for partition in range(PARTITIONS):  # the end: everyone silent long enough to churn
        recorder.worker.runtime.events_seen_append_ms = clock
        value, headers = recorder.worker.runtime.tick_record(partition, clock + 20_000)
        await recorder.put(None, value, partition, clock + 20_000, headers)
    return users


def agent_table(recorder: Recorder) -> dict[str, UserState]:
    return {
        key.decode(): unpack_state(blob)
        for key, blob in recorder.worker.engine_app.users.items()
        if blob is not None
    }


async def test_the_reference_agrees_with_the_agent(recorder: Recorder) -> None:
    """The independent reference model read over the raw input log, as a fault
    check can use it: the same DLQ codes, signals, transitions and states."""
    await feed_mix(recorder)
    reference = run_reference_log(recorder.worker.engine_app.settings, recorder.log)
    assert recorder.dlq == reference.dlq
    assert set(recorder.signals) == reference.signal_ids
    assert set(recorder.transitions) == reference.transition_ids
    assert len(recorder.signals) > 10, "the mix must produce signals"
    problems: list[str] = []
    for out in reference.partitions.values():
        for _, signal in out.signals:
            close(recorder.signals[signal["signal_id"]], signal, signal["signal_id"], problems)
        for _, moved in out.transitions:
            close(recorder.transitions[moved["transition_id"]], moved, "transition", problems)
    assert problems == []
    assert reference.counts()["suppressed"] > 0 and reference.counts()["erased"] == 1
    table = agent_table(recorder)
    assert len(table) > 10
    assert state_mismatches(reference, recorder.log, table) == []
    user, state = sorted(table.items())[0]
    table[user] = msgspec.structs.replace(state, streak_days=state.streak_days + 1)
    del table[sorted(table)[1]]
    found = state_mismatches(reference, recorder.log, table)
    assert len(found) == 2 and found[0].startswith(f"{user}: streak_days")
    assert found[1].endswith("only in the reference")
