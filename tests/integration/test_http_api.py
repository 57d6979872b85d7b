"""The worker's HTTP API on real Kafka and Redis: two workers, any answers for any user."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema
import pytest
from support.metrics import sample
from support.workers import Deployment, event, latest_states, produce, wait_for

from agents.stack.services import RedisServer
from agents.worker.web import openapi_document
from streams.decode import partition_for

TOKEN = "test-token-not-a-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PARTITIONS = 4


def users_on(partition: int, count: int) -> list[str]:
    names = (f"web{i}" for i in range(10_000))
    return [u for u in names if partition_for(u.encode(), PARTITIONS) == partition][:count]


def now_ms() -> int:
    return int(time.time() * 1000)


class Api:
    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{port}"

    async def get(
        self, path: str, headers: dict[str, str] | None = None, **params: str
    ) -> tuple[int, Any]:
        async with self.session.get(
            self.base + path, headers=AUTH if headers is None else headers, params=params
        ) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def call(self, method: str, path: str) -> int:
        async with self.session.request(method, self.base + path, headers=AUTH) as response:
            return response.status


def validator_for(name: str) -> jsonschema.protocols.Validator:
    doc = openapi_document()
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as client:
        yield client


async def owned_partitions(api: Api) -> set[int]:
    """Partitions the worker reports lag for: exactly the ones it owns."""
    status, text = await api.get("/metrics")
    if status != 200:
        return set()
    return {
        p
        for p in range(PARTITIONS)
        if f'engagement_consumer_lag_records{{partition="{p}"}}' in text
    }


async def test_two_workers_answer_for_any_user_and_guard_the_api(
    kafka_broker: Any, redis_server: RedisServer, tmp_path: Any, session: aiohttp.ClientSession
) -> None:
    if not redis_server.running:
        redis_server.start()
    deployment = Deployment(
        kafka_broker.url,
        tmp_path,
        ENGAGEMENT_REDIS_URL=redis_server.url,
        ENGAGEMENT_API_TOKEN=TOKEN,
        ENGAGEMENT_AT_RISK="2s",
        ENGAGEMENT_DORMANT="1h",
        ENGAGEMENT_CHURNED="2h",
    )
    await deployment.create_topics()
    # Started together: the group forms with both before the tables hold much.
    first, second = deployment.worker("w0"), deployment.worker("w1")
    first.start()
    second.start()
    await asyncio.gather(first.wait_ready(120), second.wait_ready(120))
    apis = [Api(session, first.web_port), Api(session, second.web_port)]
    try:

        async def split() -> bool:
            owned = [await owned_partitions(api) for api in apis]
            return all(owned) and owned[0].isdisjoint(owned[1]) and len(owned[0] | owned[1]) == 4

        # Both workers own partitions before any event: neither holds the other's users.
        assert await wait_for(split, 90, interval_s=1.0), deployment.log_tail()
        users = [u for p in range(PARTITIONS) for u in users_on(p, 4)]
        base = now_ms()
        await produce(
            deployment.bootstrap,
            deployment.settings.topic_events,
            [event(u, f"{u}-0", base, tenant="acme") for u in users],
        )

        async def table_has_all() -> bool:
            return set(await latest_states(deployment)) >= set(users)

        assert await wait_for(table_has_all, 60, interval_s=1.0), deployment.log_tail()
        tracked = []
        for api in apis:
            _status, text = await api.get("/metrics")
            tracked.append(sample(text, "engagement_users_tracked"))
        assert sum(tracked) == len(users) and all(tracked), tracked

        user_schema = validator_for("User")
        for api in apis:
            for user in users:
                status, body = await api.get(f"/users/{user}")
                assert status == 200, (user, body)
                user_schema.validate(body)
                assert body["user_id"] == user
                assert body["partition"] == partition_for(user.encode(), PARTITIONS)
                assert body["last_seen"] == base and body["tenant"] == "acme"

        # a later event shows up through either worker (no stale copy answers)
        await produce(
            deployment.bootstrap,
            deployment.settings.topic_events,
            [event(u, f"{u}-1", now_ms()) for u in users],
        )

        async def both_see_second_event() -> bool:
            for api in apis:
                for user in users:
                    status, body = await api.get(f"/users/{user}")
                    if status != 200 or body["events_total"] != 2:
                        return False
            return True

        assert await wait_for(both_see_second_event, 60, interval_s=1.0), deployment.log_tail()

        # at risk after 2 s of silence: the top of the Redis set, highest risk first
        async def listed() -> bool:
            status, body = await apis[1].get(
                "/at-risk", limit="100", tenant="acme", include_holdout="true"
            )
            return status == 200 and {u["user_id"] for u in body["users"]} == set(users)

        assert await wait_for(listed, 60, interval_s=1.0), deployment.log_tail()
        # without include_holdout the hold-out users are left out (a win-back tool
        # acting on the list must not reach the control group)
        status, body = await apis[1].get("/at-risk", limit="100", tenant="acme")
        groups = {u["user_id"]: u["group"] for u in body["users"]}
        assert status == 200 and set(groups.values()) <= {"treatment"}
        status, everyone = await apis[1].get(
            "/at-risk", limit="100", tenant="acme", include_holdout="true"
        )
        treated = {u["user_id"] for u in everyone["users"] if u["group"] == "treatment"}
        assert set(groups) == treated
        # another tenant's list, or the list of users without a tenant: nobody
        assert (await apis[0].get("/at-risk", tenant="initech"))[1] == {"users": []}
        assert (await apis[0].get("/at-risk", include_holdout="true"))[1] == {"users": []}
        status, body = await apis[0].get(
            "/at-risk", limit="5", tenant="acme", include_holdout="true"
        )
        assert status == 200 and len(body["users"]) == 5
        risks = [u["risk"] for u in body["users"]]
        assert risks == sorted(risks, reverse=True)
        assert all(u["stage"] == "at_risk" for u in body["users"])
        item_schema = validator_for("AtRiskUser")
        for item in body["users"]:
            item_schema.validate(item)

        # the guard: token on every route but the probes, read-only, unknown users, bad input
        wrong = {"Authorization": "Bearer nope"}
        for api in apis:
            for route in openapi_document()["paths"]:
                path = route.replace("{user_id}", users[0])
                open_probe = route in ("/healthz", "/readyz")
                for headers in ({}, wrong):
                    status, _body = await api.get(path, headers=headers)
                    assert status == (200 if open_probe else 401), (route, headers)
                    async with session.head(api.base + path, headers=headers) as head:
                        assert head.status == (200 if open_probe else 401), (route, "HEAD")
                assert (await api.get(path))[0] == 200, route
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                assert await api.call(method, f"/users/{users[0]}") == 405
                assert await api.call(method, "/at-risk") == 405
            assert (await api.get("/users/nobody-here"))[0] == 404
            assert (await api.get("/at-risk", limit="0"))[0] == 400
            assert (await api.get("/at-risk", limit="many"))[0] == 400
            assert (await api.get("/at-risk", include_holdout="yes"))[0] == 400
            assert (await api.get("/at-risk", tenant="t" * 65))[0] == 400
            # Faust's own debug views are off: they would bypass the token
            assert (await api.get("/table/users/", headers={}))[0] == 404
            assert (await api.get("/router/", headers={}))[0] == 404

        status, doc = await apis[0].get("/openapi.json")
        assert status == 200 and doc == openapi_document()
        assert doc["openapi"].startswith("3.")
        assert set(doc["paths"]) == {
            "/users/{user_id}",
            "/at-risk",
            "/metrics",
            "/healthz",
            "/readyz",
            "/openapi.json",
        }
        for path, item in doc["paths"].items():
            assert set(item) == {"get"}, path  # read-only
    finally:
        deployment.stop_all()


async def test_at_risk_is_unavailable_not_failing_while_redis_is_down(
    embedded_broker: Any, redis_server: RedisServer, tmp_path: Any, session: aiohttp.ClientSession
) -> None:
    if not redis_server.running:
        redis_server.start()
    deployment = Deployment(embedded_broker.url, tmp_path, ENGAGEMENT_REDIS_URL=redis_server.url)
    await deployment.create_topics()
    worker = await deployment.start_worker()
    api = Api(session, worker.web_port)
    try:
        assert (await api.get("/at-risk"))[0] == 200
        redis_server.stop()
        status, body = await api.get("/at-risk")
        assert status == 503 and body == {"error": "redis unavailable"}
        assert (await api.get("/healthz"))[0] == 200
    finally:
        if not redis_server.running:
            redis_server.start()
        deployment.stop_all()
