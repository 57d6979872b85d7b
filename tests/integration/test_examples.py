"""examples/producer.py and examples/winback_notifier.py against real Kafka and a worker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from support.workers import Deployment, latest_states, produce, read_topic, signals_of

from streams.decode import partition_for
from tables.groups import HOLDOUT, group_of

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PARTITIONS = 4


def run_example(
    script: str, *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def _now_ms() -> int:
    return int(time.time() * 1000)


def pick_users(salt: str, share: float) -> tuple[list[str], list[str]]:
    treatment: list[str] = []
    holdout: list[str] = []
    for i in range(10_000):
        user = f"ex{i}"
        (holdout if group_of(user, salt, share) == HOLDOUT else treatment).append(user)
        if len(treatment) >= 5 and len(holdout) >= 3:
            return treatment[:5], holdout[:3]
    raise AssertionError("could not find users of both groups")


async def test_producer_and_winback_notifier_end_to_end(kafka_broker: Any, tmp_path: Path) -> None:
    deployment = Deployment(kafka_broker.url, tmp_path, ENGAGEMENT_HOLDOUT_SHARE="0.5")
    settings = deployment.settings
    assert settings.holdout_salt is not None
    treatment, holdout = pick_users(settings.holdout_salt.get_secret_value(), 0.5)
    users = treatment + holdout
    await deployment.create_topics()
    worker = await deployment.start_worker()
    try:
        now = int(time.time() * 1000)
        lines = []
        for user in users:
            lines.append({"user_id": user, "type": "login", "ts": now - 2000, "tenant": "acme"})
            # the last thing before going quiet: a failed checkout (with its own reference)
            last_type = "checkout_failed" if user == treatment[0] else "page_view"
            lines.append(
                {"user_id": user, "type": last_type, "ts": now - 1000, "ref": f"{user}-o1"}
            )
        events = tmp_path / "events.jsonl"
        events.write_text("".join(json.dumps(line) + "\n" for line in lines))
        producer_args = ("--broker", deployment.bootstrap, "--topic", settings.topic_events)
        for _attempt in range(2):  # the whole batch sent twice, as a retried job would
            done = run_example("producer.py", *producer_args, "--input", str(events))
            assert json.loads(done.stdout)["sent"] == len(lines)

        def all_churned(records: list[Any]) -> bool:
            churned = {s.user_id for s in signals_of(records) if s.kind == "churned"}
            return churned >= set(users)

        records = await read_topic(
            deployment.bootstrap, settings.topic_signals, until=all_churned, timeout_s=90
        )
        signals = signals_of(records)
        assert {s.user_id for s in signals if s.kind == "churned"} == set(users), (
            deployment.log_tail()
        )

        # the engine counted each logical event once, in the user's own partition
        states = await latest_states(deployment)
        assert {u: states[u].events_total for u in users} == dict.fromkeys(users, 2)
        sent = 2 * len(lines)  # ticks (no key) keep arriving: stop at the events
        inputs = await read_topic(
            deployment.bootstrap,
            settings.topic_events,
            until=lambda recs: sum(r.key is not None for r in recs) >= sent,
            timeout_s=30,
        )
        keyed = [r for r in inputs if r.key is not None]
        assert len(keyed) == sent
        for record in keyed:
            assert record.partition == partition_for(record.key, PARTITIONS)
        dlq = await read_topic(deployment.bootstrap, settings.topic_dlq, timeout_s=3, idle_s=1.0)
        assert dlq == []

        # one treatment user comes back before the notifier first runs: its tier
        # signals are old news, its reactivation is what counts
        returner = treatment[1]
        await produce(
            deployment.bootstrap,
            settings.topic_events,
            [{"event_id": "back", "user_id": returner, "type": "login", "ts": _now_ms()}],
        )

        def returned(recs: list[Any]) -> bool:
            return any(s.user_id == returner and s.kind == "reactivated" for s in signals_of(recs))

        records = await read_topic(
            deployment.bootstrap, settings.topic_signals, until=returned, timeout_s=60
        )
        assert returned(records), deployment.log_tail()
        worker.stop()  # signals and statuses stay as they are while the notifier reads
        signals = signals_of(records)
        statuses = await read_topic(deployment.bootstrap, settings.topic_status, timeout_s=5)
        latest = {r.key.decode(): json.loads(r.value) for r in statuses if r.value is not None}

        # a re-delivered signal (same bytes, new offset) must not be acted on twice
        first_treatment = next(
            r for r in records if signals_of([r])[0].group != HOLDOUT and r.key != returner.encode()
        )
        await produce(
            deployment.bootstrap,
            settings.topic_signals,
            [(first_treatment.key, first_treatment.value)],
        )
        notifier_args = (
            "--broker",
            deployment.bootstrap,
            "--topic",
            settings.topic_signals,
            "--status-topic",
            settings.topic_status,
            "--group",
            f"{settings.app_id}-winback",
            "--idle-exit",
            "3",
        )
        done = run_example("winback_notifier.py", *notifier_args)
        stats = json.loads(done.stdout)
        unique = {s.signal_id: s for s in signals}
        # the contract's rule, with the statuses final: a tier signal is current while the
        # status has its episode and its kind as tier; a return while the user is not
        # quiet again
        current = {
            sid: s
            for sid, s in unique.items()
            if (
                latest[s.user_id]["tier"] is None and latest[s.user_id]["episode"] >= s.as_of
                if s.kind == "reactivated"
                else (latest[s.user_id]["episode"], latest[s.user_id]["tier"])
                == (s.episode, s.kind)
            )
        }
        by_group = Counter(s.group for s in current.values())
        assert stats["duplicate"] == len(signals) - len(unique) + 1
        assert stats.get("stale", 0) + stats.get("superseded", 0) == len(unique) - len(current)
        assert stats.get("stale", 0) >= 3  # the returner's at_risk, dormant and churned
        assert stats["superseded"] >= 2 * (len(users) - 1)  # the others' at_risk and dormant
        assert stats["holdout_skipped"] == by_group[HOLDOUT] > 0
        actions = {k: v for k, v in stats.items() if k.startswith("action:")}
        assert sum(actions.values()) == by_group["treatment"] > 0
        assert stats.get("action:welcome_back", 0) == sum(
            1 for s in current.values() if s.kind == "reactivated"
        )
        assert stats.get("action:coupon_and_checkout_help", 0) >= 1  # the failed checkout
        assert all(user not in done.stderr for user in users), "user ids in the log"
        assert "kind=churned action=" in done.stderr

        # a restart of the same group resumes from its committed offsets: nothing again
        again = json.loads(run_example("winback_notifier.py", *notifier_args).stdout)
        assert not [k for k in again if k.startswith("action:")], again
        assert again.get("duplicate", 0) == 0
    finally:
        worker.stop()
