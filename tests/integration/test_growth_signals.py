"""declining and not_activated on a real Kafka broker, end to end through a worker process.

Days of 1 s. A fading user (daily for 40 days, every other day for 30, then
every third day until it stops) gets ``declining`` while still active, and
``at_risk`` only once it stops; a user who signs up without completing
onboarding gets ``not_activated`` at the 3-day deadline, one who completes it
goes new → active and gets no signal.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from support.workers import Deployment, event, produce, read_topic, signals_of

from streams.records import LifecycleTransition

DAY_MS = 1_000
FADER_DAYS = [*range(40), *range(40, 70, 2), *range(70, 130, 3)]


async def test_a_fader_is_warned_before_at_risk_and_a_lurker_is_not_activated(
    kafka_broker: Any, tmp_path: Any
) -> None:
    deployment = Deployment(
        kafka_broker.url,
        tmp_path,
        ENGAGEMENT_REDIS_URL="",
        ENGAGEMENT_ACTIVATION_TYPES="onboarding_completed",
        ENGAGEMENT_ACTIVATION_DAYS="3",
    )
    settings = deployment.settings
    await deployment.create_topics()
    worker = await deployment.start_worker()
    try:
        start = int(time.time() * 1000) - 140 * DAY_MS
        events = [event("fader", "f-0", start, "onboarding_completed")]
        events += [
            event("fader", f"f-{day}", start + day * DAY_MS + 300, "view") for day in FADER_DAYS[1:]
        ]
        events += [
            event("lurker", "l-0", start, "view"),
            event("lurker", "l-1", start + DAY_MS, "view"),
            event("doer", "d-0", start, "view"),
            event("doer", "d-1", start + DAY_MS, "onboarding_completed"),
        ]
        await produce(deployment.bootstrap, settings.topic_events, events)

        def done(records: list[Any]) -> bool:
            kinds = {(s.user_id, s.kind) for s in signals_of(records)}
            return {("fader", "at_risk"), ("lurker", "not_activated")} <= kinds

        records = await read_topic(
            deployment.bootstrap, settings.topic_signals, until=done, timeout_s=90
        )
        signals = signals_of(records)
        fader = [s for s in signals if s.user_id == "fader"]
        kinds = [s.kind for s in fader]
        assert "declining" in kinds, deployment.log_tail()
        assert kinds.index("declining") < kinds.index("at_risk")
        (declining,) = [s for s in fader if s.kind == "declining"]
        assert declining.as_of < fader[kinds.index("at_risk")].as_of
        assert declining.signal_id == f"fader:{declining.as_of}:declining"
        assert start + 40 * DAY_MS < declining.as_of <= start + FADER_DAYS[-1] * DAY_MS + 300
        (lurker,) = [s for s in signals if s.user_id == "lurker" and s.kind == "not_activated"]
        assert lurker.as_of == start + 3 * DAY_MS
        assert not [s for s in signals if s.user_id == "doer" and s.kind == "not_activated"]

        decoder = msgspec.json.Decoder(LifecycleTransition)

        def staged(items: list[Any]) -> bool:
            moves = {(t.user_id, t.to_stage) for t in (decoder.decode(r.value) for r in items)}
            return {("lurker", "not_activated"), ("doer", "active")} <= moves

        lifecycle = await read_topic(
            deployment.bootstrap, settings.topic_lifecycle, until=staged, timeout_s=30
        )
        moves = [decoder.decode(r.value) for r in lifecycle]
        assert [(t.from_stage, t.to_stage) for t in moves if t.user_id == "lurker"][:2] == [
            (None, "new"),
            ("new", "not_activated"),
        ]
        assert [(t.from_stage, t.to_stage) for t in moves if t.user_id == "doer"][:2] == [
            (None, "new"),
            ("new", "active"),
        ]
    finally:
        worker.stop()
