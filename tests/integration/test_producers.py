"""The example producers (Python, Java, Go) against a real Kafka broker.

Each one sends events for many users; every record must land on the
partition the engine's murmur2 (``streams.decode.partition_for``) gives for
its key, and the engine's decoder must accept it. The Java and Go programs
are built here (Maven, Go toolchain): a missing toolchain fails the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.kafka_util import create_topics
from support.workers import Deployment, read_topic

from agents.stack.kafka_broker import KafkaBroker
from streams.decode import DecodeRules, decode_record, partition_for
from streams.validate import Rejected

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BUILT = ROOT / ".cache" / "examples"
# An odd count: a producer whose partitioner differs from murmur2 (or takes the
# hash modulo differently) misplaces most keys.
PARTITIONS = 7
USERS = 1500
EVENTS_PER_USER = 3
BUILD_TIMEOUT_S = 900


def toolchain(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: the example producers need it (make examples)")
    return found


def build(argv: list[str], cwd: Path) -> None:
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="session")
def java_producer() -> list[str]:
    """``mvn package`` (incremental; dependencies from the local Maven cache after the first)."""
    project = EXAMPLES / "java"
    build([toolchain("mvn"), "-q", "-B", "package"], project)
    return [toolchain("java"), "-jar", str(project / "target" / "engagement-producer.jar")]


@pytest.fixture(scope="session")
def go_producer() -> list[str]:
    """The Go module's own tests (murmur2 vectors of the Java client), then the binary."""
    project = EXAMPLES / "go"
    go = toolchain("go")
    build([go, "test", "./..."], project)
    binary = BUILT / "engagement-producer-go"
    build([go, "build", "-buildvcs=false", "-o", str(binary), "."], project)
    return [str(binary)]


@pytest.fixture(scope="session")
def python_producer() -> list[str]:
    return [sys.executable, str(EXAMPLES / "producer.py")]


PRODUCERS = ["python_producer", "java_producer", "go_producer"]


