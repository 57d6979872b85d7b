"""A downstream consumer of the signal topic: decide a win-back action per signal.

    python examples/winback_notifier.py --broker localhost:29092 --group winback

What a real notifier must get right, in a few lines:

- **Act only on signals still current.** A signal is a fact about the past;
  by the time it is read the user may have come back (or gone further). The
  notifier reads the compacted status topic (``engagement.user-status``, each
  user's latest ``episode`` and ``tier``) up to its end before each batch of
  signals, and acts on a tier signal only while the user's status is still in
  that episode at that tier; a ``reactivated`` only while the user has not
  gone quiet again (docs/CONTRACTS.md, "User status"). A status that has not
  caught up with the signal yet (older episode, lower tier) is no evidence
  against it: the signal is the newest news. Skipped signals are counted as
  ``stale`` (the user came back or went quiet again), ``superseded`` (a higher
  tier of the same episode is out: that signal decides) or ``erased``.
- **Resume from committed offsets.** Offsets are committed after each batch
  is handled (at-least-once), per consumer group: a restarted notifier goes on
  where it stopped; the first run of a new group reads the retained signals
  from the beginning and, thanks to the status check, acts only on those
  still current.
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

``--idle-exit S`` stops after S seconds without new signals and prints a JSON
summary. Only the standard library and aiokafka. The status map holds one
small entry per user; a large deployment would ask the engine's Redis
mirror or ``GET /users/{id}`` instead of keeping the whole topic.
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

from aiokafka import AIOKafkaConsumer, TopicPartition

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
TIERS = ("at_risk", "dormant", "churned")  # in order; a status's tier is one of them or null
CURRENT = "current"
KIND_ACTIONS = {
    "at_risk": "reminder_push",
    "dormant": "winback_email",
    "churned": "winback_offer",
    "reactivated": "welcome_back",
    "declining": "habit_reminder",  # still active, coming less often than their own rhythm
    "not_activated": "onboarding_nudge",
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


class Status:
    """A user's latest (episode, tier) from the status topic; ``None``: erased."""

    def __init__(self) -> None:
        self.users: dict[str, tuple[int, str | None] | None] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        user_id = key.decode("utf-8", "replace")
        if value is None:  # a tombstone: the user was erased
            self.users[user_id] = None
            return
        try:
            status = json.loads(value)
            self.users[user_id] = (int(status["episode"]), status.get("tier"))
        except (ValueError, KeyError, TypeError):
            return


def _rank(tier: str | None) -> int:
    return TIERS.index(tier) + 1 if tier in TIERS else 0


def currency(signal: dict[str, Any], status: Status) -> str:
    """``current``, or why the signal no longer holds: ``stale``, ``superseded``, ``erased``."""
    user_id = str(signal.get("user_id"))
    if user_id not in status.users:
        return CURRENT  # no status read yet: nothing newer than the signal is known
    latest = status.users[user_id]
    if latest is None:
        return "erased"
    episode, tier = latest
    if signal.get("kind") == "reactivated":
        # current while the user has not gone quiet again after the return
        if episode >= int(signal["as_of"]) and tier is not None:
            return "stale"
        return CURRENT
    if episode > int(signal["episode"]):
        return "stale"  # the user came back: a new episode began
    if episode == int(signal["episode"]) and _rank(tier) > _rank(str(signal.get("kind"))):
        return "superseded"
    return CURRENT


class Notifier:
    def __init__(self) -> None:
        self.seen = RecentIds()
        self.status = Status()
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
        try:
            verdict = currency(signal, self.status)
        except (ValueError, KeyError, TypeError):
            self.stats["unreadable"] += 1
            return None
        if verdict != CURRENT:
            self.stats[verdict] += 1
            log.info("kind=%s action=none (%s)", kind, verdict)
            return None
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


async def _status_reader(
    broker: str, topic: str, status: Status
) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    """A consumer of the whole status topic from its beginning (no group, no commits)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    deadline = time.monotonic() + 30
    while not consumer.assignment():  # all partitions, once the metadata is in
        if time.monotonic() > deadline:
            await consumer.stop()
            raise SystemExit(f"status topic {topic!r} not found")
        await _apply(consumer, status)
    return consumer, sorted(consumer.assignment(), key=lambda tp: tp.partition)


async def _apply(consumer: AIOKafkaConsumer, status: Status) -> None:
    batches = await consumer.getmany(timeout_ms=200)
    for records in batches.values():
        for record in records:
            status.apply(record.key, record.value)


async def _catch_up(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], status: Status
) -> None:
    """Read the status topic up to its end as of now."""
    ends = await consumer.end_offsets(partitions)
    while True:
        positions = {tp: await consumer.position(tp) for tp in partitions}
        if all(positions[tp] >= ends[tp] for tp in partitions):
            return
        await _apply(consumer, status)


async def run(
    broker: str, topic: str, status_topic: str, group: str, idle_exit_s: float | None
) -> Counter[str]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    notifier = Notifier()
    statuses, partitions = await _status_reader(broker, status_topic, notifier.status)
    await consumer.start()
    last_new = time.monotonic()
    try:
        while idle_exit_s is None or time.monotonic() - last_new < idle_exit_s:
            if not consumer.assignment():
                last_new = time.monotonic()  # idle time counts once the group has joined
            batches = await consumer.getmany(timeout_ms=500)
            if not batches:
                continue
            await _catch_up(statuses, partitions, notifier.status)
            for records in batches.values():
                for record in records:
                    notifier.handle(record.value)
                    last_new = time.monotonic()
            await consumer.commit()
    finally:
        await consumer.stop()
        await statuses.stop()
    return notifier.stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="localhost:9092", help="host:port[,...]")
    parser.add_argument("--topic", default="engagement.signals")
    parser.add_argument("--status-topic", default="engagement.user-status")
    parser.add_argument("--group", default="winback-notifier")
    parser.add_argument("--idle-exit", type=float, default=None, metavar="S")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        stats = asyncio.run(
            run(
                args.broker.replace("kafka://", ""),
                args.topic,
                args.status_topic,
                args.group,
                args.idle_exit,
            )
        )
    except KeyboardInterrupt:
        return 0
    print(json.dumps(dict(sorted(stats.items()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
