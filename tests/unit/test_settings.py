"""Settings from ENGAGEMENT_* variables: durations, validation, secrets."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from streams.settings import Settings, is_loopback, load_settings
from tables.durations import format_duration_ms, parse_duration_ms
from tables.errors import BadDurationError, ConfigurationError

DAY_MS = 86_400_000
CLOCK_KEY_ONE = "clock-secret-one-5c1e0f3a9b2d4e6f"
CLOCK_KEY_TWO = "clock-secret-two-8a7d6c5b4e3f2a1b"
SECRETS = {
    "ENGAGEMENT_HOLDOUT_SALT": "holdout-salt-3f9a",
    "ENGAGEMENT_ERASURE_SALT": "erasure-salt-77c1",
    "ENGAGEMENT_CLOCK_KEYS": f"k1:{CLOCK_KEY_ONE},k2:{CLOCK_KEY_TWO}",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ENGAGEMENT_* (nor a bare field name) leaks in from the developer's shell."""
    fields = {name.lower() for name in Settings.model_fields}
    for name in list(os.environ):
        if name.startswith("ENGAGEMENT_") or name.lower() in fields:
            monkeypatch.delenv(name)


def with_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def test_defaults_follow_the_contracts() -> None:
    settings = load_settings()
    assert settings.tier_thresholds_ms == (7 * DAY_MS, 14 * DAY_MS, 30 * DAY_MS)
    assert settings.lateness_ms == 10 * 60_000
    assert settings.tick_interval_ms == 5_000
    assert settings.stall_guard_ms == 15 * 60_000
    assert settings.max_future_ms == 3_600_000
    assert settings.day_ms == DAY_MS
    assert settings.dedup_ids == 4
    assert settings.max_event_bytes == 65_536
    assert settings.min_ts_ms == 10**11  # 1973-03-03T09:46:40Z
    assert (settings.max_user_id_bytes, settings.max_event_id_bytes) == (256, 128)
    assert settings.max_label_bytes == 64
    assert settings.holdout_share == 0.1
    assert settings.partitions == 8
    assert settings.topic_events == "engagement.events"


@pytest.mark.parametrize(
    ("variable", "text", "field", "ms"),
    [
        ("ENGAGEMENT_AT_RISK", "5d", "at_risk_ms", 5 * DAY_MS),
        ("ENGAGEMENT_LATENESS", "15m", "lateness_ms", 15 * 60_000),
        ("ENGAGEMENT_TICK_INTERVAL", "500ms", "tick_interval_ms", 500),
        ("ENGAGEMENT_STALL_GUARD", "90s", "stall_guard_ms", 90_000),
        ("ENGAGEMENT_STALL_GUARD", "0", "stall_guard_ms", 0),
        ("ENGAGEMENT_MAX_FUTURE", "36h", "max_future_ms", 36 * 3_600_000),
        ("ENGAGEMENT_CHURNED", "6w", "churned_ms", 42 * DAY_MS),
        ("ENGAGEMENT_STATUS_FLUSH", "10s", "status_flush_ms", 10_000),
        ("ENGAGEMENT_DAY_MS", "1000", "day_ms", 1_000),
    ],
)
def test_durations_are_parsed_to_milliseconds(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, field: str, ms: int
) -> None:
    monkeypatch.setenv(variable, text)
    assert getattr(load_settings(), field) == ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1990-01-01T00:00:00Z", 631_152_000_000),
        ("1990-01-01T01:00:00+01:00", 631_152_000_000),
        ("631152000000", 631_152_000_000),
        ("0", 0),
    ],
)
def test_min_ts_is_an_instant_that_reaches_the_event_rules(
    monkeypatch: pytest.MonkeyPatch, text: str, ms: int
) -> None:
    monkeypatch.setenv("ENGAGEMENT_MIN_TS", text)
    monkeypatch.setenv("ENGAGEMENT_MAX_USER_ID_BYTES", "12")
    rules = load_settings().event_rules()
    assert (rules.min_ts_ms, rules.max_user_id_bytes) == (ms, 12)


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("7d", 7 * DAY_MS),
        ("15m", 900_000),
        ("500ms", 500),
        ("2w", 14 * DAY_MS),
        ("1.5s", 1_500),
        ("0", 0),
        (42, 42),
        (" 10s ", 10_000),
    ],
)
def test_parse_duration(text: str | int, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "7x", "-5", "d", "7 days", "1e3", True, -1, "7", "1.5"])
def test_parse_duration_refuses_nonsense(text: str | int) -> None:
    with pytest.raises(BadDurationError):
        parse_duration_ms(text)


