"""The worker's read-only HTTP API (Faust web views) and its OpenAPI description.

- ``GET /users/{user_id}`` — the user's serving view from the users table,
  answered by the worker that owns the user's partition: a worker that does
  not forwards the request there (Faust's table routing, ``app.table_route``).
- ``GET /at-risk?limit=N&tenant=T`` — the tenant's users most at risk, from
  the Redis mirror; hold-out users only with ``include_holdout=true``.
- ``GET /metrics`` (Prometheus), ``/healthz`` (the process answers),
  ``/readyz`` (tables recovered), ``/openapi.json``.

Only GET/HEAD are routed: any other method gets 405. With
``ENGAGEMENT_API_TOKEN`` set, every view except the probes (``/healthz``,
``/readyz``) needs ``Authorization: Bearer <token>`` (401 otherwise), checked
before the view runs; routed requests carry the caller's header along. A
worker bound to a non-loopback address refuses to start without a token
(``Settings.require_guarded_api``).
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents.worker.metrics import Metrics
from agents.worker.redis_client import REDIS_FAILURES
from agents.worker.redis_keys import top_at_risk
from agents.worker.redis_mirror import RedisMirror
from agents.worker.runtime import Runtime
from agents.worker.user_view import user_fields
from streams.decode import partition_for

# aiohttp takes the charset separately; the exposition format is UTF-8 text.
METRICS_CONTENT_TYPE: Final = ";".join(
    part for part in CONTENT_TYPE_LATEST.split(";") if "charset" not in part
).strip()
AT_RISK_DEFAULT_LIMIT: Final = 20
AT_RISK_MAX_LIMIT: Final = 1000
USER_ROUTE: Final = "/users/{user_id}"
# Probes (liveness, readiness) answer without the token; every other route needs it.
OPEN_ROUTES: Final = frozenset({"/healthz", "/readyz"})
Handler = Callable[..., Awaitable[Any]]


def bearer_ok(header: str | None, token: str | None) -> bool:
    """True if no token is configured, or ``header`` carries exactly it."""
    if not token:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].encode(), token.encode())


def needs_token(route: str) -> bool:
    """Whether ``route`` needs the bearer token (when one is configured)."""
    return route not in OPEN_ROUTES


def guarded(handler: Handler, token: str | None) -> Handler:
    """``handler`` behind the bearer token: 401 without it, the view never runs."""

    @functools.wraps(handler)
    async def checked(view: Any, request: Any, **kwargs: Any) -> Any:
        if not bearer_ok(request.headers.get("Authorization"), token):
            return view.json(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await handler(view, request, **kwargs)

    return checked


def register_web(
    runtime: Runtime,
    metrics: Metrics,
    mirror: RedisMirror | None,
    is_ready: Callable[[], bool],
    clock_of: Callable[[int], int],
) -> None:
    """Add the views to the runtime's Faust app (before the worker starts)."""
    engine_app = runtime.engine_app
    app = engine_app.app
    settings = runtime.settings
    token = settings.api_token.get_secret_value() if settings.api_token else None

    async def metrics_view(view: Any, request: Any) -> Any:
        return view.bytes(generate_latest(metrics.registry), content_type=METRICS_CONTENT_TYPE)

    async def healthz(view: Any, request: Any) -> Any:
        return view.json({"status": "ok"})

    async def readyz(view: Any, request: Any) -> Any:
        if is_ready():
            return view.json({"ready": True})
        return view.json({"ready": False}, status=503)

    async def openapi(view: Any, request: Any) -> Any:
        return view.json(openapi_document())

    async def local_user(view: Any, request: Any, user_id: str) -> Any:
        state = runtime.store.get(user_id)
        if state is None:
            return view.json({"error": "unknown user"}, status=404)
        partition = partition_for(user_id.encode(), settings.partitions)
        fields = user_fields(user_id, state, clock_of(partition), runtime.config)
        return view.json({"user_id": user_id, "partition": partition, **fields})

    # Guarded outside the routing: an unauthenticated request is never forwarded.
    user = app.table_route(table=engine_app.users, match_info="user_id")(local_user)

    async def at_risk(view: Any, request: Any) -> Any:
        raw = request.query.get("limit", str(AT_RISK_DEFAULT_LIMIT))
        if not raw.isdigit() or not 1 <= int(raw) <= AT_RISK_MAX_LIMIT:
            return view.json(
                {"error": f"limit must be an integer from 1 to {AT_RISK_MAX_LIMIT}"}, status=400
            )
        include = request.query.get("include_holdout", "false")
        if include not in ("true", "false"):
            return view.json({"error": "include_holdout must be true or false"}, status=400)
        tenant = request.query.get("tenant", "")
        if len(tenant.encode()) > settings.max_label_bytes:
            return view.json(
                {"error": f"tenant longer than {settings.max_label_bytes} bytes"}, status=400
            )
        if mirror is None:
            return view.json({"error": "no Redis mirror configured"}, status=503)
        try:
            users = await top_at_risk(
                mirror.client, mirror.keys, int(raw), tenant, include == "true"
            )
        except REDIS_FAILURES:
            return view.json({"error": "redis unavailable"}, status=503)
        return view.json({"users": users})

    routes: dict[str, Handler] = {
        "/metrics": metrics_view,
        "/healthz": healthz,
        "/readyz": readyz,
        "/openapi.json": openapi,
        USER_ROUTE: user,
        "/at-risk": at_risk,
    }
    for route, handler in routes.items():
        app.page(route)(guarded(handler, token) if needs_token(route) else handler)


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(description, {"$ref": "#/components/schemas/Error"})


