"""Counts and latencies kept per record and added once per batch (``flush_records``)
export what prometheus_client's own per-record ``inc``/``observe`` export."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram

from agents.worker.metrics import LATENCY_BUCKETS_S, Metrics


def _samples(
    registry: CollectorRegistry, name: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in registry.collect()
        if metric.name == name
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


def test_flushed_records_export_what_per_record_calls_export() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, ("view", "login"))
    reference = CollectorRegistry()
    events = Counter("engagement_events", "", ["type", "outcome"], registry=reference)
    latency = Histogram(
        "engagement_processing_seconds", "", buckets=LATENCY_BUCKETS_S, registry=reference
    )
    draw = random.Random(21)
    edges = [*LATENCY_BUCKETS_S, 0.0, 2.0, 1e-7]  # on a bound, below all, above all
    for batch in range(5):
        for _ in range(draw.randrange(0, 200)):
            event_type = draw.choice(("view", "login", "purchase", "$odd"))
            outcome = draw.choice(("applied", "duplicate_id", "late"))
            seconds = draw.choice(edges) if draw.random() < 0.3 else draw.uniform(0, 1.5)
            metrics.count_event(event_type, outcome)
            metrics.observe_latency(seconds)
            label = event_type if event_type in ("view", "login") else "other"
            events.labels(type=label, outcome=outcome).inc()
            latency.observe(seconds)
        if batch != 2:  # two batches flushed together
            metrics.flush_records()
    for name in ("engagement_events", "engagement_processing_seconds"):
        got, want = _samples(registry, name), _samples(reference, name)
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert abs(got[key] - value) <= 1e-9 * max(1.0, abs(value)), key


def test_nothing_counted_before_a_flush() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, ("view",))
    metrics.count_event("view", "applied")
    metrics.observe_latency(0.001)
    assert (
        registry.get_sample_value("engagement_events_total", {"type": "view", "outcome": "applied"})
        is None
    )
    assert registry.get_sample_value("engagement_processing_seconds_count") == 0
    metrics.flush_records()
    assert (
        registry.get_sample_value("engagement_events_total", {"type": "view", "outcome": "applied"})
        == 1
    )
    assert registry.get_sample_value("engagement_processing_seconds_count") == 1


def test_one_label_counters_count_per_label() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for stage in ("active", "at_risk", "active"):
        metrics.count(metrics.transitions, stage)
    metrics.count(metrics.signals, "tier")
    sample = registry.get_sample_value
    assert sample("engagement_lifecycle_transitions_total", {"stage": "active"}) == 2
    assert sample("engagement_lifecycle_transitions_total", {"stage": "at_risk"}) == 1
    assert sample("engagement_signals_total", {"kind": "tier"}) == 1