@pytest.mark.parametrize("ms", [1, 500, 1_000, 90_000, 36 * 3_600_000, 7 * DAY_MS, 1_234_567])
def test_format_duration_round_trips(ms: int) -> None:
    assert parse_duration_ms(format_duration_ms(ms)) == ms


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ENGAGEMENT_AT_RISK", "7x"),
        ("ENGAGEMENT_LATENESS", "-5m"),
        ("ENGAGEMENT_STALL_GUARD", "soon"),
        ("ENGAGEMENT_DAY_MS", "0"),
        ("ENGAGEMENT_TICK_INTERVAL", "0ms"),
        ("ENGAGEMENT_PARTITIONS", "zero"),
        ("ENGAGEMENT_PARTITIONS", "0"),
        ("ENGAGEMENT_HOLDOUT_SHARE", "1.5"),
        ("ENGAGEMENT_DEDUP_IDS", "5"),
        ("ENGAGEMENT_MAX_EVENT_BYTES", "10"),
        ("ENGAGEMENT_MIN_TS", "last tuesday"),
        ("ENGAGEMENT_MIN_TS", "1995-06-01T00:00:00"),  # no offset
        ("ENGAGEMENT_MAX_USER_ID_BYTES", "0"),
        ("ENGAGEMENT_MAX_EVENT_ID_BYTES", "-1"),
        ("ENGAGEMENT_MAX_LABEL_BYTES", "256"),  # a user's state keeps one length byte
        ("ENGAGEMENT_WEB_PORT", "70000"),
    ],
)
def test_invalid_value_raises_configuration_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert variable in str(raised.value)


