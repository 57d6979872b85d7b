"""examples/winback_notifier.py: the action of a signal, with and without experiment arms."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "winback_notifier.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_winback_notifier", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


notifier = load_example()


def signal(**fields: object) -> bytes:
    base = {"signal_id": "u:1:at_risk", "kind": "at_risk", "group": "treatment", "reasons": []}
    return json.dumps({**base, **fields}).encode()


def test_the_arm_decides_the_action_when_an_experiment_runs() -> None:
    reasons = [{"code": "recent_checkout_failed"}, {"code": "single_visit"}]
    plain = notifier.Notifier()
    assert plain.handle(signal(reasons=reasons)) == "coupon_and_checkout_help"
    # the engine drew this user's group in the single_visit arm: that arm's action
    armed = notifier.Notifier()
    assert armed.handle(signal(reasons=reasons, arm="single_visit")) == "onboarding_nudge"
    assert notifier.Notifier().handle(signal(reasons=reasons, arm="other")) == "reminder_push"


def test_a_hold_out_signal_of_an_arm_gets_nothing() -> None:
    held = notifier.Notifier()
    assert held.handle(signal(arm="single_visit", group="holdout")) is None
    assert held.stats["holdout_skipped"] == 1
