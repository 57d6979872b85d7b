"""``engagement backfill``: bring an empty deployment to the state of a history.

The state is built offline with the replay's record processor
(``agents.offline.history_seed``) and written into the worker's tables
(``agents.ops.backfill``); docs/OPERATIONS.md, "Backfill", gives the design and
its limits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import click
import msgspec

from agents.cli.options import cli_settings
from agents.common.logs import configure_logging
from tables.errors import EngagementError
from tables.processor import ClockMark


@click.command()
@click.argument("history", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Tenant/segment threshold versions (JSON Lines of config values with "
    "scope and effective_from), as for replay.",
)
def backfill(history: Path, config_path: Path | None) -> None:
    """Load a history (JSON Lines, CSV or Parquet) into an empty deployment's tables.

    Start the workers afterwards: they hold the state the history leads to and
    judge from its end on, with no signal for a silence the history closed."""
    from agents.offline.history_seed import history_seed
    from agents.offline.replay import read_config
    from agents.ops.backfill import load_seed
    from streams.model_settings import model_config

    settings = cli_settings()
    configure_logging(settings.log_level, settings.log_format)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the error below says it once
    try:
        book = None if config_path is None else read_config(config_path)
    except EngagementError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from exc
    try:
        config = model_config(settings)
        seed = history_seed(
            history,
            config,
            settings.partitions,
            settings.cohort_period_ms,
            settings.event_rules(),
            book,
            latest_ms=int(time.time() * 1000) + settings.max_future_ms,
        )
        clock = ClockMark(seed.high_ms, seed.events_seen_append_ms)
        loaded = asyncio.run(load_seed(settings, seed.states, clock, seed.book, seed.cells))
    except EngagementError as exc:
        raise click.ClickException(str(exc)) from exc
    summary = {
        "history": msgspec.to_builtins(seed.stats),
        "clock_ms": seed.high_ms - config.lateness_ms,
        "loaded": msgspec.to_builtins(loaded),
    }
    click.echo(json.dumps(summary))
