"""Security properties of a live worker and of the decoder.

- user ids never appear in /metrics or in the worker's log, whatever traffic
  (events, poison, signals, an erasure) it handled;
- secrets (salts, clock keys, API token, SASL password) are never logged
  nor shown by the settings object;
- a worker that would serve a non-loopback address without an API token
  refuses to start, before it touches the broker;
- oversized and deeply nested records are rejected before any JSON parsing;
- clock and erasure records cannot be forged, moved or replayed by a producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from support.metrics import sample
from support.workers import Deployment, event, latest_states, produce, read_topic, wait_for

import streams.validate as validate_module
from agents.simulation.population import POISON_REASONS, poison_records
from streams.control import ControlSigner
from streams.decode import DecodeRules, decode_record, partition_for
from streams.records import CONTROL_HEADER, Erase, Tick
from streams.settings import load_settings
from streams.validate import Rejected

PARTITIONS = 4
SECRETS = {
    "ENGAGEMENT_HOLDOUT_SALT": "holdout-salt-6f1d2a",
    "ENGAGEMENT_ERASURE_SALT": "erasure-salt-93be47",
    "ENGAGEMENT_CLOCK_KEYS": "k1:clock-secret-a8c3e1-5f0e9d8c7b6a5f4e3d,"
    "k0:old-clock-secret-77d0b2-0a1b2c3d4e5f6a7b",
    "ENGAGEMENT_CLOCK_SIGNING_KID": "k1",
    "ENGAGEMENT_API_TOKEN": "api-token-0c9f5e",
    "ENGAGEMENT_KAFKA_SASL_PASSWORD": "sasl-password-4b7a11",
}
SECRET_VALUES = (
    "holdout-salt-6f1d2a",
    "erasure-salt-93be47",
    "clock-secret-a8c3e1-5f0e9d8c7b6a5f4e3d",
    "old-clock-secret-77d0b2-0a1b2c3d4e5f6a7b",
    "api-token-0c9f5e",
    "sasl-password-4b7a11",
)


def now_ms() -> int:
    return int(time.time() * 1000)


def metrics_text(worker: Any, token: str | None = SECRETS["ENGAGEMENT_API_TOKEN"]) -> str:
    """/metrics of a worker whose API is token-protected."""
    request = urllib.request.Request(f"http://127.0.0.1:{worker.web_port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(response.read().decode())


async def metric(worker: Any, name: str, **labels: str) -> float:
    with contextlib.suppress(OSError):
        return sample(await asyncio.to_thread(metrics_text, worker), name, **labels)
    return -1.0


@pytest.mark.parametrize("log_level", ["INFO", "DEBUG"])
async def test_no_user_id_or_secret_leaks_from_a_live_worker(
    kafka_broker: Any, tmp_path: Any, log_level: str
) -> None:
    deployment = Deployment(kafka_broker.url, tmp_path, ENGAGEMENT_LOG_LEVEL=log_level, **SECRETS)
    settings = deployment.settings
    await deployment.create_topics()
    worker = await deployment.start_worker()
    marker = "pii7c4"  # in every user id below: easy to find in any text
    users = [f"{marker}-{name}@example.com" for name in ("ann", "ben", "cat", "dan", "eve")]
    try:
        t0 = now_ms()
        await produce(
            deployment.bootstrap,
            settings.topic_events,
            [
                event(user, f"{user}-{n}", t0 + n, type_="purchase")
                for n in range(3)
                for user in users
            ],
        )
        # poison carrying user ids in keys and values, of every producer-made reason
        poison = [
            (
                key.replace(b"u", marker.encode()) if key else key,
                value.replace(b'"u0', b'"' + marker.encode()),
            )
            for _reason, key, value in poison_records(2 * len(POISON_REASONS), seed=5, now_ms=t0)
        ]
        await produce(deployment.bootstrap, settings.topic_events, poison)
        # signals: the users go silent (at_risk after 3 s); one is erased
        erase = subprocess.run(
            [sys.executable, "-m", "agents.cli.main", "erase", users[0]],
            env={**os.environ, **deployment.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert erase.returncode == 0, erase.stderr
        for secret in SECRET_VALUES:
            assert secret not in erase.stdout + erase.stderr

        async def quiet_users_signalled() -> bool:
            return await metric(worker, "engagement_signals_total", kind="at_risk") >= 4

        assert await wait_for(quiet_users_signalled, 60), deployment.log_tail()
        assert await metric(worker, "engagement_dlq_total") >= 20
        assert await metric(worker, "engagement_erasures_total", outcome="applied") == 1

        with pytest.raises(urllib.error.HTTPError) as denied:
            await asyncio.to_thread(metrics_text, worker, None)
        assert denied.value.code == 401
        text = await asyncio.to_thread(metrics_text, worker)
        log = worker.log_path.read_text(errors="replace")
        assert marker not in text, [line for line in text.splitlines() if marker in line][:5]
        assert marker not in log, [line for line in log.splitlines() if marker in line][:5]
        for secret in SECRET_VALUES:
            assert secret not in log
            assert secret not in text
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")  # shutdown lines too
    assert marker not in log
    assert not any(secret in log for secret in SECRET_VALUES)


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
async def test_a_reachable_worker_without_a_token_refuses_to_start(
    embedded_broker: Any, tmp_path: Any, host: str
) -> None:
    deployment = Deployment(embedded_broker.url, tmp_path, ENGAGEMENT_WEB_HOST=host)
    worker = deployment.worker()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agents.cli.main", "worker"],
        env=worker.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "ENGAGEMENT_API_TOKEN" in done.stderr and f"ENGAGEMENT_WEB_HOST={host!r}" in done.stderr
    admin = AIOKafkaAdminClient(bootstrap_servers=deployment.bootstrap)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    assert deployment.settings.topic_events not in topics, "it created topics before refusing"


def test_settings_never_show_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    shown = " ".join(
        (repr(settings), str(settings), settings.model_dump_json(), repr(settings.model_dump()))
    )
    for secret in SECRET_VALUES:
        assert secret not in shown
    assert settings.clock_key_map()["k1"] == b"clock-secret-a8c3e1-5f0e9d8c7b6a5f4e3d"  # usable


RULES = DecodeRules(topic="events", partitions=PARTITIONS)


def test_an_oversized_record_is_rejected_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(raw: bytes) -> Any:
        raise AssertionError("the JSON parser must not see this record")

    monkeypatch.setattr(validate_module, "_parse", never)
    value = b'{"event_id": "' + b"x" * 10_000_000 + b'"}'
    result = decode_record(b"k", value, None, 0, now_ms(), 0, RULES)
    assert isinstance(result, Rejected) and result.reason == "too_large"


@pytest.mark.parametrize(
    "value",
    [
        b"[" * 30_000 + b"]" * 30_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b'{"props": ' + b'{"n": ' * 17 + b"{}" + b"}" * 18,
    ],
    ids=["deep-array", "deep-object", "depth-17"],
)
def test_deeply_nested_records_are_refused_by_the_first_parser(
    value: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """msgspec stops a 60k-level value at its recursion limit without reading it
    whole, and the nesting walk stops at the 17th level; the fallback parser is
    never asked."""

    def never(raw: bytes) -> Any:
        raise AssertionError("the fallback parser must not see this record")

    monkeypatch.setattr(validate_module.json, "loads", never)
    result = decode_record(b"k", value, None, 0, now_ms(), 0, RULES)
    assert isinstance(result, Rejected) and result.reason == "too_deep"


async def test_forged_moved_and_replayed_control_records_change_nothing(
    kafka_broker: Any, tmp_path: Any
) -> None:
    """What a producer can do with the input topic: forge a tick without the key,
    copy a genuine tick into another partition, tamper with a signed field,
    re-send an old signed erasure. All are refused or ignored; no user is
    flagged, none is erased."""
    deployment = Deployment(
        kafka_broker.url,
        tmp_path,
        ENGAGEMENT_AT_RISK="1h",
        ENGAGEMENT_DORMANT="2h",
        ENGAGEMENT_CHURNED="3h",
        **SECRETS,
    )
    settings = deployment.settings
    topic = settings.topic_events
    await deployment.create_topics()
    worker = await deployment.start_worker()
    user = f"{settings.app_id}-victim"
    partition = partition_for(user.encode(), PARTITIONS)
    other = (partition + 1) % PARTITIONS
    genuine = ControlSigner(settings.clock_key_map(), "k1")
    attacker = ControlSigner({"k1": b"guessed-key"}, "k1")
    unknown_kid = ControlSigner({"k9": b"whatever"}, "k9")
    far = now_ms() + 365 * 86_400_000
    try:
        await produce(deployment.bootstrap, topic, [event(user, "v1", now_ms())])
        records: list[tuple[int, bytes, list[tuple[str, bytes]]]] = []
        tick = Tick(wall_ms=far, events_seen_append_ms=far)
        records.append((partition, *attacker.sign(topic, partition, tick)))
        records.append((partition, *unknown_kid.sign(topic, partition, tick)))
        value, headers = genuine.sign(topic, other, tick)
        records.append((partition, value, headers))  # signed for another partition
        value, headers = genuine.sign(topic, partition, tick)
        tampered = json.loads(value)
        tampered["events_seen_append_ms"] += 1
        records.append((partition, json.dumps(tampered).encode(), headers))
        value, headers = genuine.sign(topic, partition, Erase(user_id=user, issued_ms=1))
        records.append((partition, value, [(CONTROL_HEADER, b"tick")]))  # wrong header
        # a genuine erasure of two hours ago, copied back into the topic: stale
        old = Erase(user_id=user, issued_ms=now_ms() - 2 * 3_600_000)
        records.append((partition, *genuine.sign(topic, partition, old)))
        producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap)
        await producer.start()
        try:
            for part, value, headers in records:
                await producer.send_and_wait(topic, value=value, partition=part, headers=headers)
            # a control type without the header is an ordinary producer's mistake
            await producer.send_and_wait(
                topic,
                key=user.encode(),
                value=json.dumps({**event(user, "v2", now_ms()), "type": "$tick"}).encode(),
                partition=partition,
            )
        finally:
            await producer.stop()

        async def handled() -> bool:
            return (
                await metric(worker, "engagement_dlq_total", reason="bad_signature") == 5
                and await metric(worker, "engagement_dlq_total", reason="reserved_type") == 1
                and await metric(worker, "engagement_erasures_total", outcome="stale") == 1
            )

        assert await wait_for(handled, 60), deployment.log_tail()
        assert await metric(worker, "engagement_erasures_total", outcome="applied") == 0
        states = await latest_states(deployment)
        assert user in states and states[user].events_total == 1
        signals = await read_topic(
            deployment.bootstrap, settings.topic_signals, timeout_s=3, idle_s=1
        )
        assert signals == [], "a forged far-future tick would have flagged the user"
    finally:
        worker.stop()
