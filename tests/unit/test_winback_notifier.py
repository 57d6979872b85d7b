"""examples/winback_notifier.py decides with the user's status: signals and statuses
as the engine makes them (the pure model and the status writer's ``status_of``),
verdicts as docs/CONTRACTS.md ("User status") states them."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

from agents.worker.status import status_of
from streams.decode import id_hash
from streams.records import Signal, encode
from tables.engine import DictStore, PartitionEngine
from tables.model import ModelConfig, ModelEvent
from tables.thresholds import ThresholdPolicy

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "winback_notifier.py"
DAY_MS = 86_400_000
T0 = 1_700_000_000_000
USER = "u1"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("winback_notifier", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


notifier = _load()
CONFIG = ModelConfig(
    policy=ThresholdPolicy(
        defaults_ms=(7 * DAY_MS, 14 * DAY_MS, 30 * DAY_MS), min_ms=DAY_MS, max_ms=90 * DAY_MS
    ),
    lateness_ms=0,
    day_ms=DAY_MS,
    horizon_ms=30 * DAY_MS,
    holdout_salt="salt",
    holdout_share=0.0,  # everyone in treatment: the verdict alone decides
)


class Story:
    """One user through the engine; the notifier's status map kept as the topic would be."""

    def __init__(self) -> None:
        self.engine = PartitionEngine(0, CONFIG, DictStore())
        self.store = self.engine.store
        self.signals: dict[str, dict[str, object]] = {}
        self.status = notifier.Status()
        self.clock = T0

    def _publish(self, emissions: list[object]) -> None:
        for emission in emissions:
            record = json.loads(encode(Signal.from_emission(emission)))  # type: ignore[arg-type]
            self.signals[f"{record['kind']}@{record['episode']}"] = record
        state = self.store.get(USER)
        if state is not None:
            value = encode(status_of(USER, state, self.clock, CONFIG))
            self.status.apply(USER.encode(), value)

    def event(self, day: float) -> None:
        ts = T0 + int(day * DAY_MS)
        self.clock = max(self.clock, ts)
        result = self.engine.on_event(
            ModelEvent(
                user_id=USER, id_hash=id_hash(f"e{ts}"), type="visit", ts_ms=ts, append_ms=ts
            )
        )
        self._publish(list(result.emissions))

    def advance(self, day: float) -> None:
        self.clock = T0 + int(day * DAY_MS)
        self._publish(list(self.engine.advance_to(self.clock)))

    def verdicts(self) -> dict[str, str]:
        return {
            name: notifier.currency(signal, self.status) for name, signal in self.signals.items()
        }


def test_a_tier_is_current_until_a_higher_tier_or_a_return() -> None:
    story = Story()
    for day in range(3):
        story.event(day)
    first = T0 + 2 * DAY_MS
    story.advance(2 + 8)
    assert story.verdicts() == {f"at_risk@{first}": "current"}
    story.advance(2 + 15)
    assert story.verdicts() == {f"at_risk@{first}": "superseded", f"dormant@{first}": "current"}
    story.event(20)  # the user comes back: a new episode
    assert story.verdicts() == {
        f"at_risk@{first}": "stale",
        f"dormant@{first}": "stale",
        f"reactivated@{first}": "current",
    }
    second = T0 + 20 * DAY_MS
    story.advance(20 + 40)  # quiet again: the welcome back is over
    verdicts = story.verdicts()
    assert verdicts[f"reactivated@{first}"] == "stale"
    assert verdicts[f"churned@{second}"] == "current"
    assert verdicts[f"dormant@{second}"] == verdicts[f"at_risk@{second}"] == "superseded"


def test_no_status_yet_means_current_and_a_tombstone_means_erased() -> None:
    story = Story()
    story.event(0)
    story.advance(8)
    (name,) = story.signals
    assert notifier.currency(story.signals[name], notifier.Status()) == "current"
    story.status.apply(USER.encode(), None)
    assert story.verdicts() == {name: "erased"}


def test_the_notifier_acts_only_on_the_current_signal() -> None:
    story = Story()
    for day in range(3):
        story.event(day)
    story.advance(2 + 31)  # at_risk, dormant and churned, all unread
    handler = notifier.Notifier()
    handler.status = story.status
    actions = [handler.handle(json.dumps(signal).encode()) for signal in story.signals.values()]
    assert actions[:2] == [None, None] and actions[2] is not None
    assert handler.stats["superseded"] == 2
    assert sum(n for key, n in handler.stats.items() if key.startswith("action:")) == 1
