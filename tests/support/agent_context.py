"""The ingest agent in Faust's ``test_context``: memory store, no broker (tests/agents)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CollectorRegistry

from agents.worker.wiring import Worker, build_worker
from streams.settings import load_settings


@contextlib.asynccontextmanager
async def agent_context(**overrides: Any) -> AsyncIterator[tuple[Worker, Any]]:
    """A worker built from ``overrides`` (fresh secrets, a private registry) and the
    context that feeds its ingest agent. The stream path: the Faust agent itself
    takes the records (``ctx.put``), which the batch path's drain loop would skip."""
    settings = load_settings(ingest="stream", **overrides).with_generated_secrets()
    worker = build_worker(settings, CollectorRegistry(), web_enabled=False)
    app = worker.app
    app.finalize()
    app.conf.store = "memory://"
    app.flow_control.resume()
    worker.engine_app.cohorts.send = _unsent  # tests of cohort cells replace it
    async with worker.ingest.test_context() as ctx:
        yield worker, ctx


async def _unsent(**_: Any) -> None:
    """No broker here: the cohort cells a tick publishes go nowhere."""
