"""The Grafana dashboard and its provisioning, checked statically.

That every metric they name is really exported by a running worker is
checked against a live ``/metrics`` in tests/integration/test_prometheus.py.
"""

from __future__ import annotations

import yaml
from prometheus_client import CollectorRegistry
from support.monitoring import (
    PROMETHEUS_OWN,
    ROOT,
    alert_expressions,
    dashboard_expressions,
    dashboards,
    metric_names,
    panels,
)

from agents.worker.metrics import Metrics

PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"


def declared_sample_names() -> set[str]:
    """Every sample name the worker's metrics can produce."""
    registry = CollectorRegistry()
    Metrics(registry)
    names: set[str] = set()
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("_sum", "_count", ""),
    }
    for family in registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def test_there_is_one_provisioned_dashboard_with_unique_panel_ids() -> None:
    found = dashboards()
    assert list(found) == ["engagement.json"]
    dashboard = found["engagement.json"]
    assert dashboard["uid"] == "engagement-streams"
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_the_dashboard_shows_what_operators_watch() -> None:
    titles = " | ".join(p["title"].lower() for p in panels(dashboards()["engagement.json"]))
    for topic in (
        "events/s",
        "dlq by reason",
        "signals by tier",
        "users per lifecycle stage",
        "stickiness",
        "clock lag",
        "latency",
        "redis mirror",
    ):
        assert topic in titles, topic
    exprs = " ".join(dashboard_expressions())
    for quantile in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({quantile}," in exprs


def test_every_panel_uses_the_provisioned_datasource() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    uids = {ds["uid"] for ds in datasources["datasources"]}
    for panel in panels(dashboards()["engagement.json"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids


def test_dashboard_provider_points_where_compose_mounts_the_dashboards() -> None:
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "engagement.yml").read_text())
    paths = {p["options"]["path"] for p in provider["providers"]}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    volumes = compose["services"]["grafana"]["volumes"]
    mounted = {v.split(":")[1] for v in volumes if v.startswith("./deploy/grafana/dashboards:")}
    assert paths == mounted


def test_dashboard_and_alerts_name_only_metrics_the_worker_declares() -> None:
    names = metric_names(dashboard_expressions() + alert_expressions()) - PROMETHEUS_OWN
    assert names, "no metric found in the expressions"
    unknown = names - declared_sample_names()
    assert not unknown, f"not exported by agents/worker/metrics.py: {sorted(unknown)}"
