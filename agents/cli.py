"""The ``engagement`` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import click
import msgspec

from streams.settings import Settings, load_settings
from tables.durations import parse_duration_ms, parse_instant_ms
from tables.errors import EngagementError

log = logging.getLogger("engagement")


def _settings() -> Settings:
    try:
        return load_settings()
    except EngagementError as exc:
        raise click.ClickException(str(exc)) from exc


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group()
@click.version_option(package_name="engagement-streams")
def main() -> None:
    """Live per-user engagement signals from Kafka events."""


@main.command()
def worker() -> None:
    """Run a worker (settings from ENGAGEMENT_* variables)."""
    from agents.run import run_worker

    settings = _settings()
    configure_logging(settings.log_level)
    try:
        run_worker(settings)
    except EngagementError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option(
    "--duration", type=float, default=None, help="Seconds to run (default: until Ctrl-C)."
)
@click.option("--broker", type=click.Choice(["embedded", "kafka"]), default="embedded")
@click.option("--users", type=int, default=300, show_default=True)
def demo(duration: float | None, broker: str, users: int) -> None:
    """Start a broker, a worker and simulated users; show signals live."""
    from agents.demo import run_demo

    configure_logging("WARNING")
    try:
        code = run_demo(duration_s=duration, broker=broker, users=users)
    except EngagementError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


@main.command()
@click.argument("events", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--as-of", "as_of", required=True, help="RFC 3339 or epoch ms.")
@click.option("--horizon", required=True, help="Duration, e.g. 30d.")
@click.option("--scores", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--signals", type=click.Path(dir_okay=False, path_type=Path), default=None)
def replay(events: Path, as_of: str, horizon: str, scores: Path, signals: Path | None) -> None:
    """Replay a JSON Lines history through the model; write scores (and signals)."""
    from agents.replay import replay as run_replay
    from agents.runtime import model_config

    try:
        as_of_ms = parse_instant_ms(as_of)
        horizon_ms = parse_duration_ms(horizon)
    except EngagementError as exc:
        raise click.BadParameter(str(exc)) from exc
    settings = _settings()
    config = model_config(settings)
    config = msgspec.structs.replace(config, horizon_ms=horizon_ms)
    with scores.open("w", newline="") as scores_out:
        if signals is None:
            stats = run_replay(events, as_of_ms, config, scores_out)
        else:
            with signals.open("wb") as signals_out:
                stats = run_replay(events, as_of_ms, config, scores_out, signals_out)
    click.echo(
        json.dumps(
            {
                "lines": stats.lines,
                "events": stats.events,
                "applied": stats.applied,
                "duplicates": stats.duplicates,
                "after_as_of": stats.after_as_of,
                "rejected": stats.rejected,
                "users": stats.users,
                "signals": stats.signals,
            }
        ),
        err=True,
    )


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None)
def schemas(out: Path | None) -> None:
    """(Re)generate the JSON Schemas and the AsyncAPI document of the contracts."""
    from streams.schemas import write_schemas

    for path in write_schemas(out):
        click.echo(str(path))


@main.command()
@click.argument("user_id")
def erase(user_id: str) -> None:
    """Write a signed erasure request for USER_ID into the user's partition."""
    from agents.erase import send_erase

    settings = _settings()
    try:
        settings.require_secrets()
        asyncio.run(send_erase(settings, user_id))
    except EngagementError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("erasure request written")


def _register_simulate() -> None:
    try:
        from agents.simulation.cli import simulate
    except ImportError:  # pragma: no cover - the simulator ships with the package
        return
    main.add_command(simulate)


_register_simulate()

if __name__ == "__main__":
    main()