def producer_run(
    argv: list[str], deployment: Deployment, *args: str, **settings: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGEMENT_")}
    # Broker, topic, TLS and SASL from the worker's own variables, as an operator would.
    env["ENGAGEMENT_BROKER"] = deployment.env["ENGAGEMENT_BROKER"]
    env["ENGAGEMENT_TOPIC_EVENTS"] = deployment.settings.topic_events
    env.update(settings)
    return subprocess.run(
        [*argv, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def run_producer(
    argv: list[str], deployment: Deployment, *args: str, **settings: str
) -> dict[str, Any]:
    done = producer_run(argv, deployment, *args, **settings)
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


async def records_of(deployment: Deployment, count: int) -> list[Any]:
    return await read_topic(
        deployment.bootstrap,
        deployment.settings.topic_events,
        until=lambda records: len(records) >= count,
        timeout_s=60,
    )


def assert_placed_and_accepted(records: list[Any], deployment: Deployment) -> None:
    settings = deployment.settings
    rules = DecodeRules(
        topic=settings.topic_events,
        partitions=PARTITIONS,
        event=settings.event_rules(),
    )
    misplaced = [r for r in records if r.partition != partition_for(r.key, PARTITIONS)]
    assert misplaced == []
    rejected = [
        decoded.reason
        for r in records
        if isinstance(
            decoded := decode_record(
                r.key, r.value, r.headers, r.partition, r.timestamp, r.offset, rules
            ),
            Rejected,
        )
    ]
    assert rejected == []
    # many users, spread over every partition
    assert {r.partition for r in records} == set(range(PARTITIONS))


def fresh_deployment(kafka_broker: Any, tmp_path: Path) -> Deployment:
    return Deployment(kafka_broker.url, tmp_path, ENGAGEMENT_PARTITIONS=str(PARTITIONS))


@pytest.mark.parametrize("producer", PRODUCERS)
async def test_sample_history_lands_on_each_users_partition(
    kafka_broker: Any, tmp_path: Path, producer: str, request: pytest.FixtureRequest
) -> None:
    argv: list[str] = request.getfixturevalue(producer)
    deployment = fresh_deployment(kafka_broker, tmp_path)
    await deployment.create_topics()
    sent = USERS * EVENTS_PER_USER
    summary = run_producer(
        argv,
        deployment,
        "--sample-users",
        str(USERS),
        "--events-per-user",
        str(EVENTS_PER_USER),
    )
    assert summary["sent"] == sent
    records = await records_of(deployment, sent)
    assert len(records) == sent
    per_user = Counter(r.key for r in records)
    assert per_user == {f"u{u}".encode(): EVENTS_PER_USER for u in range(USERS)}
    assert_placed_and_accepted(records, deployment)


def contract_lines(now_ms: int) -> list[dict[str, Any]]:
    """Contract events for users whose ids are not plain ASCII, nor alike (the
    longest near the 256-byte cap; event ids within their 128-byte cap)."""
    users = [f"user-{n}" for n in range(200)] + ["ünïcödé-ß", "東京-7", "a b", "x" * 250]
    return [
        {
            "event_id": f"e{index}-{n}",
            "user_id": user,
            "type": "page_view",
            "ts": now_ms - 1000 * n,
            "tenant": "acme",
            "props": {"n": n},
        }
        for index, user in enumerate(users)
        for n in range(2)
    ]


@pytest.mark.parametrize("producer", PRODUCERS)
async def test_input_file_is_sent_as_is_on_each_users_partition(
    kafka_broker: Any, tmp_path: Path, producer: str, request: pytest.FixtureRequest
) -> None:
    argv: list[str] = request.getfixturevalue(producer)
    deployment = fresh_deployment(kafka_broker, tmp_path)
    await deployment.create_topics()
    lines = contract_lines(int(time.time() * 1000))
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8"
    )
    summary = run_producer(argv, deployment, "--input", str(events))
    assert summary["sent"] == len(lines)
    records = await records_of(deployment, len(lines))
    assert sorted(json.loads(r.value)["event_id"] for r in records) == sorted(
        line["event_id"] for line in lines
    )
    for record in records:
        assert record.key == json.loads(record.value)["user_id"].encode("utf-8")
    assert_placed_and_accepted(records, deployment)


@pytest.mark.parametrize("producer", ["java_producer", "go_producer"])
async def test_a_line_without_event_id_stops_the_run(
    kafka_broker: Any, tmp_path: Path, producer: str, request: pytest.FixtureRequest
) -> None:
    argv: list[str] = request.getfixturevalue(producer)
    deployment = fresh_deployment(kafka_broker, tmp_path)
    await deployment.create_topics()
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"user_id": "u1", "type": "login", "ts": 1}) + "\n")
    done = producer_run(argv, deployment, "--input", str(events))
    assert done.returncode != 0
    assert "event_id" in done.stderr


SASL_USER = "producer"
SASL_PASSWORD = uuid.uuid4().hex


def openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        [toolchain("openssl"), *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA (ca.pem) and the broker's key and chain signed by it (broker.pem)."""
    where = tmp_path_factory.mktemp("tls")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=engagement test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=where,
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=where,
    )
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
        cwd=where,
    )
    (where / "broker.pem").write_text(
        (where / "server.key").read_text() + (where / "server.pem").read_text()
    )
    return where


@pytest.fixture(scope="module")
def secured_broker(certificates: Path) -> Iterator[KafkaBroker]:
    """A broker with a SASL PLAIN listener and a TLS listener (and PLAINTEXT for the test)."""
    # A second JVM on a machine already busy with the first: more time to start.
    broker = KafkaBroker(
        sasl_users={SASL_USER: SASL_PASSWORD},
        tls_keystore=certificates / "broker.pem",
        start_timeout_s=180.0,
    )
    try:
        broker.start()
    except Exception as exc:
        broker.close()
        pytest.fail(f"Kafka with SASL and TLS listeners did not start: {exc}", pytrace=False)
    yield broker
    broker.close()


