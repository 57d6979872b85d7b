"""Start a worker process: topics first, then the Faust worker."""

from __future__ import annotations

import asyncio
import logging

import faust

from agents.common.collection import tune_for_worker
from agents.worker.wiring import build_worker
from streams.model_settings import model_config
from streams.settings import Settings
from streams.topics import ensure_topics

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    """Blocks until the worker stops (SIGINT/SIGTERM). Refuses unsafe settings
    before it touches the broker."""
    settings.require_secrets()
    settings.require_guarded_api()
    model_config(settings)  # a risk model file that does not fit these settings stops here
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(ensure_topics(settings))
    worker = build_worker(settings)
    tune_for_worker()
    faust_worker = faust.Worker(
        worker.app,
        loop=loop,
        loglevel=settings.log_level,
        quiet=True,
        override_logging=False,
    )
    # no progress spinner: its end writes a terminal escape into the log, even when
    # the output is not a terminal (a JSON log line would start with it)
    faust_worker.spinner = None
    faust_worker.execute_from_commandline()
