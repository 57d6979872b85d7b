"""A downstream consumer of the signal topic: decide a win-back action per signal.

    python examples/winback_notifier.py --broker localhost:29092 --group winback

What a real notifier must get right, in a few lines:

- **De-duplicate by ``signal_id``.** Signals are delivered at least once (a
  worker that crashed re-emits the same signal with the same id). Here a
  bounded in-memory set of recent ids; in production keep them where the
  action is recorded (a unique constraint on ``signal_id`` in the CRM's
  table), so a restarted notifier does not act twice either.
- **Skip the hold-out group.** ``group == "holdout"`` users get no win-back:
  they are the control group that tells whether win-back works at all.
- **Personalise by reason.** The signal's ``reasons`` say why the user looks
  inactive; the first matching rule below picks the action. With experiment
  arms (``ENGAGEMENT_EXPERIMENT_ID``), the signal's ``arm`` is the reason
  code the engine drew the user's group for: the action is that code's, so
  each action is measured against its own hold-out (``engagement report``,
  ``by_arm``); the signal's ``group`` is already the group within that arm.
- **No personal data in logs.** Log lines name the kind, reasons and action,
  never the user id; the action itself (a CRM call) would carry it.

It commits offsets after handling a batch (at-least-once); ``--idle-exit S``
stops after S seconds without new signals and prints a JSON summary.
Only the standard library and aiokafka.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections import Counter, OrderedDict
from typing import Any

from aiokafka import AIOKafkaConsumer

log = logging.getLogger("winback")
HOLDOUT = "holdout"
SEEN_IDS = 100_000

# (reason code, action): the first reason of the signal found here decides.
REASON_ACTIONS: tuple[tuple[str, str], ...] = (
    ("recent_checkout_failed", "coupon_and_checkout_help"),
    ("recent_cancellation", "retention_offer"),
    ("recent_support_ticket", "support_follow_up"),
    ("recent_app_error", "support_follow_up"),
    ("single_visit", "onboarding_nudge"),
    ("streak_broken", "streak_restore_reminder"),
    ("frequency_drop", "reminder_push"),
    ("active_days_drop", "reminder_push"),
    ("gap_vs_usual", "reminder_push"),
)
KIND_ACTIONS = {
    "at_risk": "reminder_push",
    "dormant": "winback_email",
    "churned": "winback_offer",
    "reactivated": "welcome_back",
}


def choose_action(signal: dict[str, Any]) -> str:
    kind = str(signal.get("kind", ""))
    if kind == "reactivated":
        return KIND_ACTIONS[kind]
    arm = signal.get("arm")
    if arm is not None:  # an experiment: the arm's action (``other``: the tier's)
        return dict(REASON_ACTIONS).get(str(arm), KIND_ACTIONS.get(kind, "none"))
    codes = {reason.get("code") for reason in signal.get("reasons") or ()}
    for code, action in REASON_ACTIONS:
        if code in codes:
            return action
    return KIND_ACTIONS.get(kind, "none")


class RecentIds:
    """The last ``size`` signal ids, oldest forgotten first."""

    def __init__(self, size: int = SEEN_IDS) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, signal_id: str) -> bool:
        """True if ``signal_id`` is new."""
        if signal_id in self._ids:
            self._ids.move_to_end(signal_id)
            return False
        self._ids[signal_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True


class Notifier:
    def __init__(self) -> None:
        self.seen = RecentIds()
        self.stats: Counter[str] = Counter()

    def handle(self, raw: bytes | None) -> str | None:
        """The action taken for one signal record, or None when it is skipped."""
        try:
            signal = json.loads(raw or b"")
            signal_id = str(signal["signal_id"])
        except (ValueError, KeyError, TypeError):
            self.stats["unreadable"] += 1
            return None
        if not self.seen.add(signal_id):
            self.stats["duplicate"] += 1
            return None
        kind = str(signal.get("kind"))
        if signal.get("group") == HOLDOUT:
            self.stats["holdout_skipped"] += 1
            log.info("kind=%s group=holdout action=none (control group)", kind)
            return None
        action = choose_action(signal)
        reasons = ",".join(str(r.get("code")) for r in signal.get("reasons") or ())
        # Here a real notifier calls the CRM / push / e-mail service with the user id.
        log.info("kind=%s action=%s reasons=%s", kind, action, reasons)
        self.stats[f"action:{action}"] += 1
        return action


async def run(broker: str, topic: str, group: str, idle_exit_s: float | None) -> Counter[str]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    notifier = Notifier()
    await consumer.start()
    last_new = time.monotonic()
    try:
        while idle_exit_s is None or time.monotonic() - last_new < idle_exit_s:
            if not consumer.assignment():
                last_new = time.monotonic()  # idle time counts once the group has joined
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    notifier.handle(record.value)
                    last_new = time.monotonic()
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()
    return notifier.stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="localhost:9092", help="host:port[,...]")
    parser.add_argument("--topic", default="engagement.signals")
    parser.add_argument("--group", default="winback-notifier")
    parser.add_argument("--idle-exit", type=float, default=None, metavar="S")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        stats = asyncio.run(
            run(args.broker.replace("kafka://", ""), args.topic, args.group, args.idle_exit)
        )
    except KeyboardInterrupt:
        return 0
    print(json.dumps(dict(sorted(stats.items()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
