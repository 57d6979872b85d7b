"""Prometheus metrics of a worker, registered on an injected registry.

Labels are bounded sets only: ``type`` (an allow-list, else ``other``),
``outcome``, ``reason``, ``kind``, ``partition``. Never a user id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OTHER_TYPE = "other"
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    """All metrics of one worker."""

    def __init__(self, registry: CollectorRegistry, event_types: tuple[str, ...] = ()) -> None:
        self.registry = registry
        self._types = frozenset(event_types)
        self.events = Counter(
            "engagement_events",
            "Input events by type (allow-listed) and outcome",
            ["type", "outcome"],
            registry=registry,
        )
        self.dlq = Counter(
            "engagement_dlq", "Records sent to the DLQ by reason", ["reason"], registry=registry
        )
        self.duplicates = Counter(
            "engagement_duplicates_dropped",
            "Events skipped as duplicates, by rule",
            ["kind"],
            registry=registry,
        )
        self.signals = Counter(
            "engagement_signals", "Signals emitted by kind", ["kind"], registry=registry
        )
        self.ticks = Counter(
            "engagement_ticks", "Clock records handled", ["outcome"], registry=registry
        )
        self.users = Gauge(
            "engagement_users_tracked",
            "Users with state, per partition",
            ["partition"],
            registry=registry,
        )
        self.clock_lag = Gauge(
            "engagement_clock_lag_seconds",
            "Wall time minus the partition's event-time clock",
            ["partition"],
            registry=registry,
        )
        self.clock = Gauge(
            "engagement_clock_seconds",
            "The partition's event-time clock (epoch seconds)",
            ["partition"],
            registry=registry,
        )
        self.latency = Histogram(
            "engagement_processing_seconds",
            "Time to process one input record",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.index_rebuild = Histogram(
            "engagement_index_rebuild_seconds",
            "Time to rebuild a partition's due index after recovery",
            registry=registry,
        )

    def type_label(self, event_type: str) -> str:
        return event_type if event_type in self._types else OTHER_TYPE
