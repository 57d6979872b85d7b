"""Parts of ``engagement bench`` that run real processes give their figures.

Outcomes only (a figure comes back and counts every event): tests never
assert on speed.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from agents.bench.broker import produce_fast
from agents.bench.run import BenchSize, make_events
from agents.bench.workers import naive_faust_rate
from streams.settings import load_settings
from streams.topics import ensure_topics


async def test_the_naive_faust_reference_reports_a_figure(
    embedded_broker: Any, tmp_path: Path
) -> None:
    """Faust writes terminal codes and redirects stdout by default; the figure
    line must still reach the bench (it was lost twice that way)."""
    size = BenchSize(events=2_000, users=200, tick_users=0, tick_due=0, latency_users=0)
    settings = load_settings(
        broker=embedded_broker.url, partitions=8, topic_events=f"{uuid.uuid4().hex[:8]}.events"
    )
    await ensure_topics(settings)
    records = make_events(size, int(time.time() * 1000) - 3_600_000)
    await produce_fast(embedded_broker.bootstrap, settings.topic_events, records)
    log = tmp_path / "naive.log"
    rate = await naive_faust_rate(embedded_broker.url, settings.topic_events, size.events, log)
    assert rate is not None, log.read_text(errors="replace")[-2000:]
    assert rate > 0


def test_the_replay_figure_comes_from_its_own_process_over_every_event() -> None:
    """The child replays with the bench's model configuration (sent as JSON) and
    reports every event it read; the states for the size figures come back too."""
    from agents.bench.in_process import replay_rate
    from agents.bench.run import BENCH_MODEL

    size = BenchSize(events=3_000, users=300, tick_users=0, tick_due=0, latency_users=0)
    start_ms = 1_760_000_000_000
    records = make_events(size, start_ms)
    timed, store = replay_rate(records, BENCH_MODEL, start_ms + 3_600_000)
    assert timed.events == size.events
    assert timed.wall_s > 0 and timed.cpu_s > 0
    assert len(store) == size.users


def test_a_failed_replay_process_says_why(tmp_path: Path) -> None:
    from agents.bench.in_process import replay_in_own_process
    from streams.model_settings import model_config

    with pytest.raises(RuntimeError, match="No such file"):
        replay_in_own_process(tmp_path / "missing.jsonl", 0, model_config(load_settings()))


def test_the_replay_scores_with_a_learned_file_when_given_one(tmp_path: Path) -> None:
    """``--risk-params``: the replay's model carries the learned file (through the child's
    JSON configuration too) and every event is still read; without a file, MBG/NBD."""
    import msgspec

    from agents.bench.run import BENCH_MODEL, replay_model, replay_rate
    from agents.offline.evaluate import stress_history
    from agents.offline.learn import learn, write_model
    from streams.model_settings import model_config
    from tables.model import ModelConfig

    day_ms, start_ms = BENCH_MODEL.day_ms, 1_735_689_600_000
    history = tmp_path / "stress.jsonl"
    history.write_text("\n".join(stress_history(300, 90, 5, start_ms, day_ms)) + "\n")
    config = model_config(load_settings())
    document = learn(history, start_ms + 85 * day_ms, [BENCH_MODEL.horizon_ms], config)
    path = tmp_path / "risk30.json"
    write_model(path, document)
    assert replay_model(None) == BENCH_MODEL
    learned = replay_model(path)
    assert learned.learned is not None
    assert learned.risk_model == document["version"]
    assert msgspec.json.decode(msgspec.json.encode(learned), type=ModelConfig) == learned
    size = BenchSize(events=2_000, users=200, tick_users=0, tick_due=0, latency_users=0)
    records = make_events(size, 1_760_000_000_000)
    timed, store = replay_rate(records, learned, 1_760_000_000_000 + 3_600_000)
    assert timed.events == size.events
    assert len(store) == size.users
