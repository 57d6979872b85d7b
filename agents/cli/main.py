"""The ``engagement`` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click
import msgspec

from agents.cli.backfill import backfill
from agents.cli.offline import evaluate, fit, replay, report
from agents.cli.options import cli_settings
from agents.common.logs import configure_logging
from tables.errors import EngagementError


@click.group()
@click.version_option(package_name="engagement-streams")
def main() -> None:
    """Live per-user engagement signals from Kafka events."""


@main.command()
def worker() -> None:
    """Run a worker (settings from ENGAGEMENT_* variables)."""
    from agents.worker.run import run_worker

    settings = cli_settings()
    configure_logging(settings.log_level, settings.log_format)
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
@click.option(
    "--record",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write every record of the engine's topics to DIR/{topic}.jsonl.",
)
def demo(duration: float | None, broker: str, users: int, record: Path | None) -> None:
    """Start a broker, a worker and simulated users; show signals live."""
    from agents.stack.demo import run_demo

    configure_logging("WARNING")
    try:
        code = run_demo(duration_s=duration, broker=broker, users=users, record=record)
    except EngagementError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


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
    from agents.ops.erase import send_erase

    settings = cli_settings()
    try:
        settings.require_secrets()
        asyncio.run(send_erase(settings, user_id))
    except EngagementError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("erasure request written")


@main.command("redis-sync")
def redis_sync() -> None:
    """Rebuild the Redis mirror from the tables' changelogs (best with workers stopped)."""
    from aiokafka.errors import KafkaError

    from agents.ops.redis_sync import redis_sync as run_sync
    from agents.worker.redis_client import REDIS_FAILURES

    settings = cli_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        stats = asyncio.run(run_sync(settings, progress=lambda text: click.echo(text, err=True)))
    except EngagementError as exc:
        raise click.ClickException(str(exc)) from exc
    except (*REDIS_FAILURES, KafkaError) as exc:
        # Only the type: the message may carry the Redis URL with its password.
        raise click.ClickException(f"redis-sync failed: {type(exc).__name__}") from exc
    click.echo(json.dumps(msgspec.to_builtins(stats)))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option("--quick", is_flag=True, help="About a minute: 100k events over 10k users.")
@click.option("--broker", type=click.Choice(["embedded", "kafka"]), default="embedded")
@click.option(
    "--risk-params",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A risk file (engagement fit, horizon 30d) the offline replay scores with.",
)
def bench(as_json: bool, quick: bool, broker: str, risk_params: Path | None) -> None:
    """Measure the event path in one run (ceiling, worker, naive Faust, replay, ...)."""
    from agents.bench.run import main as run_bench

    configure_logging("ERROR")
    sys.exit(run_bench(broker, quick, as_json, risk_params))


for command in (replay, fit, evaluate, report):
    main.add_command(command)


def _register_simulate() -> None:
    try:
        from agents.simulation.cli import simulate
    except ImportError:  # pragma: no cover - the simulator ships with the package
        return
    main.add_command(simulate)


main.add_command(backfill)
_register_simulate()

if __name__ == "__main__":
    main()
