"""Threshold config in the agent: signed ``$config`` records, lifecycle records, gauges.

Faust test_context (memory store, no broker). A "day" is 1 s; defaults 3/6/9 s.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry
from support.agent_context import agent_context

from agents.offline.replay import read_config, run_history
from agents.worker.config_forwarder import ConfigForwarder
from agents.worker.wiring import Worker
from streams.config_record import BadConfigRecord, parse_config_record
from streams.decode import partition_for
from streams.records import ConfigUpdate, LifecycleTransition, Signal
from streams.settings import load_settings
from tables.thresholds import ThresholdBook

PARTITIONS = 2
T0 = 1_700_000_000_000
_signal = msgspec.json.Decoder(Signal)
_transition = msgspec.json.Decoder(LifecycleTransition)


class Harness:
    def __init__(self, worker: Worker, ctx: Any) -> None:
        self.worker = worker
        self.ctx = ctx
        self.signals: list[Signal] = []
        self.transitions: list[LifecycleTransition] = []
        self.sent: list[bytes] = []  # the events put, in order (JSON Lines for a replay)

    @property
    def registry(self) -> CollectorRegistry:
        return self.worker.metrics.registry

    async def event(
        self, user: str, ts_ms: int, tenant: str = "acme", segment: str | None = None
    ) -> None:
        record: dict[str, object] = {
            "event_id": f"{user}@{ts_ms}",
            "user_id": user,
            "type": "visit",
            "ts": ts_ms,
            "tenant": tenant,
        }
        if segment is not None:
            record["segment"] = segment
        value = json.dumps(record).encode()
        self.sent.append(value)
        partition = partition_for(user.encode(), PARTITIONS)
        await self.ctx.put(value, key=user.encode(), partition=partition, timestamp=ts_ms / 1000)

    async def control(self, record: Any, partition: int, append_ms: int) -> None:
        signer = self.worker.runtime.signer
        assert signer is not None
        value, headers = signer.sign(
            self.worker.engine_app.settings.topic_events, partition, record
        )
        await self.ctx.put(
            value, key=None, partition=partition, timestamp=append_ms / 1000, headers=headers
        )

    async def tick(self, partition: int, wall_ms: int) -> None:
        self.worker.runtime.events_seen_append_ms = wall_ms
        value, headers = self.worker.runtime.tick_record(partition, wall_ms)
        await self.ctx.put(
            value, key=None, partition=partition, timestamp=wall_ms / 1000, headers=headers
        )

    def sample(self, name: str, labels: dict[str, str]) -> float | None:
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with agent_context(
        partitions=PARTITIONS,
        at_risk_ms="3s",
        dormant_ms="6s",
        churned_ms="9s",
        threshold_min_ms="1s",
        lateness_ms="0",
        day_ms="1s",
        new_days=2,
        stall_guard_ms="1h",
        redis_url="",
    ) as (worker, ctx):
        h = Harness(worker, ctx)

        async def capture_signal(*, key: bytes, value: bytes, **_: Any) -> None:
            h.signals.append(_signal.decode(value))

        async def capture_transition(*, key: bytes, value: bytes, **_: Any) -> None:
            assert key == _transition.decode(value).user_id.encode()
            h.transitions.append(_transition.decode(value))

        async def ignore(**_: Any) -> None:
            return None

        worker.engine_app.signals.send = capture_signal
        worker.engine_app.lifecycle.send = capture_transition
        worker.engine_app.dlq.send = ignore

        def capture_status(**_: Any) -> asyncio.Future[Any]:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future

        worker.engine_app.status.send_soon = capture_status
        yield h


def tenant_update(at_risk_s: int, effective_from: int = T0) -> ConfigUpdate:
    return ConfigUpdate(
        scope="acme",
        effective_from=effective_from,
        at_risk_ms=at_risk_s * 1000,
        dormant_ms=(at_risk_s + 2) * 1000,
        churned_ms=(at_risk_s + 4) * 1000,
    )


async def test_a_config_record_changes_the_tenants_thresholds_at_run_time(
    harness: Harness,
) -> None:
    partition = partition_for(b"ann", PARTITIONS)
    await harness.event("ann", T0)
    await harness.control(tenant_update(1), partition, T0 + 10)
    await harness.tick(partition, T0 + 1_500)
    at_risk = [s for s in harness.signals if s.user_id == "ann"]
    assert [(s.kind, s.threshold_ms, s.threshold_source) for s in at_risk] == [
        ("at_risk", 1_000, "tenant")
    ]
    assert harness.sample("engagement_config_records_total", {"outcome": "applied"}) == 1
    # The partition's versions are persisted in its own partition of the clocks table.
    assert harness.worker.engine_app.clocks.get(f"{partition}:config".encode())


async def test_an_older_or_resent_version_changes_nothing(harness: Harness) -> None:
    partition = partition_for(b"cat", PARTITIONS)
    await harness.event("cat", T0)
    await harness.control(tenant_update(1, effective_from=T0 + 5), partition, T0 + 10)
    await harness.control(tenant_update(1, effective_from=T0 + 5), partition, T0 + 11)
    await harness.control(tenant_update(2, effective_from=T0), partition, T0 + 12)
    assert harness.sample("engagement_config_records_total", {"outcome": "unchanged"}) == 2
    await harness.tick(partition, T0 + 1_200)
    assert [(s.kind, s.threshold_ms) for s in harness.signals] == [("at_risk", 1_000)]


async def test_versions_survive_a_restart_of_the_partition_engine(harness: Harness) -> None:
    partition = partition_for(b"dan", PARTITIONS)
    await harness.event("dan", T0)
    await harness.control(tenant_update(1, effective_from=T0 + 500), partition, T0 + 10)
    runtime = harness.worker.runtime
    await runtime.rebuild(set())  # revoked ...
    await runtime.rebuild({partition})  # ... and assigned again: engine rebuilt from the tables
    await harness.tick(partition, T0 + 1_600)
    assert [(s.kind, s.threshold_source) for s in harness.signals] == [("at_risk", "tenant")]


async def test_lifecycle_transitions_go_to_their_topic_and_stage_gauges_follow(
    harness: Harness,
) -> None:
    partition = partition_for(b"eve", PARTITIONS)
    await harness.event("eve", T0)
    await harness.event("eve", T0 + 1_000)
    labels = {"partition": str(partition)}
    assert harness.sample("engagement_users_by_stage", {"stage": "new", **labels}) == 1
    await harness.tick(partition, T0 + 4_500)  # new ends at 2 s, at_risk due at 4 s
    moves = [(t.from_stage, t.to_stage) for t in harness.transitions if t.user_id == "eve"]
    assert moves == [(None, "new"), ("new", "active"), ("active", "at_risk")]
    assert harness.transitions[-1].transition_id == f"eve:{T0 + 4_000}:at_risk"
    assert harness.sample("engagement_users_by_stage", {"stage": "new", **labels}) == 0
    assert harness.sample("engagement_users_by_stage", {"stage": "at_risk", **labels}) == 1
    assert harness.sample("engagement_lifecycle_transitions_total", {"stage": "at_risk"}) == 1


async def test_dau_wau_mau_count_users_by_their_last_active_day(harness: Harness) -> None:
    users = [f"u{i}" for i in range(40)]
    mine = [u for u in users if partition_for(u.encode(), PARTITIONS) == 0][:6]
    # Two users today (day 10), one 3 days ago, one 20 days ago, two 40 days ago.
    ages = [0, 0, 3, 20, 40, 40]
    for user, age in zip(mine, ages, strict=True):
        await harness.event(user, T0 + (10 - age) * 1_000, tenant="")
    await harness.tick(0, T0 + 10 * 1_000 + 1)
    labels = {"tenant": "other", "partition": "0"}
    assert harness.sample("engagement_dau", labels) == 2
    assert harness.sample("engagement_wau", labels) == 3
    assert harness.sample("engagement_mau", labels) == 4
    assert harness.sample("engagement_dau_mau_ratio", labels) == 0.5


def test_config_record_parsing_takes_scope_and_time_from_key_or_value() -> None:
    update = parse_config_record(
        b"acme/pro@2024-01-01T00:00:00Z", b'{"at_risk":"3d","dormant":"7d","churned":"21d"}'
    )
    assert update == ConfigUpdate(
        scope="acme/pro",
        effective_from=1_704_067_200_000,
        at_risk_ms=3 * 86_400_000,
        dormant_ms=7 * 86_400_000,
        churned_ms=21 * 86_400_000,
    )
    explicit = parse_config_record(
        None, b'{"scope":"acme","effective_from":5,"at_risk":1,"dormant":2,"churned":3}'
    )
    assert explicit is not None and (explicit.scope, explicit.effective_from) == ("acme", 5)
    assert parse_config_record(b"acme@1", None) is None  # a tombstone
    for bad in (b'{"at_risk": "3d"}', b'{"at_risk":"9d","dormant":"7d","churned":"21d"}', b"[]"):
        with pytest.raises(BadConfigRecord):
            parse_config_record(b"acme@1", bad)


async def test_forwarder_signs_each_version_into_every_partition() -> None:
    settings = load_settings(partitions=3).with_generated_secrets()
    from streams.control import signer_for

    signer = signer_for(settings)
    assert signer is not None
    sent: list[tuple[int, Any]] = []

    async def send(value: bytes, partition: int, headers: list[tuple[str, bytes]]) -> None:
        verified = signer.verify(settings.topic_events, partition, "config", json.loads(value))
        sent.append((partition, verified))

    forwarder = ConfigForwarder(settings, signer, send, lambda: True)
    assert await forwarder.forward(b"acme@10", b'{"at_risk":1,"dormant":2,"churned":3}') == 3
    assert await forwarder.forward(b"acme@10", b"not json") == 0
    assert [p for p, _ in sent] == [0, 1, 2]
    assert all(isinstance(record, ConfigUpdate) for _, record in sent)
    assert (forwarder.forwarded, forwarder.rejected) == (1, 1)


async def test_replay_with_the_config_file_decides_what_the_worker_decided(
    harness: Harness, tmp_path: Path
) -> None:
    """Versions that reach the worker before their effective_from: a replay of the same
    events with the same versions (``replay --config``) emits the same signals."""
    versions = [
        # scope, effective from (ms after T0), at_risk / dormant / churned (ms)
        ConfigUpdate("acme", T0 + 3_000, 1_000, 2_000, 4_000),
        ConfigUpdate("acme/vip", T0 + 5_000, 2_500, 5_000, 7_000),
        ConfigUpdate("acme", T0 + 9_000, 4_000, 5_000, 6_000),
    ]
    for version in versions:
        for partition in range(PARTITIONS):
            await harness.control(version, partition, T0)
    events = [
        ("ann", 0, "acme", None),
        ("bob", 500, "acme", "vip"),
        ("cy", 700, "zed", None),
        ("dee", 2_500, "acme", None),
        ("ann", 4_200, "acme", None),
        ("bob", 6_000, "acme", "vip"),
        ("eve", 8_800, "acme", "vip"),
        ("cy", 9_500, "zed", None),
        ("dee", 12_000, "acme", None),
    ]
    pending = sorted(events, key=lambda event: event[1])
    end_ms = 24_000
    for step_ms in range(0, end_ms + 1, 250):
        while pending and pending[0][1] <= step_ms:
            user, at_ms, tenant, segment = pending.pop(0)
            await harness.event(user, T0 + at_ms, tenant, segment)
        for partition in range(PARTITIONS):
            await harness.tick(partition, T0 + step_ms)
    live = harness.signals
    assert {s.threshold_source for s in live} >= {"tenant", "segment", "default"}

    history = tmp_path / "events.jsonl"
    history.write_bytes(b"\n".join(harness.sent) + b"\n")
    config_file = tmp_path / "config.jsonl"
    config_file.write_text(
        "".join(
            json.dumps(
                {
                    "scope": v.scope,
                    "effective_from": v.effective_from,
                    "at_risk": v.at_risk_ms,
                    "dormant": v.dormant_ms,
                    "churned": v.churned_ms,
                }
            )
            + "\n"
            for v in reversed(versions)  # any order in the file
        )
    )

    def replay(book: ThresholdBook | None) -> list[Signal]:
        signals: list[Signal] = []
        run_history(
            history,
            T0 + end_ms,
            harness.worker.runtime.config,
            on_signals=lambda emissions: signals.extend(map(Signal.from_emission, emissions)),
            progress=False,
            book=book,
        )
        return sorted(signals, key=lambda signal: signal.signal_id)

    assert replay(read_config(config_file)) == sorted(live, key=lambda s: s.signal_id)
    # without the versions the replay decides differently: the file is what made them agree
    assert replay(None) != sorted(live, key=lambda s: s.signal_id)
