"""Cohort retention on real Kafka: the compacted cohorts topic equals ``engagement
report --history`` on the same events, also after a worker is killed mid-way."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner
from support.faults import last_per_key, read_all
from support.metrics import sample
from support.workers import Deployment, event, produce, wait_for

from agents.cli.main import main
from agents.offline.history_facts import HistoryFacts
from agents.offline.report import cohort_section
from streams.records import CohortCount
from tables.cohorts import Cell, CellCounts, merge

DAY_MS = 1000  # the deployment's model day (tests/support/workers.FAST)
_count = msgspec.json.Decoder(CohortCount)


def now_ms() -> int:
    return int(time.time() * 1000)


def population(start_ms: int, days: int, seed: int, users: int = 30) -> list[dict[str, Any]]:
    """Users of two tenants and segments, active on random days, in time order."""
    rng = random.Random(seed)
    events = []
    for u in range(users):
        first = rng.randrange(days)
        for day in range(first, days):
            if rng.random() < 0.35 or day == first:
                ts = start_ms + day * DAY_MS + rng.randrange(DAY_MS)
                events.append(
                    event(
                        f"c{u}",
                        f"c{u}-{seed}-{day}",
                        ts,
                        tenant=("acme", "globex")[u % 2],
                        segment=("a", "b")[u % 3 == 0],
                    )
                )
    return sorted(events, key=lambda e: e["ts"])


async def live_cells(deployment: Deployment) -> dict[Cell, CellCounts]:
    """The cohorts topic's cells, summed over the input partitions."""
    records = last_per_key(await read_all(deployment.bootstrap, deployment.settings.topic_cohorts))
    period_ms = deployment.settings.cohort_period_ms
    cells = []
    for value in records.values():
        if value is None:
            continue
        count = _count.decode(value)
        cell = Cell(
            count.tenant,
            count.segment,
            count.group,
            count.cohort_start // period_ms,
            count.period_start // period_ms,
        )
        cells.append((cell, CellCounts(count.active, count.retained)))
    return merge(cells)


def report_cohorts(deployment: Deployment, history: Path, out: Path) -> dict[str, Any]:
    signals = out.parent / "no-signals.jsonl"
    signals.write_text("")
    result = CliRunner().invoke(
        main,
        ["report", str(signals), "--history", str(history), "--out", str(out)],
        env=deployment.env,
    )
    assert result.exit_code == 0, result.output
    cohorts: dict[str, Any] = json.loads((out / "report.json").read_text())["cohorts"]
    return cohorts


def as_json(cells: dict[Cell, CellCounts], end_ms: int, period_ms: int) -> Any:
    return json.loads(
        json.dumps(cohort_section(HistoryFacts(cells, {}, period_ms, end_ms), end_ms))
    )


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_the_cohorts_topic_equals_the_report_on_the_same_events_through_a_crash(
    kafka_broker: Any, tmp_path: Path, store: str
) -> None:
    # weeks of 1 s days pass quickly: show a year of cohorts, however slow the machine
    deployment = Deployment(
        kafka_broker.url, tmp_path, ENGAGEMENT_STORE=store, ENGAGEMENT_COHORT_METRIC_PERIODS="52"
    )
    settings = deployment.settings
    period_ms = settings.cohort_period_ms
    assert period_ms == 7 * DAY_MS  # a week of model days
    await deployment.create_topics()
    worker = await deployment.start_worker()
    start_ms = now_ms() - 40 * DAY_MS
    first = population(start_ms, 20, seed=1)
    second = population(start_ms + 20 * DAY_MS, 19, seed=2)
    history = tmp_path / "history.jsonl"
    sent = list(first)
    try:
        await produce(deployment.bootstrap, settings.topic_events, first)
        history.write_text("".join(json.dumps(e) + "\n" for e in sent))
        want = report_cohorts(deployment, history, tmp_path / "r1")

        async def topic_matches() -> bool:
            end_ms = max(e["ts"] for e in sent)
            return as_json(await live_cells(deployment), end_ms, period_ms) == want

        assert await wait_for(topic_matches, 90, interval_s=1.0), deployment.log_tail()
        assert want["retention"] and want["growth"]
        text = await asyncio.to_thread(worker.metrics_text)
        assert sample(text, "engagement_cohort_users", tenant="other", age="0") > 0

        # killed: cells not yet published die with it; the next owner republishes them all
        worker.kill9()
        await produce(deployment.bootstrap, settings.topic_events, second)
        worker = await deployment.start_worker("w1")
        sent += second
        history.write_text("".join(json.dumps(e) + "\n" for e in sent))
        want = report_cohorts(deployment, history, tmp_path / "r2")
        assert await wait_for(topic_matches, 120, interval_s=1.0), deployment.log_tail()
        growth = want["growth"]
        assert any(row["resurrected"] for row in growth), "the population has returns"
        assert any(row["quick_ratio"] is not None for row in growth)
    finally:
        worker.stop()
