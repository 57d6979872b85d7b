"""examples/winback_notifier.py with experiment arms: the signal's arm picks the action."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "winback_notifier.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_winback_arms", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


notifier = load_example()
REASONS = [{"code": "recent_checkout_failed"}, {"code": "single_visit"}]


def test_without_an_experiment_the_first_matching_reason_decides() -> None:
    signal = {"kind": "at_risk", "reasons": REASONS}
    assert notifier.choose_action(signal) == "coupon_and_checkout_help"


def test_with_an_experiment_the_arm_decides() -> None:
    # the engine drew this user's group in the single_visit arm: that arm's action
    armed = {"kind": "at_risk", "reasons": REASONS, "arm": "single_visit"}
    assert notifier.choose_action(armed) == "onboarding_nudge"
    assert notifier.choose_action({**armed, "arm": "other"}) == "reminder_push"
    assert notifier.choose_action({**armed, "kind": "dormant", "arm": "other"}) == ("winback_email")
