"""``engagement backfill`` on a real broker, then a real worker on each store.

A history (written by this test) holds users whose silence ended long before
its end and users silent at its end. After the backfill a worker recovers the
state: each user's view equals the one the replay's states give (and those
states equal the independent reference model's); no signal of a silence the
history closed is published; once a live event releases the stall guard the
worker's clock emits exactly the replay's signals due after the history's end.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from reference.log import LogRules, run_log
from support.engine_outcome import rules_for, view_of
from support.workers import (
    Deployment,
    event,
    now_ms,
    produce,
    read_topic,
    signals_of,
    wait_for,
)

from agents.offline.history_seed import history_seed
from agents.offline.replay import ReplayStats, read_config, read_events
from agents.worker.user_view import user_fields
from streams.decode import id_hash
from streams.model_settings import model_config
from streams.settings import Settings
from tables.history import History
from tables.history import run_history as run_events
from tables.model import Emission
from tables.state import UserState
from tables.thresholds import ThresholdBook

ENGAGEMENT = [sys.executable, "-m", "agents.cli.main"]
SECOND = 1000  # one model day (tests/support/workers.py FAST)


def history(end_ms: int) -> list[dict[str, Any]]:
    """Users back after a long silence, users silent since just before ``end_ms``."""
    records = []
    for i in range(8):
        user = f"back{i}"  # active, silent for 20 days, back at the end
        times = [end_ms - 40 * SECOND, end_ms - 39 * SECOND, end_ms - 38 * SECOND]
        times += [end_ms - 18 * SECOND + i * 100, end_ms - 2 * SECOND + i * 100]
        records += [event(user, f"{user}-{n}", ts) for n, ts in enumerate(times)]
    for i in range(8):
        user = f"quiet{i}"  # active for a while, silent from just before the end
        times = [end_ms - (30 - 3 * n) * SECOND - i * 50 for n in range(10)]
        records += [event(user, f"{user}-{n}", ts) for n, ts in enumerate(times)]
    records.append(event("tail", "tail-0", end_ms))
    return sorted(records, key=lambda r: r["ts"])


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def backfill(deployment: Deployment, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **deployment.env}
    return subprocess.run(
        [*ENGAGEMENT, "backfill", str(path), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def replayed(
    settings: Settings, path: Path, clock_ms: int, book: ThresholdBook | None = None
) -> History:
    """The replay's record rules over every event of the history, the clock then
    moved to ``clock_ms`` (replay's own ``--as-of`` would also drop later events)."""
    with path.open("rb") as lines:
        read = read_events(lines, 2**62, ReplayStats(), settings.event_rules())
    return run_events(read.events, model_config(settings), clock_ms, book)


def replay_signals(settings: Settings, path: Path, clock_ms: int) -> list[Emission]:
    return replayed(settings, path, clock_ms).emissions


def view(worker: Any, user: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{worker.web_port}/users/{user}"
    with urllib.request.urlopen(url, timeout=5) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


@dataclass(frozen=True)
class LogRecord:
    """One history event as a single-partition input log record (append time = ts)."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    partition: int
    offset: int
    timestamp_ms: int


def reference_mismatches(
    settings: Settings, records: list[dict[str, Any]], states: dict[str, UserState]
) -> list[str]:
    """The reference model over the history in one partition (one clock, as the
    backfill's), compared field by field with ``states`` (partition and offset
    aside: the backfill keeps no input offsets)."""
    log = [
        LogRecord(r["user_id"].encode(), json.dumps(r).encode(), (), 0, n, r["ts"])
        for n, r in enumerate(records)
    ]
    one = settings.model_copy(update={"partitions": 1})
    log_rules = LogRules(topic=one.topic_events, partitions=1, keys=one.clock_key_map())
    outcome = run_log(log, rules_for(one), log_rules)  # type: ignore[arg-type]
    expected = outcome.partitions[0].states
    ids = {id_hash(r["event_id"]): r["event_id"] for r in records}
    problems = []
    for user in sorted(set(states) | set(expected)):
        if user not in states or user not in expected:
            problems.append(f"{user}: in one of the two only")
            continue
        got, want = asdict(view_of(states[user], ids)), asdict(expected[user])
        for name in set(got) - {"partition", "offset"}:
            if got[name] != want[name]:
                problems.append(f"{user}: {name} {got[name]!r} != {want[name]!r}")
    return problems


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_a_worker_started_after_a_backfill_holds_the_replay_state_and_judges_on(
    kafka_broker: Any, tmp_path: Path, store: str
) -> None:
    # the stall guard holds the clock at the history's end until a live event arrives
    deployment = Deployment(
        kafka_broker.url, tmp_path, ENGAGEMENT_STORE=store, ENGAGEMENT_STALL_GUARD="1ms"
    )
    settings = deployment.settings
    config = model_config(settings)
    end_ms = now_ms() - 120 * SECOND
    records = history(end_ms)
    path = write_jsonl(tmp_path / "history.jsonl", records)

    done = backfill(deployment, path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["loaded"]["users"] == 17
    assert summary["loaded"]["cohort_cells"] > 0

    seed = history_seed(
        path, config, settings.partitions, settings.cohort_period_ms, settings.event_rules()
    )
    end_clock_ms = seed.high_ms - config.lateness_ms
    assert summary["clock_ms"] == end_clock_ms
    assert reference_mismatches(settings, records, seed.states) == []

    judged = replay_signals(settings, path, end_clock_ms)
    assert judged, "the history closes silences: the replay signals them"
    closed = {(s.user_id, s.kind, s.as_of) for s in judged}

    worker = await deployment.start_worker()
    try:
        users = sorted(seed.states)
        for user in users:  # the worker's view of each user is the replay state's
            got = await asyncio.to_thread(view, worker, user)
            assert got["as_of"] >= seed.states[user].last_seen_ms
            want = user_fields(user, seed.states[user], int(got["as_of"]), config)
            assert {k: got[k] for k in want} == want, user

        live_ms = now_ms()
        await produce(deployment.bootstrap, settings.topic_events, [event("live", "l0", live_ms)])
        # the clock the live event moves every partition to, at least
        due = {
            (s.user_id, s.kind, s.as_of)
            for s in replay_signals(settings, path, live_ms - config.lateness_ms)
            if s.as_of > end_clock_ms
        }
        assert due, "silences open at the history's end come due after it"
        got: set[tuple[str, str, int]] = set()

        async def all_due_emitted() -> bool:
            records = await read_topic(
                deployment.bootstrap, settings.topic_signals, timeout_s=5, idle_s=1
            )
            got.clear()
            got.update(
                (s.user_id, s.kind, s.as_of) for s in signals_of(records) if s.user_id != "live"
            )
            return due <= got

        assert await wait_for(all_due_emitted, 90, interval_s=2), deployment.log_tail()
        # and nothing else: each signal one the replay gives after the history's end
        later = {
            (s.user_id, s.kind, s.as_of)
            for s in replay_signals(settings, path, now_ms())
            if s.as_of > end_clock_ms
        }
        assert due <= got <= later
        assert not got & closed
    finally:
        deployment.stop_all()


def test_backfill_refuses_a_deployment_that_holds_state(kafka_broker: Any, tmp_path: Path) -> None:
    deployment = Deployment(kafka_broker.url, tmp_path)
    path = write_jsonl(tmp_path / "history.jsonl", history(now_ms() - 60 * SECOND))
    assert backfill(deployment, path).returncode == 0
    again = backfill(deployment, path)
    assert again.returncode != 0
    assert "already holds" in again.stderr and "users-changelog" in again.stderr


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("events.xlsx", b"{}", "unknown history format '.xlsx'"),
        ("events.parquet", b"not parquet", "not a readable Parquet file"),
        ("events.jsonl", b"not json\n{}\n", "no event accepted of 2 records"),
    ],
)
def test_backfill_refuses_a_bad_history_before_touching_the_broker(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    # an address nobody listens on: the history is judged before any connection
    deployment = Deployment("kafka://127.0.0.1:9", tmp_path)
    path = tmp_path / name
    path.write_bytes(content)
    done = backfill(deployment, path)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr


def test_backfill_says_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    deployment = Deployment("kafka://127.0.0.1:9", tmp_path)
    path = write_jsonl(tmp_path / "history.jsonl", history(now_ms()))
    done = backfill(deployment, path)
    assert done.returncode != 0
    assert "backfill failed talking to the broker at 127.0.0.1:9" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_the_summary_counts_what_the_history_judged(tmp_path: Path) -> None:
    """The seed's own figures, without a broker: users, and the signals of the
    history (judged, not published)."""
    deployment = Deployment("kafka://127.0.0.1:9", tmp_path)
    settings = deployment.settings
    path = write_jsonl(tmp_path / "history.jsonl", history(now_ms()))
    seed = history_seed(
        path,
        model_config(settings),
        settings.partitions,
        settings.cohort_period_ms,
        settings.event_rules(),
    )
    assert seed.stats.users == 17
    judged = replay_signals(settings, path, seed.high_ms - settings.lateness_ms)
    counts: dict[str, int] = {}
    for signal in judged:
        counts[signal.kind] = counts.get(signal.kind, 0) + 1
    assert seed.stats.signals == counts
    assert msgspec.structs.asdict(seed.stats)["events"] == 8 * 5 + 8 * 10 + 1


def test_an_event_further_ahead_than_max_future_is_refused_as_a_worker_refuses_it(
    tmp_path: Path,
) -> None:
    deployment = Deployment("kafka://127.0.0.1:9", tmp_path)
    settings = deployment.settings
    load_ms = now_ms()
    ahead = event("tail", "ahead", load_ms + settings.max_future_ms + 1)
    path = write_jsonl(tmp_path / "history.jsonl", [*history(load_ms), ahead])
    seed = history_seed(
        path,
        model_config(settings),
        settings.partitions,
        settings.cohort_period_ms,
        settings.event_rules(),
        latest_ms=load_ms + settings.max_future_ms,
    )
    assert seed.stats.rejected == {"ts_in_future": 1}
    assert seed.stats.after_as_of == 0
    assert seed.events_seen_append_ms == load_ms  # the history's own newest event


def test_threshold_versions_judge_the_history_as_they_judge_a_replay(tmp_path: Path) -> None:
    """With ``--config`` the seed's states are the replay's with the same versions, and
    its book (which the load writes for every partition) holds them."""
    deployment = Deployment("kafka://127.0.0.1:9", tmp_path)
    settings = deployment.settings
    config = model_config(settings)
    end_ms = now_ms()
    records = [{**r, "tenant": "acme"} if r["user_id"] < "quiet4" else r for r in history(end_ms)]
    path = write_jsonl(tmp_path / "history.jsonl", records)
    version = {
        "scope": "acme",
        "effective_from": end_ms - 25 * SECOND,
        "at_risk": "1s",
        "dormant": "2s",
        "churned": "4s",
    }
    versions = write_jsonl(tmp_path / "config.jsonl", [version])
    book = read_config(versions)
    seed = history_seed(
        path,
        config,
        settings.partitions,
        settings.cohort_period_ms,
        settings.event_rules(),
        book,
    )
    assert seed.book == book
    clock_ms = seed.high_ms - config.lateness_ms
    states = replayed(settings, path, clock_ms, book).states
    homes = {user: state.partition for user, state in seed.states.items()}
    assert seed.states == {
        user: msgspec.structs.replace(state, partition=homes[user])
        for user, state in states.items()
    }
    plain = history_seed(
        path, config, settings.partitions, settings.cohort_period_ms, settings.event_rules()
    )
    assert plain.states != seed.states  # the versions changed someone's judgement
