"""``engagement simulate``: simulated users to Kafka live, or to a JSON Lines history."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import Any

import click
from aiokafka.errors import KafkaError

from agents.simulation.producer import SimStats, run_simulator, wall_ms, write_history
from streams.kafka import client_options
from streams.settings import Settings, load_settings
from tables.durations import parse_duration_ms, parse_instant_ms
from tables.errors import EngagementError


@click.command()
@click.option(
    "--broker",
    default=None,
    help="host:port[,...] or kafka://host:port; default ENGAGEMENT_BROKER.",
)
@click.option("--topic", default=None, help="Input topic; default ENGAGEMENT_TOPIC_EVENTS.")
@click.option("--users", type=click.IntRange(min=0), default=200, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--day-length",
    default=None,
    help="Length of a simulated day, e.g. 1s or 1d; default ENGAGEMENT_DAY_MS.",
)
@click.option("--duration", type=float, default=None, help="Seconds (default: until Ctrl-C).")
@click.option(
    "--poison-every",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Send one bad record after every N events (0: none).",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Simulated time per wall time; other than 1 makes event time drift from broker time.",
)
@click.option(
    "--history",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a JSON Lines history to this file instead of producing.",
)
@click.option("--days", type=click.IntRange(min=1), default=90, show_default=True)
@click.option(
    "--start",
    default=None,
    help="History start (RFC 3339 or epoch ms); default: --days days before now.",
)
def simulate(
    broker: str | None,
    topic: str | None,
    users: int,
    seed: int,
    day_length: str | None,
    duration: float | None,
    poison_every: int,
    speed: float,
    history: Path | None,
    days: int,
    start: str | None,
) -> None:
    """Simulated users with daily, weekly and monthly habits, fading, returning,
    cancelling and never activating (activation type onboarding_completed)."""
    from agents.common.logs import configure_logging

    settings = _settings(broker)
    configure_logging(settings.log_level, settings.log_format)
    try:
        day_ms = settings.day_ms if day_length is None else parse_duration_ms(day_length)
        if day_ms <= 0:
            raise click.BadParameter("must be positive", param_hint="--day-length")
        if history is not None:
            start_ms = wall_ms() - days * day_ms if start is None else parse_instant_ms(start)
            lines = write_history(history, users, days, seed, day_ms, start_ms)
            click.echo(json.dumps({"history": str(history), "lines": lines}), err=True)
            return
        stats = asyncio.run(
            _produce(
                settings,
                topic or settings.topic_events,
                users=users,
                day_ms=day_ms,
                seed=seed,
                duration_s=duration,
                poison_every=poison_every,
                speed=speed,
            )
        )
    except EngagementError as exc:
        raise click.ClickException(str(exc)) from exc
    except KafkaError as exc:
        raise click.ClickException(f"Kafka refused or failed: {exc!r}") from exc
    click.echo(
        json.dumps(
            {
                "users": stats.users,
                "events_sent": stats.events_sent,
                "poison_sent": stats.poison_sent,
            }
        ),
        err=True,
    )


def _settings(broker: str | None) -> Settings:
    try:
        settings = load_settings()
    except EngagementError as exc:
        raise click.ClickException(str(exc)) from exc
    return settings if broker is None else settings.model_copy(update={"broker": broker})


async def _produce(settings: Settings, topic: str, **options: Any) -> SimStats:
    """Run until done; Ctrl-C or SIGTERM stops cleanly and still reports."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    extra = client_options(settings)
    bootstrap = extra.pop("bootstrap_servers")
    try:
        return await run_simulator(bootstrap, topic, stop=stop, client_options=extra, **options)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
