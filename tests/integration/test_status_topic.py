"""The compacted user-status topic on real Kafka: latest status per user, tier
changes at once, other changes coalesced, still right after a crash."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from typing import Any

from support.faults import last_per_key, read_all
from support.metrics import sample
from support.workers import Deployment, event, latest_states, produce, wait_for

from streams.decode import partition_for
from tables.state import TIER_NAMES

PARTITIONS = 4


def now_ms() -> int:
    return int(time.time() * 1000)


async def statuses(deployment: Deployment) -> list[Any]:
    return await read_all(deployment.bootstrap, deployment.settings.topic_status)


async def test_status_follows_each_user_and_tier_changes_promptly(
    kafka_broker: Any, tmp_path: Any
) -> None:
    deployment = Deployment(kafka_broker.url, tmp_path, ENGAGEMENT_STATUS_FLUSH="1s")
    settings = deployment.settings
    await deployment.create_topics()
    worker = await deployment.start_worker()
    tag = settings.app_id
    quiet = [f"{tag}-quiet{i}" for i in range(3)]
    busy = f"{tag}-busy"
    try:
        t0 = now_ms()
        await produce(
            deployment.bootstrap,
            settings.topic_events,
            [event(user, f"{user}-1", t0) for user in quiet]
            # 40 events of one user within a moment: coalesced into few status records
            + [event(busy, f"{busy}-{n}", t0 + n) for n in range(40)],
        )

        async def quiet_users_at_risk() -> bool:
            latest = last_per_key(await statuses(deployment))
            docs = [json.loads(latest[u.encode()] or b"{}") for u in quiet if u.encode() in latest]
            return len(docs) == len(quiet) and all(d.get("tier") == "at_risk" for d in docs)

        # at_risk falls due 3 s after the last event and is written at once
        assert await wait_for(quiet_users_at_risk, 60, interval_s=0.5), deployment.log_tail()
        records = await statuses(deployment)
        for record in records:
            assert record.partition == partition_for(record.key, PARTITIONS)
        latest = last_per_key(records)
        doc = json.loads(latest[quiet[0].encode()] or b"{}")
        assert doc["user_id"] == quiet[0]
        assert doc["stage"] == "at_risk" and doc["episode"] == t0 and doc["last_seen"] == t0
        assert 0.0 <= doc["risk"] <= 1.0
        busy_docs = [json.loads(r.value) for r in records if r.key == busy.encode()]
        assert busy_docs[-1]["last_seen"] == t0 + 39
        assert len(busy_docs) < 40, "changes without a stage or tier change are coalesced"
        text = await asyncio.to_thread(worker.metrics_text)
        assert sample(text, "engagement_status_writes_total", kind="immediate") >= len(quiet)
    finally:
        worker.stop()


async def test_latest_status_matches_the_table_after_a_crash(
    kafka_broker: Any, tmp_path: Any
) -> None:
    deployment = Deployment(
        kafka_broker.url,
        tmp_path,
        ENGAGEMENT_AT_RISK="1h",
        ENGAGEMENT_DORMANT="2h",
        ENGAGEMENT_CHURNED="3h",
        ENGAGEMENT_STATUS_FLUSH="5s",  # long: a crash finds coalesced writes pending
    )
    settings = deployment.settings
    await deployment.create_topics()
    worker = await deployment.start_worker()
    users = [f"{settings.app_id}-c{i}" for i in range(50)]
    try:
        t0 = now_ms()
        await produce(
            deployment.bootstrap,
            settings.topic_events,
            [event(u, f"{u}-{n}", t0 + n) for n in range(20) for u in users],
        )

        async def applied(count: int) -> bool:
            with contextlib.suppress(OSError):
                text = await asyncio.to_thread(worker.metrics_text)
                return sample(text, "engagement_events_total", outcome="applied") >= count
            return False

        assert await wait_for(lambda: applied(len(users) * 20), 60), deployment.log_tail()
        worker.kill9()  # pending status writes of the last changes die with it
        worker = await deployment.start_worker("w1")
        await produce(
            deployment.bootstrap, settings.topic_events, [event(users[0], "after-crash", t0 + 99)]
        )

        async def consistent() -> bool:
            states = await latest_states(deployment, timeout_s=5)
            latest = last_per_key(await statuses(deployment))
            if set(states) != set(users):
                return False
            for user, state in states.items():
                raw = latest.get(user.encode())
                if raw is None:
                    return False
                doc = json.loads(raw)
                if doc["last_seen"] != state.last_seen_ms:
                    return False
                if doc["tier"] != (TIER_NAMES[state.tier] or None):
                    return False
            return True

        assert await wait_for(consistent, 60, interval_s=1.0), deployment.log_tail()
        # the status topic holds one latest record per user, never another user's
        counts = Counter(r.key for r in await statuses(deployment))
        assert set(counts) == {u.encode() for u in users}
    finally:
        worker.stop()
