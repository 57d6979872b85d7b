"""The README's settings table and commands match the code."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from agents.cli.main import main
from streams.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_settings_table_lists_exactly_the_settings_the_code_reads() -> None:
    text = README.read_text()
    documented = set(re.findall(r"^\| `(ENGAGEMENT_[A-Z0-9_]+)` \|", text, re.M))
    read = {str(field.validation_alias) for field in Settings.model_fields.values()}
    assert documented == read, {
        "undocumented": sorted(read - documented),
        "documented but not read": sorted(documented - read),
    }


def test_readme_opens_with_the_two_commands() -> None:
    lines = README.read_text().splitlines()
    block = lines[lines.index("```sh") + 1 : lines.index("```", lines.index("```sh") + 1)]
    assert [line.split()[0:2] for line in block] == [["make", "demo"], ["make", "test"]]


def test_every_documented_command_exists() -> None:
    documented = set(re.findall(r"`engagement ([a-z-]+)", README.read_text()))
    runner = CliRunner()
    for command in sorted(documented):
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0, (command, result.output)
