"""Live equals offline with a learned risk model: the worker and ``engagement replay`` on the
same events give every signal the same ``risk`` and every user the same state and score.

Faust test_context (memory store, no broker). A "day" is 1 s; thresholds 3/6/9 s. The
model is fitted (``engagement fit``'s code) on a seeded stress history with the same
day length, then loaded by the worker from ``ENGAGEMENT_RISK_PARAMS``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
from support.agent_context import agent_context

from agents.offline.evaluate import stress_history
from agents.offline.learn import learn, write_model
from agents.offline.replay import run_history
from streams.decode import partition_for
from streams.model_settings import model_config
from streams.records import Signal
from streams.settings import load_settings
from tables.state import unpack_state
from tables.user_risk import risk_at

PARTITIONS = 2
DAY_MS = 1_000
T0 = 1_700_000_000_000
SETTINGS: dict[str, Any] = {
    "partitions": PARTITIONS,
    "at_risk_ms": "3s",
    "dormant_ms": "6s",
    "churned_ms": "9s",
    "threshold_min_ms": "1s",
    "lateness_ms": "0",
    "day_ms": "1s",
    "horizon_ms": "14s",
    "stall_guard_ms": "1h",
    "redis_url": "",
}
_signal = msgspec.json.Decoder(Signal)


def fitted_model(tmp_path: Path) -> tuple[Path, str, list[bytes]]:
    """A learned model fitted on 60 days of a stress history, and the 30 days after."""
    lines = stress_history(300, 90, 5, T0, DAY_MS)
    history = tmp_path / "history.jsonl"
    history.write_text("\n".join(lines) + "\n")
    config = model_config(load_settings(**SETTINGS))
    document = learn(history, T0 + 60 * DAY_MS, [14 * DAY_MS], config)
    path = tmp_path / "risk.json"
    write_model(path, document)
    later = [line.encode() for line in lines if json.loads(line)["ts"] > T0 + 60 * DAY_MS]
    return path, document["version"], later[:600]


async def test_worker_and_replay_give_the_same_risk_on_the_same_events(tmp_path: Path) -> None:
    model, version, events = fitted_model(tmp_path)
    live: list[Signal] = []
    async with agent_context(risk_params=str(model), **SETTINGS) as (worker, ctx):

        async def capture_signal(*, key: bytes, value: bytes, **_: Any) -> None:
            live.append(_signal.decode(value))

        async def ignore(**_: Any) -> None:
            return None

        def no_status(**_: Any) -> Any:
            import asyncio

            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future

        worker.engine_app.signals.send = capture_signal
        worker.engine_app.lifecycle.send = ignore
        worker.engine_app.dlq.send = ignore
        worker.engine_app.status.send_soon = no_status
        assert worker.runtime.config.learned is not None
        end_ms = 0
        for value in events:
            record = json.loads(value)
            user = record["user_id"].encode()
            end_ms = record["ts"]
            await ctx.put(
                value,
                key=user,
                partition=partition_for(user, PARTITIONS),
                timestamp=record["ts"] / 1000,
            )
        end_ms += 12 * DAY_MS
        for partition in range(PARTITIONS):
            worker.runtime.events_seen_append_ms = end_ms
            tick, headers = worker.runtime.tick_record(partition, end_ms)
            await ctx.put(
                tick, key=None, partition=partition, timestamp=end_ms / 1000, headers=headers
            )
        config = worker.runtime.config
        table = {
            key.decode(): unpack_state(value)
            for key, value in worker.engine_app.users.items()
            if value is not None
        }

    history = tmp_path / "live.jsonl"
    history.write_bytes(b"\n".join(events) + b"\n")
    offline: list[Signal] = []
    replayed = run_history(
        history,
        end_ms,
        model_config(load_settings(risk_params=str(model), **SETTINGS)),
        on_signals=lambda emissions: offline.extend(map(Signal.from_emission, emissions)),
        progress=False,
    ).store.states

    def by_id(signals: list[Signal]) -> list[tuple[str, float, str]]:
        return sorted((s.signal_id, s.risk, s.risk_model) for s in signals)

    assert len(live) > 50
    assert by_id(live) == by_id(offline)
    assert {s.risk_model for s in live} == {version}
    assert len({s.risk for s in live}) > 10  # scores that differ between users
    assert set(table) == set(replayed)
    for user, state in table.items():
        assert risk_at(state, end_ms, config) == risk_at(replayed[user], end_ms, config)
