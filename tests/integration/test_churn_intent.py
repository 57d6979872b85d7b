"""A cancellation on real Kafka: ``churn_intent`` at once, and no ``reactivated``."""

from __future__ import annotations

import time
from typing import Any

import pytest
from support.workers import Deployment, event, latest_states, produce, read_topic, signals_of


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_a_cancellation_is_a_churn_intent_at_once_and_never_a_return(
    kafka_broker: Any, tmp_path: Any, store: str
) -> None:
    deployment = Deployment(kafka_broker.url, tmp_path, ENGAGEMENT_STORE=store)
    await deployment.create_topics()
    topic = deployment.settings.topic_events
    worker = await deployment.start_worker()
    try:
        start = now_ms()
        last_active_ms = start - 1_000
        cancel_ms = start
        await produce(
            deployment.bootstrap,
            topic,
            [
                event("cora", "c1", start - 2_000),
                event("cora", "c2", last_active_ms),
                event("cora", "c3", cancel_ms, "subscription_cancelled"),
                # the confirmation page, within the one-day grace (a day is 1 s here)
                event("cora", "c4", cancel_ms + 300, "page_view"),
            ],
        )

        def churned(records: list[Any]) -> bool:
            return any(s.kind == "churned" for s in signals_of(records))

        records = await read_topic(
            deployment.bootstrap, deployment.settings.topic_signals, until=churned, timeout_s=90
        )
        signals = signals_of(records)
        kinds = [s.kind for s in signals]
        assert kinds == ["churn_intent", "at_risk", "dormant", "churned"], deployment.log_tail()
        intent = signals[0]
        assert intent.as_of == cancel_ms
        assert intent.signal_id == f"cora:{last_active_ms}:churn_intent"
        # published on the cancellation, before the first tier was even due
        at_risk_due_ms = last_active_ms + deployment.settings.at_risk_ms
        assert records[0].timestamp < at_risk_due_ms + deployment.settings.lateness_ms
        # the silence runs from the last activity: the cancellation restarted nothing
        assert signals[1].episode == last_active_ms
        assert signals[1].as_of == at_risk_due_ms
        state = (await latest_states(deployment))["cora"]
        assert state.last_seen_ms == last_active_ms and state.intent_ms == cancel_ms
    finally:
        worker.stop()