_USER_PROPERTIES: Final[dict[str, Any]] = {
    "stage": {
        "type": "string",
        "enum": ["new", "active", "at_risk", "dormant", "churned", "resurrected", "not_activated"],
    },
    "tier": {"type": "string", "enum": ["none", "at_risk", "dormant", "churned"]},
    "risk": {"type": "number", "minimum": 0, "maximum": 1},
    "as_of": {"type": "integer", "description": "event-time clock (epoch ms) of this view"},
    "first_seen": {"type": "integer", "description": "epoch ms"},
    "last_seen": {"type": "integer", "description": "epoch ms"},
    "episode": {"type": "integer", "description": "the last_seen that began the silence"},
    "inactive_ms": {"type": "integer"},
    "next_threshold_ms": {"type": "integer"},
    "threshold_source": {"type": "string", "enum": ["user", "segment", "tenant", "default"]},
    "tenant": {"type": "string"},
    "segment": {"type": "string"},
    "group": {"type": "string", "enum": ["treatment", "holdout"]},
    "active_days": {"type": "integer"},
    "streak_days": {"type": "integer"},
    "events_total": {"type": "integer"},
    "usual_gap_days": {"type": "number"},
}


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.0 description of the views registered by ``register_web``."""
    user_schema = {
        "type": "object",
        "required": ["user_id", "partition", *_USER_PROPERTIES],
        "properties": {
            "user_id": {"type": "string"},
            "partition": {"type": "integer", "minimum": 0},
            **_USER_PROPERTIES,
        },
    }
    at_risk_item = {
        "type": "object",
        "description": "The user's Redis hash (values as strings) plus user_id and risk.",
        "required": ["user_id", "risk"],
        "properties": {"user_id": {"type": "string"}, "risk": {"type": "number"}},
        "additionalProperties": {"type": "string"},
    }
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "engagement-streams worker API",
            "version": "1",
            "description": "Read-only. Routes that list `bearer` need the token when "
            "ENGAGEMENT_API_TOKEN is set.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "User": user_schema,
                "AtRiskUser": at_risk_item,
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
            },
        },
        "paths": {
            "/users/{user_id}": {
                "get": {
                    "summary": "A user's state, answered by the worker that owns the user",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "user_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _json("the user", {"$ref": "#/components/schemas/User"}),
                        "401": _error("token missing or wrong"),
                        "404": _error("unknown user"),
                        "503": _error("partition owner unknown (rebalancing)"),
                    },
                }
            },
            "/at-risk": {
                "get": {
                    "summary": "A tenant's users whose stage is at_risk, highest risk first "
                    "(from Redis); hold-out users left out unless include_holdout=true",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "tenant",
                            "in": "query",
                            "description": "the tenant (default: events without a tenant)",
                            "schema": {"type": "string", "default": ""},
                        },
                        {
                            "name": "include_holdout",
                            "in": "query",
                            "schema": {"type": "boolean", "default": False},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": AT_RISK_MAX_LIMIT,
                                "default": AT_RISK_DEFAULT_LIMIT,
                            },
                        },
                    ],
                    "responses": {
                        "200": _json(
                            "the users",
                            {
                                "type": "object",
                                "required": ["users"],
                                "properties": {
                                    "users": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/AtRiskUser"},
                                    }
                                },
                            },
                        ),
                        "400": _error("bad limit, tenant or include_holdout"),
                        "401": _error("token missing or wrong"),
                        "503": _error("Redis unavailable"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": secured,
                    "responses": {
                        "200": {
                            "description": "text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": _error("token missing or wrong"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness: the process answers",
                    "security": [],
                    "responses": {"200": _json("alive", {"type": "object"})},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: the tables are recovered",
                    "security": [],
                    "responses": {
                        "200": _json("ready", {"type": "object"}),
                        "503": _json("recovering", {"type": "object"}),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": secured,
                    "responses": {
                        "200": _json("OpenAPI 3.0 document", {"type": "object"}),
                        "401": _error("token missing or wrong"),
                    },
                }
            },
        },
    }
