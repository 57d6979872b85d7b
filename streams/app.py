"""The ``faust.App`` factory: topics and the tables that hold the model's state.

One app per call (fresh per test). Keys and values are raw bytes: user ids as
UTF-8 keys, user states packed by ``tables.state``, partition clocks as 8-byte
integers, erased users as ``"{P}:{salted hash}"`` keys with the 8-byte clock
time their suppression ends (``tables.erasure``). Every table write lands in
the changelog partition of the record being processed, which is the user's
(and the clock's) own partition.
"""

from __future__ import annotations

from typing import Any

import faust
import msgspec

from streams.kafka import ssl_context
from streams.settings import Settings


class EngineApp(msgspec.Struct, frozen=True):
    """The app and the channels and tables the agents use."""

    app: Any
    settings: Settings
    events: Any
    signals: Any
    lifecycle: Any
    status: Any
    dlq: Any
    users: Any
    clocks: Any
    erased: Any
    cohorts: Any = None  # the compacted cohorts topic (agents.worker.cohorts)


def _credentials(settings: Settings) -> Any:
    mechanism = settings.kafka_sasl_mechanism
    context = ssl_context(settings)
    if mechanism:
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=(
                settings.kafka_sasl_password.get_secret_value()
                if settings.kafka_sasl_password
                else None
            ),
            mechanism=mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def create_app(settings: Settings, **overrides: Any) -> EngineApp:
    """Build the app; ``overrides`` go to ``faust.App`` (tests pass e.g. ``web_enabled``)."""
    options: dict[str, Any] = {
        "broker": settings.broker,
        "store": settings.store,
        "datadir": settings.data_dir,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "broker_session_timeout": settings.session_timeout_ms / 1000,
        "broker_heartbeat_interval": max(settings.session_timeout_ms / 10_000, 0.5),
        "broker_commit_interval": settings.commit_interval_ms / 1000,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        # Faust's default linger of 0 sends a produce request per changelog and
        # signal record; a short linger batches them (profiled: the worker spent
        # a third of its time in socket writes of one-record requests).
        "producer_linger_ms": 5,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        # The address other workers use to reach this one (Faust's table routing).
        "web_host": settings.web_advertised_host or settings.web_host,
        # Faust's own debug views (/table, /router, /graph, stats) would bypass
        # the API token and expose raw state: only our views are served.
        "web_router_enabled": False,
        "web_tables_enabled": False,
        "web_graph_enabled": False,
        "web_stats_enabled": False,
        "autodiscover": False,
        "stream_wait_empty": False,
        "table_standby_replicas": 0,
    }
    credentials = _credentials(settings)
    if credentials is not None:
        options["broker_credentials"] = credentials
    options.update(overrides)
    app = faust.App(settings.app_id, **options)

    def topic(name: str, partitions: int | None = None) -> Any:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            partitions=partitions or settings.partitions,
            internal=False,
        )

    users = app.Table("users", partitions=settings.partitions, key_type=bytes, value_type=bytes)
    clocks = app.Table("clocks", partitions=settings.partitions, key_type=bytes, value_type=bytes)
    erased = app.Table("erased", partitions=settings.partitions, key_type=bytes, value_type=bytes)
    return EngineApp(
        app=app,
        settings=settings,
        events=topic(settings.topic_events),
        signals=topic(settings.topic_signals),
        lifecycle=topic(settings.topic_lifecycle),
        status=topic(settings.topic_status),
        dlq=topic(settings.topic_dlq),
        users=users,
        clocks=clocks,
        erased=erased,
        cohorts=topic(settings.topic_cohorts),
    )
