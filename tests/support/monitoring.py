"""Metric names used by the Grafana dashboard and the Prometheus alert rules."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = ROOT / "deploy" / "grafana" / "dashboards"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# Series Prometheus makes itself, not exported by a worker.
PROMETHEUS_OWN = frozenset({"up"})
_NAME = re.compile(r"\b(engagement_[a-z0-9_]+|up)\b")


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))
    }


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_expressions() -> list[str]:
    return [
        target["expr"]
        for dashboard in dashboards().values()
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_expressions() -> list[str]:
    return [str(rule["expr"]) for rule in alert_rules()]


def metric_names(expressions: list[str]) -> set[str]:
    """Sample names (``engagement_*`` and ``up``) in PromQL expressions."""
    return {name for expr in expressions for name in _NAME.findall(expr)}
