"""Prometheus metrics of a worker, registered on an injected registry.

Labels are bounded sets only: ``type`` (an allow-list, else ``other``),
``outcome``, ``reason``, ``kind``, ``stage``, ``partition``, ``tenant`` (tenants
of the config topic, else ``other``). Never a user id.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OTHER_TYPE = "other"
EVENT_CHILDREN_MAX = 1024  # cached (raw type, outcome) pairs; types come from producers
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    """All metrics of one worker."""

    def __init__(self, registry: CollectorRegistry, event_types: tuple[str, ...] = ()) -> None:
        self.registry = registry
        self._types = frozenset(event_types)
        self._event_children: dict[tuple[str, str], Any] = {}
        self._label_children: dict[tuple[Any, str], Any] = {}
        # counted per record, added to the metrics by ``flush_records`` (once per batch)
        self._event_counts: dict[tuple[str, str], int] = {}
        self._latency_counts = [0] * (len(LATENCY_BUCKETS_S) + 1)  # the last: above them all
        self._latency_sum_s = 0.0
        self.events = Counter(
            "engagement_events",
            "Input events by type (allow-listed) and outcome",
            ["type", "outcome"],
            registry=registry,
        )
        self.dlq = Counter(
            "engagement_dlq", "Records sent to the DLQ by reason", ["reason"], registry=registry
        )
        self.fenced_sends = Counter(
            "engagement_fenced_sends",
            "Sends refused for an input partition revoked from this worker (the fence)",
            registry=registry,
        )
        self.batches_abandoned = Counter(
            "engagement_batches_abandoned",
            "Batches abandoned at a revoke, none of their records acknowledged",
            registry=registry,
        )
        self.repartitioned = Counter(
            "engagement_repartitioned",
            "Events sent on to the partition murmur2 of their key picks (ENGAGEMENT_REPARTITION)",
            registry=registry,
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
        self.erasures = Counter(
            "engagement_erasures",
            "Erasure requests handled, by outcome (applied, stale)",
            ["outcome"],
            registry=registry,
        )
        self.erasure_suppressions = Gauge(
            "engagement_erasure_suppressions",
            "Erased users whose late events are still dropped, per partition",
            ["partition"],
            registry=registry,
        )
        self.status_writes = Counter(
            "engagement_status_writes",
            "Records written to the user-status topic, by kind (immediate, coalesced, tombstone)",
            ["kind"],
            registry=registry,
        )
        self.status_pending = Gauge(
            "engagement_status_pending",
            "Coalesced user-status writes waiting for the next flush",
            registry=registry,
        )
        self.index_rebuild = Histogram(
            "engagement_index_rebuild_seconds",
            "Time to rebuild a partition's due index after recovery",
            registry=registry,
        )
        # The Redis serving mirror (agents.worker.redis_mirror).
        self.redis_backlog = Gauge(
            "engagement_redis_backlog_users",
            "Users changed but not yet written to the Redis mirror",
            registry=registry,
        )
        self.redis_writes = Counter(
            "engagement_redis_writes",
            "User writes to the Redis mirror by outcome (written, deleted, failed, not_owned)",
            ["outcome"],
            registry=registry,
        )
        self.redis_errors = Counter(
            "engagement_redis_errors",
            "Failed round trips to Redis (retried with backoff)",
            registry=registry,
        )
        self.redis_up = Gauge(
            "engagement_redis_up",
            "1 if the last round trip to Redis succeeded, else 0",
            registry=registry,
        )
        self.redis_needs_resync = Gauge(
            "engagement_redis_needs_resync",
            "1 while the mirror must be (or is being) rewritten from the table",
            registry=registry,
        )
        self.redis_resyncs = Counter(
            "engagement_redis_resyncs",
            "Mirror resyncs from the table, by cause "
            "(recovery, overflow, redis_restart, timeout, rebuilt)",
            ["cause"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "engagement_consumer_lag_records",
            "Records of an owned input partition not yet processed (high water - next offset)",
            ["partition"],
            registry=registry,
        )

        self.users_by_stage = Gauge(
            "engagement_users_by_stage",
            "Users per lifecycle stage, per partition",
            ["stage", "partition"],
            registry=registry,
        )
        self.transitions = Counter(
            "engagement_lifecycle_transitions",
            "Lifecycle transitions emitted, by the stage entered",
            ["stage"],
            registry=registry,
        )
        self.active_users = {
            days: Gauge(
                f"engagement_{name}",
                f"Users active in the trailing {days} day(s) on the partition's event time",
                ["tenant", "partition"],
                registry=registry,
            )
            for name, days in (("dau", 1), ("wau", 7), ("mau", 30))
        }
        self.dau_mau = Gauge(
            "engagement_dau_mau_ratio",
            "DAU / MAU per partition (stickiness)",
            ["tenant", "partition"],
            registry=registry,
        )
        self.cohort_users = Gauge(
            "engagement_activation_cohort_users",
            "Users per weekly cohort of first events (activation on), weeks ago 0-7",
            ["weeks_ago", "partition"],
            registry=registry,
        )
        self.cohort_activated = Gauge(
            "engagement_activation_cohort_activated_users",
            "Activated users per weekly cohort of first events (activation on)",
            ["weeks_ago", "partition"],
            registry=registry,
        )
        self.streaks = Histogram(
            "engagement_streak_days",
            "Current active-day streak, observed on each user's first event of a day",
            buckets=(1, 2, 3, 5, 7, 14, 30, 60, 100, 365),
            registry=registry,
        )
        self.configs = Counter(
            "engagement_config_records",
            "Threshold config records handled, by outcome",
            ["outcome"],
            registry=registry,
        )

        # Every series labelled by partition: exported only for partitions owned now.
        self.per_partition: tuple[Gauge, ...] = (
            self.users,
            self.clock_lag,
            self.clock,
            self.erasure_suppressions,
            self.consumer_lag,
            self.users_by_stage,
            *self.active_users.values(),
            self.dau_mau,
            self.cohort_users,
            self.cohort_activated,
        )

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Remove every series of ``partitions``, which this worker no longer owns.

        Their new owner exports them; a copy frozen here would count the
        partition's users twice and, read by ``min by (partition)``, hide a
        clock that stalled on the new owner."""
        for partition in partitions:
            label = {"partition": str(partition)}
            for gauge in self.per_partition:
                gauge.remove_by_labels(label)

    def type_label(self, event_type: str) -> str:
        return event_type if event_type in self._types else OTHER_TYPE

    def count_event(self, event_type: str, outcome: str) -> None:
        """``events{type, outcome}`` += 1, in the metric from the next ``flush_records``."""
        key = (event_type, outcome)
        counts = self._event_counts
        counts[key] = counts.get(key, 0) + 1

    def observe_latency(self, seconds: float) -> None:
        """One record's processing time, in the histogram from the next ``flush_records``."""
        self._latency_counts[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self._latency_sum_s += seconds

    def flush_records(self) -> None:
        """Add the events counted and latencies observed since the last call to the
        metrics: each metric's lock is taken once per batch, not per record."""
        counts, self._event_counts = self._event_counts, {}
        for (event_type, outcome), n in counts.items():
            child = self._event_children.get((event_type, outcome))
            if child is None:
                child = self.events.labels(type=self.type_label(event_type), outcome=outcome)
                if len(self._event_children) < EVENT_CHILDREN_MAX:
                    self._event_children[(event_type, outcome)] = child
            child.inc(n)
        latency = self._latency_counts
        if any(latency):
            # Histogram.observe's own steps (prometheus_client 0.26, pinned), n at once:
            # the sum, and each bucket's own count (cumulated when exported)
            self.latency._sum.inc(self._latency_sum_s)
            for index, n in enumerate(latency):
                if n:
                    self.latency._buckets[index].inc(n)
            self._latency_counts = [0] * len(latency)
            self._latency_sum_s = 0.0

    def count(self, counter: Counter, label: str) -> None:
        """``counter{label}`` += 1 for a counter of one label, its child looked up once
        (labels of bounded sets only: stages, signal kinds)."""
        key = (counter, label)
        child = self._label_children.get(key)
        if child is None:
            child = self._label_children[key] = counter.labels(label)
        child.inc()
