"""What every ``engagement`` command shares: the settings, read once per command."""

from __future__ import annotations

import click

from streams.settings import Settings, load_settings
from tables.errors import EngagementError


def cli_settings() -> Settings:
    """The settings from the environment; a click error (exit code 1) if they are wrong."""
    try:
        return load_settings()
    except EngagementError as exc:
        raise click.ClickException(str(exc)) from exc
