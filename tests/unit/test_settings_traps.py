"""Settings without traps: durations need a unit, unknown names stop the start with a
suggestion, enums are checked, secrets may come from files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from agents.cli.main import main
from streams.config_record import BadConfigRecord, parse_config_record
from streams.environment import secret_variables, variable_names
from streams.settings import DurationMs, IntegerMs, Settings, load_settings
from tables.errors import ConfigurationError

DAY_MS = 86_400_000
CLOCK_KEY = "k1:" + "c" * 40


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ENGAGEMENT_"):
            monkeypatch.delenv(name)


def refusal(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    return str(raised.value)


def duration_variables() -> list[str]:
    return sorted(
        str(field.validation_alias)
        for field in Settings.model_fields.values()
        if DurationMs.__metadata__[0] in field.metadata  # type: ignore[attr-defined]
    )


def test_every_duration_is_either_a_unit_duration_or_named_ms() -> None:
    """A variable named *_MS takes integer ms; every other duration needs a unit."""
    durations = duration_variables()
    integer_ms = sorted(
        str(field.validation_alias)
        for field in Settings.model_fields.values()
        if IntegerMs.__metadata__[0] in field.metadata  # type: ignore[attr-defined]
    )
    assert "ENGAGEMENT_AT_RISK" in durations and integer_ms == ["ENGAGEMENT_DAY_MS"]
    assert not any(name.endswith("_MS") for name in durations)
    ms_named = {name for name in variable_names(Settings) if name.endswith("_MS")}
    assert ms_named == set(integer_ms)


@pytest.mark.parametrize("variable", duration_variables())
def test_a_duration_without_a_unit_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    message = refusal(monkeypatch, **{variable: "7"})
    assert variable in message and "no unit" in message and "7d" in message


def test_the_at_risk_trap_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """ENGAGEMENT_AT_RISK=7 would have been 7 ms: everyone at risk at once."""
    message = refusal(monkeypatch, ENGAGEMENT_AT_RISK="7")
    assert "ENGAGEMENT_AT_RISK" in message and "no unit" in message
    monkeypatch.setenv("ENGAGEMENT_AT_RISK", "7d")
    assert load_settings().at_risk_ms == 7 * DAY_MS


def test_zero_needs_no_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGAGEMENT_STALL_GUARD", "0")
    assert load_settings().stall_guard_ms == 0


@pytest.mark.parametrize("value", ["1.5", "-5", "x", "0"])
def test_a_variable_named_ms_refuses_what_is_not_milliseconds(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    message = refusal(monkeypatch, ENGAGEMENT_DAY_MS=value)
    assert "ENGAGEMENT_DAY_MS" in message


@pytest.mark.parametrize(("value", "ms"), [("60000", 60_000), ("1s", 1_000), ("1d", DAY_MS)])
def test_a_bare_integer_in_a_variable_named_ms_is_milliseconds(
    monkeypatch: pytest.MonkeyPatch, value: str, ms: int
) -> None:
    monkeypatch.setenv("ENGAGEMENT_DAY_MS", value)
    assert load_settings().day_ms == ms


def test_code_may_still_pass_integer_milliseconds() -> None:
    assert load_settings(at_risk_ms=5_000, dormant_ms=6_000, churned_ms=7_000).at_risk_ms == 5_000


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("ENGAGEMENT_PARTITONS", "ENGAGEMENT_PARTITIONS"),
        ("ENGAGEMENT_ATRISK", "ENGAGEMENT_AT_RISK"),
        ("ENGAGEMENT_REDIS_URL_FIEL", "ENGAGEMENT_REDIS_URL_FILE"),
        ("ENGAGEMENT_LOGLEVEL", "ENGAGEMENT_LOG_LEVEL"),
    ],
)
def test_an_unknown_variable_stops_the_start_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch, typo: str, meant: str
) -> None:
    message = refusal(monkeypatch, **{typo: "3"})
    assert f"{typo} (did you mean {meant}" in message
    assert "docs/CONTRACTS.md" in message


def test_an_unknown_variable_far_from_any_setting_is_named_without_a_guess(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = refusal(monkeypatch, ENGAGEMENT_COLOUR_SCHEME="dark")
    assert "unknown setting ENGAGEMENT_COLOUR_SCHEME:" in message
    assert "did you mean" not in message


def test_unknown_variable_names_in_overrides_are_refused_too() -> None:
    with pytest.raises(ConfigurationError, match="did you mean ENGAGEMENT_PARTITIONS"):
        load_settings(ENGAGEMENT_PARTITONS="4")
    with pytest.raises(ConfigurationError, match="partitons"):
        load_settings(partitons=4)


def test_every_setting_is_a_known_name() -> None:
    """The known names come from the settings object: each field's alias."""
    names = variable_names(Settings)
    assert len(names) == len(Settings.model_fields)
    assert {"ENGAGEMENT_INPUT_FORMAT", "ENGAGEMENT_LOG_FORMAT"} <= names