@pytest.mark.parametrize(
    "env",
    [
        {"ENGAGEMENT_AT_RISK": "14d"},  # equal to dormant
        {"ENGAGEMENT_DORMANT": "40d"},  # above churned
        {"ENGAGEMENT_AT_RISK": "3d", "ENGAGEMENT_DORMANT": "2d", "ENGAGEMENT_CHURNED": "9d"},
    ],
)
def test_thresholds_must_grow(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert "ENGAGEMENT_AT_RISK" in str(raised.value)


def test_threshold_min_must_not_exceed_max(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGAGEMENT_THRESHOLD_MIN", "91d")
    with pytest.raises(ConfigurationError, match="ENGAGEMENT_THRESHOLD_MIN"):
        load_settings()


def test_event_types_are_a_comma_separated_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGAGEMENT_EVENT_TYPES", "visit, purchase,,login ")
    assert load_settings().event_types == ("visit", "purchase", "login")


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGAGEMENT_LATENESS", "10m")
    assert load_settings(lateness_ms="500ms").lateness_ms == 500


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.partitions = 3
    assert settings.model_copy(update={"partitions": 3}).partitions == 3


def test_require_secrets_refuses_missing_salts_and_keys() -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings().require_secrets()
    for name in SECRETS:
        assert name in str(raised.value)


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_require_secrets_refuses_each_missing_secret(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    with_secrets(monkeypatch)
    monkeypatch.setenv(missing, "")
    with pytest.raises(ConfigurationError, match=missing):
        load_settings().require_secrets()


def test_require_secrets_accepts_a_complete_set(monkeypatch: pytest.MonkeyPatch) -> None:
    with_secrets(monkeypatch)
    settings = load_settings()
    settings.require_secrets()
    assert settings.signing_kid == "k1"  # the first key listed
    assert settings.clock_key_map() == {"k1": CLOCK_KEY_ONE.encode(), "k2": CLOCK_KEY_TWO.encode()}


def test_signing_kid_must_have_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with_secrets(monkeypatch)
    monkeypatch.setenv("ENGAGEMENT_CLOCK_SIGNING_KID", "k3")
    with pytest.raises(ConfigurationError, match="ENGAGEMENT_CLOCK_SIGNING_KID"):
        load_settings().require_secrets()
    monkeypatch.setenv("ENGAGEMENT_CLOCK_SIGNING_KID", "k2")
    assert load_settings().signing_kid == "k2"


def test_malformed_clock_keys_are_refused_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with_secrets(monkeypatch)
    monkeypatch.setenv("ENGAGEMENT_CLOCK_KEYS", f"k1:{CLOCK_KEY_ONE},{CLOCK_KEY_TWO}")
    with pytest.raises(ConfigurationError) as raised:
        load_settings().require_secrets()
    assert "ENGAGEMENT_CLOCK_KEYS" in str(raised.value)
    assert "clock-secret" not in str(raised.value)


def test_secrets_do_not_appear_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    with_secrets(monkeypatch)
    monkeypatch.setenv("ENGAGEMENT_API_TOKEN", "api-token-9b2e")
    monkeypatch.setenv("ENGAGEMENT_KAFKA_SASL_PASSWORD", "sasl-password-0d4c")
    monkeypatch.setenv("ENGAGEMENT_REDIS_URL", "redis://:redis-password-71fa@redis:6379/0")
    settings = load_settings()
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    secrets = [
        *SECRETS.values(),
        CLOCK_KEY_ONE,
        "api-token-9b2e",
        "sasl-password-0d4c",
        "redis-password-71fa",
    ]
    for secret in secrets:
        assert secret not in shown
    assert settings.redis_url.get_secret_value() == "redis://:redis-password-71fa@redis:6379/0"


@pytest.mark.parametrize(
    "keys",
    [
        "k1:" + "s" * 31,  # the signing key one byte short
        f"k1:{CLOCK_KEY_ONE},k0:" + "s" * 16,  # an old key kept for verification
        "k1:" + "é" * 15,  # 30 bytes in 15 characters: bytes count
    ],
    ids=["signing-key", "old-key", "utf8-bytes"],
)
def test_clock_keys_shorter_than_32_bytes_are_refused_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch, keys: str
) -> None:
    with_secrets(monkeypatch)
    monkeypatch.setenv("ENGAGEMENT_CLOCK_KEYS", keys)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    message = str(raised.value)
    assert "ENGAGEMENT_CLOCK_KEYS" in message and "32 bytes" in message
    assert "openssl rand" in message  # says how to make a good one
    assert "sss" not in message and "ééé" not in message


def test_a_clock_key_of_exactly_32_bytes_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    with_secrets(monkeypatch)
    monkeypatch.setenv("ENGAGEMENT_CLOCK_KEYS", "k1:" + "s" * 32)
    assert load_settings().clock_key_map() == {"k1": b"s" * 32}


def test_generated_secrets_satisfy_require_secrets() -> None:
    settings = load_settings().with_generated_secrets()
    settings.require_secrets()
    assert settings.signing_kid == "k1"
    # model_copy does not validate again: the generated key must be long enough itself
    reloaded = load_settings(clock_keys=settings.clock_keys)
    assert all(len(key) >= 32 for key in reloaded.clock_key_map().values())


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"],
)
def test_a_loopback_worker_may_serve_without_a_token(host: str) -> None:
    assert is_loopback(host)
    load_settings(web_host=host).require_guarded_api()


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "", "::", "10.0.0.5", "worker-1", "localhost.example.com", "::ffff:10.0.0.1"],
)
def test_a_reachable_worker_without_a_token_is_refused(host: str) -> None:
    assert not is_loopback(host)
    for token in (None, ""):
        settings = load_settings(web_host=host, api_token=token)
        with pytest.raises(ConfigurationError) as raised:
            settings.require_guarded_api()
        message = str(raised.value)
        assert "ENGAGEMENT_API_TOKEN" in message and f"ENGAGEMENT_WEB_HOST={host!r}" in message
    load_settings(web_host=host, api_token="api-token-5d3a").require_guarded_api()


def test_only_engagement_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("PARTITIONS", "3")
    monkeypatch.setenv("BROKER", "kafka://elsewhere:9092")
    settings = load_settings()
    assert settings.log_level == "INFO"
    assert settings.partitions == 8
    assert settings.broker == "kafka://127.0.0.1:9092"


@pytest.mark.parametrize(
    ("ingest", "store", "path"),
    [
        (None, "memory://", "batch"),  # the default, auto: batch on both stores
        (None, "rocksdb://", "batch"),
        ("stream", "memory://", "stream"),
        ("batch", "memory://", "batch"),
        ("batch", "rocksdb://", "batch"),
        ("stream", "rocksdb://", "stream"),  # refused by the worker with a clear error
    ],
)
def test_the_ingest_path_is_batch_unless_chosen(
    monkeypatch: pytest.MonkeyPatch, ingest: str | None, store: str, path: str
) -> None:
    monkeypatch.setenv("ENGAGEMENT_STORE", store)
    if ingest is not None:
        monkeypatch.setenv("ENGAGEMENT_INGEST", ingest)
    assert load_settings().ingest_path == path


def test_an_unknown_ingest_path_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGAGEMENT_INGEST", "fast")
    with pytest.raises(ConfigurationError, match=r"(?i)ingest"):
        load_settings()
