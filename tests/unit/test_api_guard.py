"""Who may call the worker's HTTP API: the rules.

The live views, and a worker refusing to serve a reachable address without a
token, are exercised for real in tests/integration/test_http_api.py and
test_security.py."""

from __future__ import annotations

import types

import pytest

from agents.worker.web import bearer_ok, guarded, needs_token, openapi_document


def test_only_the_probes_are_open() -> None:
    routes = set(openapi_document()["paths"])
    assert {route for route in routes if not needs_token(route)} == {"/healthz", "/readyz"}
    assert {route for route in routes if needs_token(route)} == {
        "/users/{user_id}",
        "/at-risk",
        "/metrics",
        "/openapi.json",
    }


def test_the_openapi_document_lists_the_token_on_every_guarded_route() -> None:
    for route, item in openapi_document()["paths"].items():
        operation = item["get"]
        if needs_token(route):
            assert operation["security"] == [{"bearer": []}], route
            assert "401" in operation["responses"], route
        else:
            assert operation["security"] == [], route


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("Bearer s3cret-token", True),
        (None, False),
        ("", False),
        ("Bearer ", False),
        ("Bearer s3cret-token ", False),
        ("Bearer s3cret-tokeN", False),
        ("bearer s3cret-token", False),
        ("Basic s3cret-token", False),
        ("s3cret-token", False),
    ],
)
def test_the_bearer_token_must_match_exactly(header: str | None, allowed: bool) -> None:
    assert bearer_ok(header, "s3cret-token") is allowed


@pytest.mark.parametrize("token", [None, ""])
def test_without_a_token_every_caller_is_allowed(token: str | None) -> None:
    assert bearer_ok(None, token) and bearer_ok("Bearer anything", token)


class _View:
    def json(self, body: object, status: int = 200, headers: object = None) -> tuple[int, object]:
        return status, body


async def test_a_guarded_view_never_runs_without_the_token() -> None:
    ran: list[str] = []

    async def view(_view: object, _request: object) -> tuple[int, object]:
        ran.append("view")
        return 200, "metrics"

    checked = guarded(view, "s3cret-token")
    for header in ({}, {"Authorization": "Bearer nope"}):
        request = types.SimpleNamespace(headers=header)
        status, _ = await checked(_View(), request)
        assert status == 401
    assert ran == []
    request = types.SimpleNamespace(headers={"Authorization": "Bearer s3cret-token"})
    assert await checked(_View(), request) == (200, "metrics")
    assert ran == ["view"]
