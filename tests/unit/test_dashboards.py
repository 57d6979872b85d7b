"""The Grafana dashboard and its provisioning, checked statically.

That every metric they name is really exported by a running worker is
checked against a live ``/metrics`` in tests/integration/test_prometheus.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

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

from agents.worker.cohorts import CohortGauges
from agents.worker.metrics import Metrics

PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"


def declared_sample_names() -> set[str]:
    """Every sample name the worker's metrics can produce (the cohort gauges included)."""
    registry = CollectorRegistry()
    CohortGauges(Metrics(registry))
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


DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_SELECTOR = re.compile(r"\b(engagement_[a-z0-9_]+|up)\b(\{[^}]*\})?")
TENANT_METRICS = (
    "engagement_dau",
    "engagement_wau",
    "engagement_mau",
    "engagement_cohort_users",
    "engagement_growth_users",
)


def variables() -> dict[str, dict[str, Any]]:
    found = dashboards()["engagement.json"]["templating"]["list"]
    return {variable["name"]: variable for variable in found}


def test_the_dashboard_has_datasource_job_instance_and_tenant_variables() -> None:
    found = variables()
    assert set(found) >= {"datasource", "job", "instance", "tenant"}
    assert found["datasource"]["type"] == "datasource"
    assert found["datasource"]["query"] == "prometheus"
    for name in ("job", "instance", "tenant"):
        variable = found[name]
        assert variable["type"] == "query" and variable["datasource"] == DATASOURCE, name
        assert variable["definition"].startswith("label_values("), name
        assert variable["definition"].rstrip(")").endswith(f", {name}"), name
        assert variable["includeAll"] and variable["multi"], name
    # instance values follow the chosen jobs; tenant values the jobs and instances
    assert "$job" in found["instance"]["definition"]
    assert "$instance" in found["tenant"]["definition"]
    # "All" tenants includes users without one (tenant="")
    assert found["tenant"]["allValue"] == ".*"


def test_no_panel_names_a_datasource_uid() -> None:
    """Imported into any Grafana, every panel and query uses the chosen data source."""
    text = json.dumps(dashboards()["engagement.json"])
    uids = set(re.findall(r'"uid": "([^"]*)"', text)) - {"engagement-streams"}
    assert uids == {"${datasource}"}, uids
    for panel in panels(dashboards()["engagement.json"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_every_series_is_filtered_by_job_and_instance_and_tenant_where_labelled() -> None:
    for expr in dashboard_expressions():
        for name, matchers in _SELECTOR.findall(expr):
            assert 'job=~"$job"' in matchers and 'instance=~"$instance"' in matchers, expr
            if name in TENANT_METRICS:
                assert 'tenant=~"$tenant"' in matchers, expr
    # the metrics the tenant variable filters really carry a tenant label
    metrics = Metrics(CollectorRegistry())
    cohorts = CohortGauges(metrics)
    by_name = {gauge._name: gauge for gauge in metrics.active_users.values()}
    by_name.update({gauge._name: gauge for gauge in (cohorts.users, cohorts.growth)})
    for name in TENANT_METRICS:
        assert "tenant" in by_name[name]._labelnames, name


def test_every_metric_an_alert_watches_has_a_panel() -> None:
    alerted = metric_names(alert_expressions())
    shown = metric_names(dashboard_expressions())
    assert alerted, "no metric found in the alert rules"
    assert alerted <= shown, f"alerts on metrics without a panel: {sorted(alerted - shown)}"


def panel_expressions(title: str) -> str:
    (panel,) = [p for p in panels(dashboards()["engagement.json"]) if p["title"] == title]
    return " ".join(target["expr"] for target in panel["targets"])


def test_the_cohort_gauges_have_their_panels() -> None:
    """Activation per weekly cohort, cohort retention and growth accounting."""
    rate = panel_expressions("Activation rate per weekly cohort")
    assert metric_names([rate]) == {
        "engagement_activation_cohort_users",
        "engagement_activation_cohort_activated_users",
    }
    assert rate.count("sum by (weeks_ago)") == 2 and " / " in rate
    sizes = panel_expressions("Users per weekly cohort (activation)")
    assert metric_names([sizes]) == metric_names([rate])
    retention = panel_expressions("Cohort retention")
    assert metric_names([retention]) == {"engagement_cohort_users"}
    # each cohort's active users by age over the same cohort's first period
    assert "sum by (cohort, age)" in retention and 'age="0"' in retention
    assert "on (cohort)" in retention
    growth = panel_expressions("Growth accounting")
    assert metric_names([growth]) == {"engagement_growth_users"}
    assert "by (kind, period)" in growth
    # every gauge of both cohort families is shown
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    cohorts = CohortGauges(metrics)
    families = {metrics.cohort_users, metrics.cohort_activated, cohorts.users, cohorts.growth}
    shown = metric_names(dashboard_expressions())
    assert {family._name for family in families} <= shown


def test_the_datasource_variable_offers_the_provisioned_datasource() -> None:
    """The compose stack's Grafana lists its provisioned Prometheus under the variable."""
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (provisioned,) = datasources["datasources"]
    assert provisioned["type"] == variables()["datasource"]["query"]


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
