"""The ``engagement`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path

import click
import msgspec

from agents.cli.backfill import backfill
from agents.common.logs import configure_logging
from streams.settings import Settings, load_settings
from tables.durations import parse_duration_ms, parse_instant_ms
from tables.errors import EngagementError

log = logging.getLogger("engagement")


def _settings() -> Settings:
    try:
        return load_settings()
    except EngagementError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
@click.version_option(package_name="engagement-streams")
def main() -> None:
    """Live per-user engagement signals from Kafka events."""


@main.command()
def worker() -> None:
    """Run a worker (settings from ENGAGEMENT_* variables)."""
    from agents.worker.run import run_worker

    settings = _settings()
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
@click.argument("events", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--as-of", "as_of", required=True, help="RFC 3339 or epoch ms.")
@click.option("--horizon", required=True, help="Duration, e.g. 30d.")
@click.option("--scores", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--signals", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option(
    "--lifecycle",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the lifecycle transitions (JSON Lines).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Tenant/segment threshold versions (JSON Lines of config values with "
    "scope and effective_from).",
)
@click.option(
    "--params",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Risk model file (default: ENGAGEMENT_RISK_PARAMS); a learned one must have --horizon.",
)
def replay(
    events: Path,
    as_of: str,
    horizon: str,
    scores: Path,
    signals: Path | None,
    lifecycle: Path | None,
    config_path: Path | None,
    params: Path | None,
) -> None:
    """Replay a history (JSON Lines, CSV or Parquet) through the model; write scores."""
    from agents.offline.replay import read_config
    from agents.offline.replay import replay as run_replay
    from streams.model_settings import model_config

    try:
        as_of_ms = parse_instant_ms(as_of)
        horizon_ms = parse_duration_ms(horizon)
    except EngagementError as exc:
        raise click.BadParameter(str(exc)) from exc
    try:
        book = None if config_path is None else read_config(config_path)
    except EngagementError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from exc
    settings = _settings()
    update: dict[str, object] = {"horizon_ms": horizon_ms}
    if params is not None:
        update["risk_params"] = str(params)
    try:
        config = model_config(settings.model_copy(update=update))
    except EngagementError as exc:
        raise click.ClickException(str(exc)) from exc
    with contextlib.ExitStack() as files:
        scores_out = files.enter_context(scores.open("w", newline=""))
        signals_out = None if signals is None else files.enter_context(signals.open("wb"))
        lifecycle_out = None if lifecycle is None else files.enter_context(lifecycle.open("wb"))
        try:
            stats = run_replay(
                events,
                as_of_ms,
                config,
                scores_out,
                signals_out,
                lifecycle_out=lifecycle_out,
                book=book,
                rules=settings.event_rules(),
            )
        except EngagementError as exc:  # an unreadable history
            raise click.ClickException(str(exc)) from exc
    click.echo(
        json.dumps(
            {
                "lines": stats.lines,
                "events": stats.events,
                "applied": stats.applied,
                "duplicates": stats.duplicates,
                "passive": stats.passive,
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
    from agents.ops.erase import send_erase

    settings = _settings()
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
    from agents.worker.redis_mirror import REDIS_FAILURES

    settings = _settings()
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
def bench(as_json: bool, quick: bool, broker: str) -> None:
    """Measure the event path in one run (ceiling, worker, naive Faust, replay, ...)."""
    from agents.bench.run import main as run_bench

    configure_logging("ERROR")
    sys.exit(run_bench(broker, quick, as_json))


@main.command()
@click.argument("events", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--cutoff", required=True, help="Fit on events up to this time (RFC 3339 or ms).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("risk-params.json"),
    show_default=True,
    help="Model file for ENGAGEMENT_RISK_PARAMS.",
)
@click.option(
    "--horizon",
    "horizons",
    multiple=True,
    help="A horizon to fit (repeatable; default: ENGAGEMENT_HORIZON).",
)
@click.option(
    "--model",
    type=click.Choice(["learned_logistic", "mbg_nbd"]),
    default="learned_logistic",
    show_default=True,
    help="learned_logistic: backtested per horizon; mbg_nbd: the population parameters only.",
)
def fit(events: Path, cutoff: str, out: Path, horizons: tuple[str, ...], model: str) -> None:
    """Fit the risk model from a history up to the cutoff (docs/MODEL.md)."""
    from agents.offline.fit import fit_history, params_document, write_params
    from agents.offline.learn import learn, write_model
    from streams.model_settings import model_config

    try:
        cutoff_ms = parse_instant_ms(cutoff)
        horizons_ms = [parse_duration_ms(horizon) for horizon in horizons]
    except EngagementError as exc:
        raise click.BadParameter(str(exc)) from exc
    try:
        settings = _settings().model_copy(update={"risk_params": None})
        config = model_config(settings)
        if model == "mbg_nbd":
            result = fit_history(events, cutoff_ms, config, settings.event_rules())
            write_params(out, result)
            click.echo(json.dumps({"params": str(out), **params_document(result)}))
            return
        document = learn(
            events, cutoff_ms, horizons_ms or [settings.horizon_ms], config, settings.event_rules()
        )
    except EngagementError as exc:
        raise click.ClickException(str(exc)) from exc
    write_model(out, document)
    summary = {
        "params": str(out),
        "version": document["version"],
        "users": document["users"],
        "horizons": [
            {
                "horizon_ms": h["horizon_ms"],
                "l2": h["l2"],
                "held_out": {k: v for k, v in h["held_out"].items() if k != "reliability"},
            }
            for h in document["horizons"]
        ],
    }
    click.echo(json.dumps(summary))


@main.command()
@click.argument("events", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--cutoff",
    "cutoffs",
    required=True,
    multiple=True,
    help="A split time (RFC 3339 or epoch ms); repeat it for a backtest.",
)
@click.option("--horizon", required=True, help="Inactive means no event within this, e.g. 30d.")
@click.option(
    "--params",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Risk model file (default: learned on the events before each cutoff).",
)
@click.option("--bootstrap", default=500, show_default=True, help="Resamples per interval.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("reliability.png"),
    show_default=True,
)
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def evaluate(
    events: Path,
    cutoffs: tuple[str, ...],
    horizon: str,
    params: Path | None,
    bootstrap: int,
    plot: Path,
    json_out: Path | None,
) -> None:
    """Backtest the risk score against independent baselines (docs/MODEL.md)."""
    from agents.offline.backtest import evaluate as run_evaluate
    from agents.offline.backtest import plot_reliability, summary_lines
    from streams.model_settings import model_config

    try:
        cutoffs_ms = [parse_instant_ms(cutoff) for cutoff in cutoffs]
        horizon_ms = parse_duration_ms(horizon)
    except EngagementError as exc:
        raise click.BadParameter(str(exc)) from exc
    settings = _settings()
    try:
        config = model_config(settings.model_copy(update={"risk_params": None}))
        report, scored = run_evaluate(
            events, cutoffs_ms, horizon_ms, config, params, settings.event_rules(), bootstrap
        )
    except EngagementError as exc:
        raise click.ClickException(str(exc)) from exc
    plot_reliability(scored, plot, f"{events.name}, horizon {horizon}")
    document = json.dumps(report, indent=2, sort_keys=True)
    if json_out is not None:
        json_out.write_text(document + "\n")
    for line in summary_lines(report):
        click.echo(line, err=True)
    click.echo(f"reliability plot: {plot}", err=True)
    click.echo(document)


@main.command()
@click.argument("signals", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--lifecycle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--history",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The event history (JSON Lines): lasting returns and cohort retention.",
)
@click.option("--window", default="30d", show_default=True, help="Return counted within this.")
@click.option("--as-of", "as_of", default=None, help="End of observation (default: newest).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("report"),
    show_default=True,
)
def report(
    signals: Path,
    lifecycle: Path | None,
    history: Path | None,
    window: str,
    as_of: str | None,
    out: Path,
) -> None:
    """Win-back per group and first tier, uplift with intervals, cohorts, charts (PNG + HTML)."""
    from agents.offline.history_facts import history_facts
    from agents.offline.report import write_report
    from streams.model_settings import model_config

    try:
        window_ms = parse_duration_ms(window)
        as_of_ms = None if as_of is None else parse_instant_ms(as_of)
    except EngagementError as exc:
        raise click.BadParameter(str(exc)) from exc
    settings = _settings()
    deadline_ms = settings.activation_days * settings.day_ms if settings.activation_types else None
    facts = None
    if history is not None:
        facts = history_facts(
            history,
            model_config(settings),
            settings.cohort_period_ms,
            as_of_ms,
            settings.event_rules(),
        )
    result = write_report(
        signals,
        out,
        window_ms,
        as_of_ms,
        lifecycle,
        settings.day_ms,
        facts,
        settings.winback_lasting_days,
        settings.winback_window_days,
        activation_deadline_ms=deadline_ms,
    )
    click.echo(
        json.dumps(
            {
                "outcome": result["outcome"],
                "groups": result["groups"],
                "uplift": result["uplift"],
                "eligible_episodes": result["eligible_episodes"],
                "activation": result.get("activation", []),
                "files": result["files"],
            }
        )
    )


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
