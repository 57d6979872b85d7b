"""`engagement demo` end to end: every tier and a reactivation within a minute, nothing left behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

SUMMARY = re.compile(
    r"summary: events in (\d+), poison sent (\d+), DLQ (\d+), signals: "
    r"at_risk (\d+), dormant (\d+), churned (\d+), reactivated (\d+)"
)


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("broker", ["embedded", "kafka"])
def test_demo_shows_every_tier_and_stops_everything(
    broker: str, kafka_broker: object, tmp_path: Path
) -> None:
    # kafka_broker: makes sure the jars are fetched before the demo starts its own broker
    marker = f"DEMO_TEST_{uuid.uuid4().hex}"
    env = {**os.environ, marker: "1"}
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "agents.cli.main", "demo", "--duration", "55", "--broker", broker],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    match = SUMMARY.search(done.stdout)
    assert match, done.stdout[-2000:]
    events, poison, dlq, at_risk, dormant, churned, reactivated = map(int, match.groups())
    assert events > 1000
    assert poison > 0 and dlq == poison
    assert at_risk > 0 and dormant > 0 and churned > 0 and reactivated > 0
    assert at_risk >= dormant >= churned
    # the live lines are signals as they arrive
    assert re.search(r"^\+\s*\d+\.\ds\s+at_risk\s", done.stdout, re.M)
    assert "stopped broker, worker and redis-server." in done.stdout
    assert _processes_with(marker) == []
