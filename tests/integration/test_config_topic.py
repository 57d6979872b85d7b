"""Thresholds from the config topic, live: forwarded as signed $config, applied without restart.

Also the lifecycle topic: a user's stage transitions appear with stable ids.
"""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer
from support.metrics import sample
from support.workers import Deployment, event, produce, read_topic, signals_of, wait_for

from streams.records import LifecycleTransition


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_config_topic_changes_a_tenants_thresholds_at_run_time(
    any_broker: Any, tmp_path: Any
) -> None:
    deployment = Deployment(any_broker.url, tmp_path, ENGAGEMENT_REDIS_URL="")
    settings = deployment.settings
    await deployment.create_topics()
    worker = await deployment.start_worker()
    try:
        producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                settings.topic_config,
                key=f"acme@{now_ms() - 60_000}".encode(),
                value=json.dumps({"at_risk": "1s", "dormant": "2s", "churned": "20s"}).encode(),
            )
        finally:
            await producer.stop()

        def forwarded() -> bool:
            text = worker.metrics_text()
            return sample(text, "engagement_config_records_total", outcome="applied") >= (
                settings.partitions
            )

        assert await wait_for(forwarded, 60), deployment.log_tail()

        start = now_ms()
        await produce(
            deployment.bootstrap,
            settings.topic_events,
            [
                event("acme-user", "a1", start, tenant="acme"),
                event("globex-user", "g1", start, tenant="globex"),
            ],
        )

        def both_at_risk(records: list[Any]) -> bool:
            kinds = {(s.user_id, s.kind) for s in signals_of(records)}
            return {("acme-user", "dormant"), ("globex-user", "at_risk")} <= kinds

        records = await read_topic(
            deployment.bootstrap, settings.topic_signals, until=both_at_risk, timeout_s=60
        )
        signals = {(s.user_id, s.kind): s for s in signals_of(records)}
        acme = signals[("acme-user", "at_risk")]
        assert (acme.threshold_ms, acme.threshold_source) == (1_000, "tenant"), (
            deployment.log_tail()
        )
        assert signals[("acme-user", "dormant")].as_of == start + 2_000
        globex = signals[("globex-user", "at_risk")]
        assert (globex.threshold_ms, globex.threshold_source) == (3_000, "default")

        decoder = msgspec.json.Decoder(LifecycleTransition)

        def acme_dormant(items: list[Any]) -> bool:
            return any(
                t.user_id == "acme-user" and t.to_stage == "dormant"
                for t in (decoder.decode(r.value) for r in items)
            )

        lifecycle = await read_topic(
            deployment.bootstrap, settings.topic_lifecycle, until=acme_dormant, timeout_s=30
        )
        moves = [
            (t.from_stage, t.to_stage, t.transition_id)
            for t in (decoder.decode(r.value) for r in lifecycle)
            if t.user_id == "acme-user"
        ]
        assert moves[:3] == [
            (None, "new", f"acme-user:{start}:new"),
            ("new", "at_risk", f"acme-user:{start + 1_000}:at_risk"),
            ("at_risk", "dormant", f"acme-user:{start + 2_000}:dormant"),
        ]
        text = worker.metrics_text()
        assert sample(text, "engagement_users_by_stage", stage="dormant") >= 1
    finally:
        worker.stop()
