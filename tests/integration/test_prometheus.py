"""Prometheus config and alert rules: promtool checks them, a real Prometheus
server scrapes a real worker, evaluates the rules and answers queries.

promtool and prometheus come from the Debian package ``prometheus`` (``make
deps`` installs it); a missing binary fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support.metrics import sample
from support.monitoring import (
    PROMETHEUS_OWN,
    alert_expressions,
    dashboard_expressions,
    metric_names,
)
from support.workers import Deployment, event, produce, read_topic, signals_of, wait_for

from agents.stack.processes import free_port
from agents.stack.services import RedisServer

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install the Debian package `prometheus` (make deps)")
    return path


def promtool(*args: str) -> None:
    done = subprocess.run(
        [binary("promtool"), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def shipped_job() -> dict[str, Any]:
    """The engagement scrape job of deploy/prometheus/prometheus.yml."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "engagement"
    return dict(job)


def test_promtool_accepts_the_scrape_config(tmp_path: Path) -> None:
    promtool("check", "config", "--syntax-only", "prometheus.yml")
    # in full, with the token file where the compose secret would be
    token_file = tmp_path / "engagement_api_token"
    token_file.write_text("token-for-promtool")
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    config["scrape_configs"][0]["authorization"]["credentials_file"] = str(token_file)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    promtool("check", "config", str(tmp_path / "prometheus.yml"))


def test_promtool_accepts_the_alert_rules_and_their_unit_tests() -> None:
    promtool("check", "rules", "alerts.yml")
    promtool("test", "rules", "alerts_test.yml")


def test_promtool_parses_every_dashboard_expression(tmp_path: Path) -> None:
    """The dashboard's PromQL, its variables given the values "All" selects."""
    values = {"$job": ".+", "$instance": ".+", "$tenant": ".*"}
    rules = []
    for n, expr in enumerate(dashboard_expressions()):
        for variable, value in values.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:expression_{n}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", str(path))


def test_alert_rules_cover_what_operators_need() -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {
        "EngagementWorkerDown",
        "EngagementConsumerLagGrowing",
        "EngagementClockStalled",
        "EngagementDlqRate",
        "EngagementSignalBurst",
        "EngagementSignalsStopped",
        "EngagementRedisMirrorDown",
        "EngagementRedisMirrorBehind",
    } <= names
    docs = (PROMETHEUS_DIR.parents[1] / "docs" / "OPERATIONS.md").read_text()
    for name in names:
        assert f"`{name}`" in docs, f"{name} is not explained in docs/OPERATIONS.md"


class PrometheusProcess:
    """A Prometheus server on loopback with its data in a temporary directory."""

    def __init__(self, work_dir: Path, scrape_target: str, token: str) -> None:
        self.port = free_port()
        self.dir = work_dir
        # the shipped scrape job (its bearer token from a file), aimed at this worker
        token_file = work_dir / "engagement_api_token"
        token_file.write_text(token)
        job = shipped_job()
        job["authorization"] = {**job["authorization"], "credentials_file": str(token_file)}
        job["static_configs"] = [{"targets": [scrape_target]}]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
            "scrape_configs": [job],
        }
        self.config_path = work_dir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.dir / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def log_tail(self) -> str:
        return (self.dir / "prometheus.log").read_text(errors="replace")[-3000:]


async def test_prometheus_scrapes_a_worker_and_evaluates_the_rules(
    embedded_broker: Any, tmp_path: Path
) -> None:
    token = "prometheus-test-token-3e1d"
    deployment = Deployment(embedded_broker.url, tmp_path, ENGAGEMENT_API_TOKEN=token)
    await deployment.create_topics()
    worker = await deployment.start_worker()
    prometheus = PrometheusProcess(tmp_path, f"127.0.0.1:{worker.web_port}", token)
    try:
        now = int(time.time() * 1000)
        events = [event(f"prom{i}", f"prom{i}-0", now) for i in range(7)]
        await produce(deployment.bootstrap, deployment.settings.topic_events, events)

        async def applied() -> bool:
            with contextlib.suppress(OSError):
                text = await asyncio.to_thread(worker.metrics_text)
                return sample(text, "engagement_events_total", outcome="applied") == len(events)
            return False

        assert await wait_for(applied, 60), deployment.log_tail()
        prometheus.start()

        async def scraped() -> float | None:
            with contextlib.suppress(OSError, ValueError):
                data = await asyncio.to_thread(
                    prometheus.api,
                    "query",
                    query='sum(engagement_events_total{job="engagement", outcome="applied"})',
                )
                if data["result"]:
                    return float(data["result"][0]["value"][1])
            return None

        assert await wait_for(scraped, 60), prometheus.log_tail()
        assert await scraped() == len(events)
        targets = await asyncio.to_thread(prometheus.api, "targets")
        assert [t["health"] for t in targets["activeTargets"]] == ["up"]

        async def rules_healthy() -> bool:
            with contextlib.suppress(OSError):
                data = await asyncio.to_thread(prometheus.api, "rules")
                rules = [r for g in data["groups"] for r in g["rules"]]
                return bool(rules) and all(r["health"] == "ok" for r in rules)
            return False

        assert await wait_for(rules_healthy, 30), prometheus.log_tail()
        alerts = await asyncio.to_thread(prometheus.api, "alerts")
        firing = {a["labels"]["alertname"] for a in alerts["alerts"] if a["state"] == "firing"}
        assert "EngagementWorkerDown" not in firing
    finally:
        prometheus.stop()
        deployment.stop_all()


def sample_names(text: str) -> set[str]:
    return {item.name for family in text_string_to_metric_families(text) for item in family.samples}


async def test_every_metric_of_the_dashboard_and_alerts_is_exported_by_a_live_worker(
    embedded_broker: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    if not redis_server.running:
        redis_server.start()
    wanted = metric_names(dashboard_expressions() + alert_expressions()) - PROMETHEUS_OWN
    # activation on: its cohort gauges are on the dashboard too
    deployment = Deployment(
        embedded_broker.url,
        tmp_path,
        ENGAGEMENT_REDIS_URL=redis_server.url,
        ENGAGEMENT_ACTIVATION_TYPES="onboarding_completed",
    )
    await deployment.create_topics()
    worker = await deployment.start_worker()
    try:
        now = int(time.time() * 1000)
        # what makes labelled series appear: applied and duplicate events, a
        # rejected record, a signal (at_risk after 3 s), Redis writes, ticks
        records: list[Any] = [event("live1", "e1", now), event("live2", "e2", now)]
        records.append(event("live1", "e1", now))
        await produce(deployment.bootstrap, deployment.settings.topic_events, records)
        await produce(
            deployment.bootstrap,
            deployment.settings.topic_events,
            [(b"live3", b"{not json")],
        )
        got = await read_topic(
            deployment.bootstrap,
            deployment.settings.topic_signals,
            until=lambda recs: any(s.kind == "at_risk" for s in signals_of(recs)),
            timeout_s=60,
        )
        assert any(s.kind == "at_risk" for s in signals_of(got)), deployment.log_tail()

        async def missing() -> set[str]:
            with contextlib.suppress(OSError):
                return wanted - sample_names(await asyncio.to_thread(worker.metrics_text))
            return wanted

        async def none_missing() -> bool:
            return not await missing()

        assert await wait_for(none_missing, 30), f"never exported: {sorted(await missing())}"
    finally:
        deployment.stop_all()