@pytest.mark.parametrize(
    ("variable", "good", "bad"),
    [
        ("ENGAGEMENT_LOG_LEVEL", "debug", "VERBOSE"),
        ("ENGAGEMENT_LOG_FORMAT", "json", "xml"),
        ("ENGAGEMENT_INPUT_FORMAT", "segment", "rudder"),
        ("ENGAGEMENT_KAFKA_SECURITY_PROTOCOL", "sasl_ssl", "TLS"),
        ("ENGAGEMENT_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", "KERBEROS"),
        ("ENGAGEMENT_STORE", "rocksdb://", "redis://"),
        ("ENGAGEMENT_INGEST", "batch", "fast"),
    ],
)
def test_enums_are_checked(
    monkeypatch: pytest.MonkeyPatch, variable: str, good: str, bad: str
) -> None:
    monkeypatch.setenv(variable, good)
    load_settings()
    message = refusal(monkeypatch, **{variable: bad})
    assert variable in message


def test_log_level_is_kept_in_capitals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGAGEMENT_LOG_LEVEL", " warning ")
    assert load_settings().log_level == "WARNING"


def test_secret_variables_are_the_secret_fields() -> None:
    assert secret_variables(Settings) == {
        "ENGAGEMENT_HOLDOUT_SALT",
        "ENGAGEMENT_ERASURE_SALT",
        "ENGAGEMENT_CLOCK_KEYS",
        "ENGAGEMENT_API_TOKEN",
        "ENGAGEMENT_REDIS_URL",
        "ENGAGEMENT_KAFKA_SASL_PASSWORD",
    }


@pytest.mark.parametrize("variable", sorted(secret_variables(Settings)))
def test_each_secret_may_come_from_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str
) -> None:
    secret = "k1:" + "f" * 64 if variable == "ENGAGEMENT_CLOCK_KEYS" else "from-a-file-3e9d"
    path = tmp_path / "secret"
    path.write_text(secret + "\n")  # as `openssl rand -hex 32 > file` writes it
    monkeypatch.setenv(variable + "_FILE", str(path))
    settings = load_settings()
    field = next(
        name for name, f in Settings.model_fields.items() if f.validation_alias == variable
    )
    value = getattr(settings, field)
    assert value.get_secret_value() == secret
    assert secret not in repr(settings)


def test_a_secret_given_twice_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("token-from-file")
    message = refusal(
        monkeypatch,
        ENGAGEMENT_API_TOKEN="token-inline",
        ENGAGEMENT_API_TOKEN_FILE=str(path),
    )
    assert "ENGAGEMENT_API_TOKEN" in message and "ENGAGEMENT_API_TOKEN_FILE" in message
    assert "token-inline" not in message and "token-from-file" not in message


def test_a_missing_secret_file_names_the_variable_and_the_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "clock-keys"
    message = refusal(monkeypatch, ENGAGEMENT_CLOCK_KEYS_FILE=str(missing))
    assert "ENGAGEMENT_CLOCK_KEYS_FILE" in message and str(missing) in message


def test_a_secret_file_that_is_not_text_or_too_large_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe secret")
    assert "not UTF-8" in refusal(monkeypatch, ENGAGEMENT_HOLDOUT_SALT_FILE=str(binary))
    large = tmp_path / "large"
    large.write_bytes(b"s" * 70_000)
    assert "larger than" in refusal(monkeypatch, ENGAGEMENT_HOLDOUT_SALT_FILE=str(large))


def test_a_short_clock_key_from_a_file_is_refused_like_an_inline_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "keys"
    path.write_text("k1:tiny-secret\n")
    message = refusal(monkeypatch, ENGAGEMENT_CLOCK_KEYS_FILE=str(path))
    assert "ENGAGEMENT_CLOCK_KEYS" in message and "32 bytes" in message
    assert "tiny-secret" not in message


def test_only_secrets_may_come_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "partitions"
    path.write_text("4")
    message = refusal(monkeypatch, ENGAGEMENT_PARTITIONS_FILE=str(path))
    assert "unknown setting ENGAGEMENT_PARTITIONS_FILE" in message


def test_a_complete_worker_configuration_from_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for variable, value in {
        "ENGAGEMENT_HOLDOUT_SALT": "holdout-salt-a1b2",
        "ENGAGEMENT_ERASURE_SALT": "erasure-salt-c3d4",
        "ENGAGEMENT_CLOCK_KEYS": CLOCK_KEY,
        "ENGAGEMENT_API_TOKEN": "api-token-e5f6",
    }.items():
        path = tmp_path / variable.lower()
        path.write_text(value + "\n")
        monkeypatch.setenv(variable + "_FILE", str(path))
    monkeypatch.setenv("ENGAGEMENT_WEB_HOST", "0.0.0.0")
    settings = load_settings()
    settings.require_secrets()
    settings.require_guarded_api()
    assert settings.signing_kid == "k1"


def test_a_threshold_config_value_without_a_unit_is_refused() -> None:
    """The same rule in the config topic: a text duration carries its unit; a JSON
    integer is milliseconds."""
    with pytest.raises(BadConfigRecord, match="no unit"):
        parse_config_record(b"acme@1", b'{"at_risk":"7","dormant":"14d","churned":"30d"}')
    update = parse_config_record(b"acme@1", b'{"at_risk":7,"dormant":"14d","churned":"30d"}')
    assert update is not None and update.at_risk_ms == 7


def test_cli_durations_need_a_unit_too(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("")
    args = ["replay", str(events), "--as-of", "0", "--horizon", "30"]
    result = CliRunner().invoke(main, [*args, "--scores", str(tmp_path / "s.csv")])
    assert result.exit_code == 2 and "no unit" in result.output
