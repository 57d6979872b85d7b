"""The garbage collector's settings in the worker process and during a replay."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import agents.worker.run
from agents.common.collection import GC_THRESHOLDS, fewer_collections
from agents.offline.replay import run_history
from streams.settings import load_settings
from tests.unit.test_replay import AS_OF_MS, CONFIG, history


@pytest.fixture(autouse=True)
def restore_collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_a_block_runs_with_fewer_collections_and_restores_the_thresholds() -> None:
    gc.set_threshold(700, 10, 10)
    with fewer_collections():
        inside = gc.get_threshold()
    assert inside == GC_THRESHOLDS
    assert gc.get_threshold() == (700, 10, 10)


def test_thresholds_are_restored_when_the_block_fails() -> None:
    gc.set_threshold(700, 10, 10)
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("boom")
    assert gc.get_threshold() == (700, 10, 10)


def test_a_replay_runs_the_model_with_fewer_collections(tmp_path: Path) -> None:
    gc.set_threshold(700, 10, 10)
    seen: list[tuple[int, int, int]] = []
    run = run_history(
        history(tmp_path / "events.jsonl"),
        AS_OF_MS,
        CONFIG,
        on_signals=lambda emissions: seen.append(gc.get_threshold()),
        progress=False,
    )
    assert run.stats.signals, "the history must raise signals for this test to see inside"
    assert seen == [GC_THRESHOLDS]
    assert gc.get_threshold() == (700, 10, 10)


def test_the_worker_starts_with_its_set_up_frozen_and_fewer_collections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Everything up to the Faust worker's start, without a broker: the topics
    step is skipped and the worker records the collector's state it starts in."""
    gc.set_threshold(700, 10, 10)
    started: list[tuple[tuple[int, int, int], int]] = []

    async def no_topics(settings: Any) -> None:
        return None

    class Recorder:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            started.append((gc.get_threshold(), gc.get_freeze_count()))

        def execute_from_commandline(self) -> None:
            return None

    monkeypatch.setattr(agents.worker.run, "ensure_topics", no_topics)
    monkeypatch.setattr(agents.worker.run.faust, "Worker", Recorder)
    settings = load_settings(
        broker="kafka://localhost:1",
        holdout_salt="h",
        erasure_salt="e",
        clock_keys="k1:" + "s" * 32,
    )
    agents.worker.run.run_worker(settings)
    assert len(started) == 1
    thresholds, frozen = started[0]
    assert thresholds == GC_THRESHOLDS
    assert frozen > 0