def sasl_settings(broker: KafkaBroker, password: str) -> dict[str, str]:
    return {
        "ENGAGEMENT_BROKER": f"kafka://{broker.sasl_bootstrap}",
        "ENGAGEMENT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "ENGAGEMENT_KAFKA_SASL_MECHANISM": "PLAIN",
        "ENGAGEMENT_KAFKA_SASL_USERNAME": SASL_USER,
        "ENGAGEMENT_KAFKA_SASL_PASSWORD": password,
    }


@pytest.mark.parametrize("producer", PRODUCERS)
async def test_producers_log_in_with_the_workers_sasl_settings(
    secured_broker: KafkaBroker, tmp_path: Path, producer: str, request: pytest.FixtureRequest
) -> None:
    argv: list[str] = request.getfixturevalue(producer)
    deployment = fresh_deployment(secured_broker, tmp_path)
    await deployment.create_topics()
    users = 300
    sample = ("--sample-users", str(users), "--events-per-user", "2")

    refused = producer_run(argv, deployment, *sample, **sasl_settings(secured_broker, "wrong"))
    assert refused.returncode != 0
    assert "wrong" not in refused.stderr  # the password is not echoed

    # the password from a file, as the worker reads secrets (``*_FILE``)
    secret = tmp_path / "sasl-password"
    secret.write_text(SASL_PASSWORD + "\n")
    settings = sasl_settings(secured_broker, SASL_PASSWORD)
    del settings["ENGAGEMENT_KAFKA_SASL_PASSWORD"]
    settings["ENGAGEMENT_KAFKA_SASL_PASSWORD_FILE"] = str(secret)
    summary = run_producer(argv, deployment, *sample, **settings)
    assert summary["sent"] == 2 * users
    records = await records_of(deployment, 2 * users)
    assert len(records) == 2 * users
    assert_placed_and_accepted(records, deployment)


@pytest.mark.parametrize("producer", PRODUCERS)
async def test_producers_speak_tls_with_the_workers_settings(
    secured_broker: KafkaBroker,
    certificates: Path,
    tmp_path: Path,
    producer: str,
    request: pytest.FixtureRequest,
) -> None:
    argv: list[str] = request.getfixturevalue(producer)
    deployment = fresh_deployment(secured_broker, tmp_path)
    await deployment.create_topics()
    users = 300
    sample = ("--sample-users", str(users), "--events-per-user", "2")
    tls = {
        "ENGAGEMENT_BROKER": f"kafka://{secured_broker.tls_bootstrap}",
        "ENGAGEMENT_KAFKA_SECURITY_PROTOCOL": "SSL",
    }

    # the broker's certificate is signed by no CA the system trusts
    untrusted = producer_run(argv, deployment, *sample, **tls)
    assert untrusted.returncode != 0
    assert "certificate" in untrusted.stderr.lower(), untrusted.stderr[-2000:]

    summary = run_producer(
        argv, deployment, *sample, **tls, ENGAGEMENT_KAFKA_SSL_CAFILE=str(certificates / "ca.pem")
    )
    assert summary["sent"] == 2 * users
    records = await records_of(deployment, 2 * users)
    assert len(records) == 2 * users
    assert_placed_and_accepted(records, deployment)


@pytest.mark.parametrize("producer", PRODUCERS)
async def test_a_batch_the_topic_refuses_fails_the_run(
    kafka_broker: Any, tmp_path: Path, producer: str, request: pytest.FixtureRequest
) -> None:
    argv: list[str] = request.getfixturevalue(producer)
    deployment = fresh_deployment(kafka_broker, tmp_path)
    topic = deployment.settings.topic_events
    # smaller than any batch of these records: the broker refuses every one, for good
    await create_topics(
        deployment.bootstrap,
        {topic: PARTITIONS},
        {"max.message.bytes": "100", "message.timestamp.type": "LogAppendTime"},
    )
    done = producer_run(argv, deployment, "--sample-users", "50")
    assert done.returncode != 0
    assert re.search(r"too[ _]?large", done.stderr, re.IGNORECASE), done.stderr[-2000:]
