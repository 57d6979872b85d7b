"""The one settings object, read from ``ENGAGEMENT_*`` environment variables.

Durations are written with their unit (``500ms``/``10s``/``15m``/``36h``/``7d``/``2w``)
and held as int milliseconds in fields whose names end in ``_ms``; a variable
whose own name ends in ``_MS`` takes a bare integer of milliseconds. Names,
enums and secrets from files: ``streams/environment.py``. Nothing else in the
project reads ``os.environ`` for configuration.
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import Annotated, Any, Final, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from streams.environment import (
    PREFIX,
    STORES,
    LogLevel,
    PrefixedEnvironment,
    SaslMechanism,
    SecurityProtocol,
    lower_case,
    resolve_variables,
)
from streams.validate import (
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_EVENT_ID_BYTES,
    DEFAULT_MAX_FUTURE_MS,
    DEFAULT_MAX_LABEL_BYTES,
    DEFAULT_MAX_USER_ID_BYTES,
    DEFAULT_MIN_TS_MS,
    MAX_LABEL_BYTES_LIMIT,
    EventRules,
)
from tables.durations import parse_duration_ms, parse_instant_ms, parse_integer_ms
from tables.errors import ConfigurationError

DurationMs = Annotated[int, BeforeValidator(parse_duration_ms)]
# a variable named *_MS: the name gives the unit of a bare integer
IntegerMs = Annotated[int, BeforeValidator(parse_integer_ms)]
InstantMs = Annotated[int, BeforeValidator(parse_instant_ms)]


def _env(name: str, field: str) -> str:
    # Only the prefixed variable is read from the environment; code may still
    # pass the field name (populate_by_name).
    del field
    return f"ENGAGEMENT_{name}"


# RFC 2104: HMAC keys shorter than the hash output (32 bytes for SHA-256) are
# "strongly discouraged"; they make the key the weakest part of the MAC.
MIN_CLOCK_KEY_BYTES: Final = 32
LOOPBACK_NAMES: Final = frozenset({"localhost"})


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable only from this machine: 127.0.0.0/8,
    ``::1`` (also IPv4-mapped) and ``localhost``. Any other name, ``0.0.0.0``,
    ``::`` or an empty host (every interface) counts as reachable from others."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class Settings(BaseSettings):
    """Frozen settings; change them only with ``model_copy(update=...)``."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    broker: str = Field("kafka://127.0.0.1:9092", validation_alias=_env("BROKER", "broker"))
    topic_events: str = Field(
        "engagement.events", validation_alias=_env("TOPIC_EVENTS", "topic_events")
    )
    topic_signals: str = Field(
        "engagement.signals", validation_alias=_env("TOPIC_SIGNALS", "topic_signals")
    )
    topic_lifecycle: str = Field(
        "engagement.lifecycle", validation_alias=_env("TOPIC_LIFECYCLE", "topic_lifecycle")
    )
    topic_status: str = Field(
        "engagement.user-status", validation_alias=_env("TOPIC_STATUS", "topic_status")
    )
    topic_dlq: str = Field("engagement.dlq", validation_alias=_env("TOPIC_DLQ", "topic_dlq"))
    topic_config: str = Field(
        "engagement.config", validation_alias=_env("TOPIC_CONFIG", "topic_config")
    )
    partitions: int = Field(8, ge=1, le=4096, validation_alias=_env("PARTITIONS", "partitions"))
    replication_factor: int = Field(
        1, ge=1, validation_alias=_env("REPLICATION_FACTOR", "replication_factor")
    )
    app_id: str = Field("engagement", validation_alias=_env("APP_ID", "app_id"))

    at_risk_ms: DurationMs = Field(7 * 86_400_000, validation_alias=_env("AT_RISK", "at_risk_ms"))
    dormant_ms: DurationMs = Field(14 * 86_400_000, validation_alias=_env("DORMANT", "dormant_ms"))
    churned_ms: DurationMs = Field(30 * 86_400_000, validation_alias=_env("CHURNED", "churned_ms"))
    threshold_min_ms: DurationMs = Field(
        86_400_000, validation_alias=_env("THRESHOLD_MIN", "threshold_min_ms")
    )
    threshold_max_ms: DurationMs = Field(
        90 * 86_400_000, validation_alias=_env("THRESHOLD_MAX", "threshold_max_ms")
    )
    adaptive_min_days: int = Field(
        5, ge=0, le=10_000, validation_alias=_env("ADAPTIVE_MIN_DAYS", "adaptive_min_days")
    )
    risk_params: str | None = Field(None, validation_alias=_env("RISK_PARAMS", "risk_params"))
    lateness_ms: DurationMs = Field(600_000, validation_alias=_env("LATENESS", "lateness_ms"))
    tick_interval_ms: DurationMs = Field(
        5_000, validation_alias=_env("TICK_INTERVAL", "tick_interval_ms")
    )
    stall_guard_ms: DurationMs = Field(
        900_000, validation_alias=_env("STALL_GUARD", "stall_guard_ms")
    )
    max_future_ms: DurationMs = Field(
        DEFAULT_MAX_FUTURE_MS, validation_alias=_env("MAX_FUTURE", "max_future_ms")
    )
    # events before it go to the DLQ as ts_out_of_range (RFC 3339 or epoch ms)
    min_ts_ms: InstantMs = Field(DEFAULT_MIN_TS_MS, validation_alias=_env("MIN_TS", "min_ts_ms"))
    horizon_ms: DurationMs = Field(30 * 86_400_000, validation_alias=_env("HORIZON", "horizon_ms"))
    day_ms: IntegerMs = Field(86_400_000, validation_alias=_env("DAY_MS", "day_ms"))
    new_days: int = Field(7, ge=0, validation_alias=_env("NEW_DAYS", "new_days"))
    resurrected_days: int = Field(
        14, ge=0, validation_alias=_env("RESURRECTED_DAYS", "resurrected_days")
    )
    # tables.decline: declining when the recent active days fall below this
    # share of the user's long-run baseline (0 turns the signal off)
    decline_sensitivity: float = Field(
        0.65, ge=0.0, lt=1.0, validation_alias=_env("DECLINE_SENSITIVITY", "decline_sensitivity")
    )
    # tables.model.advance_user: a tier whose risk is below its minimum is no signal
    min_risk_at_risk: float = Field(
        0.0, ge=0.0, le=1.0, validation_alias=_env("MIN_RISK_AT_RISK", "min_risk_at_risk")
    )
    min_risk_dormant: float = Field(
        0.0, ge=0.0, le=1.0, validation_alias=_env("MIN_RISK_DORMANT", "min_risk_dormant")
    )
    min_risk_churned: float = Field(
        0.0, ge=0.0, le=1.0, validation_alias=_env("MIN_RISK_CHURNED", "min_risk_churned")
    )
    # tables.activation: event types that activate a user (none: activation off)
    activation_types: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_env("ACTIVATION_TYPES", "activation_types")
    )
    activation_days: int = Field(
        7, ge=1, le=10_000, validation_alias=_env("ACTIVATION_DAYS", "activation_days")
    )
    holdout_share: float = Field(
        0.1, ge=0.0, le=1.0, validation_alias=_env("HOLDOUT_SHARE", "holdout_share")
    )
    holdout_salt: SecretStr | None = Field(
        None, validation_alias=_env("HOLDOUT_SALT", "holdout_salt")
    )
    clock_keys: SecretStr | None = Field(None, validation_alias=_env("CLOCK_KEYS", "clock_keys"))
    clock_signing_kid: str | None = Field(
        None, validation_alias=_env("CLOCK_SIGNING_KID", "clock_signing_kid")
    )
    erasure_salt: SecretStr | None = Field(
        None, validation_alias=_env("ERASURE_SALT", "erasure_salt")
    )
    erasure_suppress_ms: DurationMs = Field(
        30 * 86_400_000, validation_alias=_env("ERASURE_SUPPRESS", "erasure_suppress_ms")
    )
    max_event_bytes: int = Field(
        DEFAULT_MAX_EVENT_BYTES, ge=256, validation_alias=_env("MAX_EVENT_BYTES", "max_event_bytes")
    )
    max_user_id_bytes: int = Field(
        DEFAULT_MAX_USER_ID_BYTES,
        ge=1,
        validation_alias=_env("MAX_USER_ID_BYTES", "max_user_id_bytes"),
    )
    max_event_id_bytes: int = Field(
        DEFAULT_MAX_EVENT_ID_BYTES,
        ge=1,
        validation_alias=_env("MAX_EVENT_ID_BYTES", "max_event_id_bytes"),
    )
    # tenant and segment each; a user's state keeps them with a one-byte length
    max_label_bytes: int = Field(
        DEFAULT_MAX_LABEL_BYTES,
        ge=1,
        le=MAX_LABEL_BYTES_LIMIT,
        validation_alias=_env("MAX_LABEL_BYTES", "max_label_bytes"),
    )
    dedup_ids: int = Field(4, ge=0, le=4, validation_alias=_env("DEDUP_IDS", "dedup_ids"))
    status_flush_ms: DurationMs = Field(
        1_000, validation_alias=_env("STATUS_FLUSH", "status_flush_ms")
    )
    event_types: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_env("EVENT_TYPES", "event_types")
    )
    # What counts as activity (tables/activity.py); None: the contract's default
    # (every type not in another class; no passive types; the negative and
    # churn-intent types of docs/CONTRACTS.md), an empty string: none.
    active_types: Annotated[tuple[str, ...] | None, NoDecode] = Field(
        None, validation_alias=_env("ACTIVE_TYPES", "active_types")
    )
    passive_types: Annotated[tuple[str, ...] | None, NoDecode] = Field(
        None, validation_alias=_env("PASSIVE_TYPES", "passive_types")
    )
    negative_types: Annotated[tuple[str, ...] | None, NoDecode] = Field(
        None, validation_alias=_env("NEGATIVE_TYPES", "negative_types")
    )
    churn_intent_types: Annotated[tuple[str, ...] | None, NoDecode] = Field(
        None, validation_alias=_env("CHURN_INTENT_TYPES", "churn_intent_types")
    )
    intent_grace_days: int = Field(
        1, ge=0, le=365, validation_alias=_env("INTENT_GRACE_DAYS", "intent_grace_days")
    )
    anonymous_tiers: bool = Field(
        False, validation_alias=_env("ANONYMOUS_TIERS", "anonymous_tiers")
    )
    tier_min_active_days: int = Field(
        0, ge=0, le=10_000, validation_alias=_env("TIER_MIN_ACTIVE_DAYS", "tier_min_active_days")
    )
    # Secret: the URL may carry the Redis password (redis://:password@host:6379/0).
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"), validation_alias=_env("REDIS_URL", "redis_url")
    )
    web_port: int = Field(6066, ge=0, le=65535, validation_alias=_env("WEB_PORT", "web_port"))
    redis_backlog_max: int = Field(
        100_000, ge=1, validation_alias=_env("REDIS_BACKLOG_MAX", "redis_backlog_max")
    )
    # a user's Redis hash is written at most once per window, at once on a stage or tier
    # change (agents/worker/mirror_window.py; docs/OPERATIONS.md: staleness per field)
    redis_window_ms: DurationMs = Field(
        1_000, ge=100, validation_alias=_env("REDIS_WINDOW", "redis_window_ms")
    )
    web_host: str = Field("127.0.0.1", validation_alias=_env("WEB_HOST", "web_host"))
    web_advertised_host: str | None = Field(
        None, validation_alias=_env("WEB_ADVERTISED_HOST", "web_advertised_host")
    )
    api_token: SecretStr | None = Field(None, validation_alias=_env("API_TOKEN", "api_token"))
    store: str = Field("memory://", validation_alias=_env("STORE", "store"))
    # "batch": whole fetches (agents/worker/batch_ingest.py), both stores; "stream": Faust's
    # per-event agent, memory store only; "auto": batch (``ingest_path``)
    # A valid event on another partition than murmur2 of its key picks: false,
    # the DLQ (``wrong_partition``); true, sent on to that partition and applied
    # there (docs/CONTRACTS.md, "Keys and partitions").
    repartition: bool = Field(False, validation_alias=_env("REPARTITION", "repartition"))
    ingest: Literal["auto", "stream", "batch"] = Field(
        "auto", validation_alias=_env("INGEST", "ingest")
    )
    data_dir: str = Field("./run/data", validation_alias=_env("DATA_DIR", "data_dir"))
    session_timeout_ms: DurationMs = Field(
        10_000, validation_alias=_env("SESSION_TIMEOUT", "session_timeout_ms")
    )
    commit_interval_ms: DurationMs = Field(
        1_000, validation_alias=_env("COMMIT_INTERVAL", "commit_interval_ms")
    )
    log_level: LogLevel = Field("INFO", validation_alias=_env("LOG_LEVEL", "log_level"))
    # "json": one JSON object per line (agents/common/logs.py)
    log_format: Annotated[Literal["text", "json"], BeforeValidator(lower_case)] = Field(
        "text", validation_alias=_env("LOG_FORMAT", "log_format")
    )
    # the shape of the input events: the engine's own, or Segment/RudderStack track
    # calls (streams/segment.py); control records keep the engine's shape
    input_format: Annotated[Literal["engagement", "segment"], BeforeValidator(lower_case)] = Field(
        "engagement", validation_alias=_env("INPUT_FORMAT", "input_format")
    )
    # cohorts and win-back (docs/MODEL.md): periods and windows count model days (DAY_MS)
    topic_cohorts: str = Field(
        "engagement.cohorts", validation_alias=_env("TOPIC_COHORTS", "topic_cohorts")
    )
    cohort_period_days: int = Field(
        7, ge=1, le=366, validation_alias=_env("COHORT_PERIOD_DAYS", "cohort_period_days")
    )
    cohort_metric_periods: int = Field(
        8, ge=1, le=52, validation_alias=_env("COHORT_METRIC_PERIODS", "cohort_metric_periods")
    )
    winback_lasting_days: int = Field(
        3, ge=1, validation_alias=_env("WINBACK_LASTING_DAYS", "winback_lasting_days")
    )
    winback_window_days: int = Field(
        14, ge=1, validation_alias=_env("WINBACK_WINDOW_DAYS", "winback_window_days")
    )
    experiment_id: str | None = Field(None, validation_alias=_env("EXPERIMENT_ID", "experiment_id"))
    experiment_reasons: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_env("EXPERIMENT_REASONS", "experiment_reasons")
    )

    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT",
        validation_alias=_env("KAFKA_SECURITY_PROTOCOL", "kafka_security_protocol"),
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        None, validation_alias=_env("KAFKA_SASL_MECHANISM", "kafka_sasl_mechanism")
    )
    kafka_sasl_username: str | None = Field(
        None, validation_alias=_env("KAFKA_SASL_USERNAME", "kafka_sasl_username")
    )
    kafka_sasl_password: SecretStr | None = Field(
        None, validation_alias=_env("KAFKA_SASL_PASSWORD", "kafka_sasl_password")
    )
    kafka_ssl_cafile: str | None = Field(
        None, validation_alias=_env("KAFKA_SSL_CAFILE", "kafka_ssl_cafile")
    )
    kafka_ssl_certfile: str | None = Field(
        None, validation_alias=_env("KAFKA_SSL_CERTFILE", "kafka_ssl_certfile")
    )
    kafka_ssl_keyfile: str | None = Field(
        None, validation_alias=_env("KAFKA_SSL_KEYFILE", "kafka_ssl_keyfile")
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, PrefixedEnvironment(settings_cls))

    @field_validator(
        "event_types",
        "activation_types",
        "experiment_reasons",
        "active_types",
        "passive_types",
        "negative_types",
        "churn_intent_types",
        mode="before",
    )
    @classmethod
    def _split_types(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value not in STORES:
            raise ValueError(f"must be one of {', '.join(STORES)}")
        return value

    @field_validator("day_ms", "tick_interval_ms", "at_risk_ms", "dormant_ms", "churned_ms")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be greater than zero")
        return value

    def model_post_init(self, context: Any, /) -> None:
        if not self.at_risk_ms < self.dormant_ms < self.churned_ms:
            raise ConfigurationError(
                "thresholds must grow: ENGAGEMENT_AT_RISK < ENGAGEMENT_DORMANT < ENGAGEMENT_CHURNED"
            )
        if self.threshold_min_ms > self.threshold_max_ms:
            raise ConfigurationError("ENGAGEMENT_THRESHOLD_MIN exceeds ENGAGEMENT_THRESHOLD_MAX")
        if self.winback_lasting_days > self.winback_window_days:
            raise ConfigurationError(
                "ENGAGEMENT_WINBACK_LASTING_DAYS exceeds ENGAGEMENT_WINBACK_WINDOW_DAYS: "
                "no return could last"
            )
        if self.experiment_reasons and not self.experiment_id:
            raise ConfigurationError(
                "ENGAGEMENT_EXPERIMENT_REASONS needs ENGAGEMENT_EXPERIMENT_ID (it salts the arms)"
            )
        self.clock_key_map()  # malformed or short keys are refused when the settings load

    @property
    def ingest_path(self) -> Literal["stream", "batch"]:
        """The ingest path a worker runs: ``auto`` is batch, the path the fault
        suite proves on both stores."""
        if self.ingest == "auto":
            return "batch"
        return self.ingest

    def event_rules(self) -> EventRules:
        """The bounds of an input event, the same for the worker and offline replay."""
        return EventRules(
            max_event_bytes=self.max_event_bytes,
            max_future_ms=self.max_future_ms,
            min_ts_ms=self.min_ts_ms,
            max_user_id_bytes=self.max_user_id_bytes,
            max_event_id_bytes=self.max_event_id_bytes,
            max_label_bytes=self.max_label_bytes,
            input_format=self.input_format,
        )

    @property
    def cohort_period_ms(self) -> int:
        return self.cohort_period_days * self.day_ms

    @property
    def tier_thresholds_ms(self) -> tuple[int, int, int]:
        return (self.at_risk_ms, self.dormant_ms, self.churned_ms)

    @property
    def tier_min_risks(self) -> tuple[float, float, float]:
        return (self.min_risk_at_risk, self.min_risk_dormant, self.min_risk_churned)

    @property
    def broker_hosts(self) -> str:
        """``host:port,...`` for aiokafka, from the Faust-style URL list."""
        hosts = []
        for part in self.broker.replace(";", ",").split(","):
            part = part.strip()
            if "://" in part:
                part = part.split("://", 1)[1]
            if part:
                hosts.append(part.rstrip("/"))
        return ",".join(hosts)

    def clock_key_map(self) -> dict[str, bytes]:
        """``kid -> secret`` from ``CLOCK_KEYS`` (``kid:secret,...``)."""
        if self.clock_keys is None:
            return {}
        keys: dict[str, bytes] = {}
        for part in self.clock_keys.get_secret_value().split(","):
            if not part.strip():
                continue
            kid, sep, secret = part.strip().partition(":")
            if not sep or not kid or not secret:
                raise ConfigurationError(
                    "ENGAGEMENT_CLOCK_KEYS must be 'kid:secret,...' (a part has no ':')"
                )
            if len(secret.encode()) < MIN_CLOCK_KEY_BYTES:
                raise ConfigurationError(
                    f"ENGAGEMENT_CLOCK_KEYS: the secret of kid {kid!r} is shorter than "
                    f"{MIN_CLOCK_KEY_BYTES} bytes; generate each with `openssl rand -hex 32`"
                )
            keys[kid] = secret.encode()
        return keys

    def require_secrets(self) -> None:
        """The worker refuses to start without salts and clock keys."""
        missing = [
            name
            for name, value in (
                ("ENGAGEMENT_HOLDOUT_SALT", self.holdout_salt),
                ("ENGAGEMENT_ERASURE_SALT", self.erasure_salt),
                ("ENGAGEMENT_CLOCK_KEYS", self.clock_keys),
            )
            if value is None or not value.get_secret_value()
        ]
        if missing:
            raise ConfigurationError(
                "missing required secrets: "
                + ", ".join(missing)
                + " (set them in the environment; `engagement demo` generates its own)"
            )
        keys = self.clock_key_map()
        if self.signing_kid not in keys:
            raise ConfigurationError(
                f"ENGAGEMENT_CLOCK_SIGNING_KID={self.signing_kid!r} is not in ENGAGEMENT_CLOCK_KEYS"
            )

    def require_guarded_api(self) -> None:
        """A worker reachable from other machines serves its API and ``/metrics``
        only with a bearer token: refuse a non-loopback ``WEB_HOST`` without one."""
        token = self.api_token.get_secret_value() if self.api_token else ""
        if token or is_loopback(self.web_host):
            return
        raise ConfigurationError(
            f"ENGAGEMENT_WEB_HOST={self.web_host!r} is reachable from other machines, "
            "so the HTTP API and /metrics need a bearer token: set ENGAGEMENT_API_TOKEN "
            "(e.g. `openssl rand -hex 32`; give Prometheus the same token), or bind "
            "ENGAGEMENT_WEB_HOST=127.0.0.1"
        )

    @property
    def signing_kid(self) -> str:
        """The kid that signs; defaults to the first key listed."""
        if self.clock_signing_kid:
            return self.clock_signing_kid
        keys = self.clock_key_map()
        return next(iter(keys), "")

    def with_generated_secrets(self) -> Settings:
        """A copy with fresh random salts and a clock key (demo and tests only)."""
        update: dict[str, Any] = {}
        if self.holdout_salt is None:
            update["holdout_salt"] = SecretStr(secrets.token_hex(16))
        if self.erasure_salt is None:
            update["erasure_salt"] = SecretStr(secrets.token_hex(16))
        if self.clock_keys is None:
            update["clock_keys"] = SecretStr(f"k1:{secrets.token_hex(32)}")
            update["clock_signing_kid"] = "k1"
        return self.model_copy(update=update)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit overrides on top (by field or
    variable name; variable names are checked and resolved as the environment's)."""
    try:
        variables = {k: v for k, v in overrides.items() if k.startswith(PREFIX)}
        fields = {k: v for k, v in overrides.items() if not k.startswith(PREFIX)}
        return Settings(**fields, **resolve_variables(variables, Settings))
    except ConfigurationError:
        raise
    except Exception as exc:  # pydantic's ValidationError, reworded for operators
        raise ConfigurationError(f"invalid settings: {exc}") from exc
