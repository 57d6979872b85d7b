"""Logs as text or one JSON object per line (ENGAGEMENT_LOG_FORMAT), in a fresh process
so that the test runner's own handlers do not interfere."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta

import pytest

SCRIPT = """
import logging, sys
from agents.common.logs import configure_logging
configure_logging(sys.argv[1], sys.argv[2])
log = logging.getLogger("engagement.test")
log.debug("debug line")
log.info("ready on %d partitions", 4)
logging.getLogger("aiokafka").debug("a record with key u-secret-42")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("it failed: %s", "quoted \\"text\\"")
"""


def run(level: str, log_format: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, level, log_format],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == ""
    return done.stderr.splitlines()


def test_json_logs_are_one_object_per_line() -> None:
    entries = [json.loads(line) for line in run("INFO", "json")]
    assert [(e["level"], e["logger"], e["message"]) for e in entries] == [
        ("INFO", "engagement.test", "ready on 4 partitions"),
        ("ERROR", "engagement.test", 'it failed: quoted "text"'),
    ]
    assert "ZeroDivisionError" in entries[1]["exception"]
    assert "exception" not in entries[0]
    assert datetime.fromisoformat(entries[0]["ts"]).utcoffset() == timedelta(0)


def test_record_loggers_stay_at_info_even_at_debug() -> None:
    lines = run("DEBUG", "json")
    messages = [json.loads(line)["message"] for line in lines]
    assert "debug line" in messages
    assert not any("u-secret-42" in line for line in lines)


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_text_logs_stay_plain(level: str) -> None:
    lines = [line for line in run(level, "text") if " INFO " in line or " ERROR " in line]
    assert lines[0].endswith("INFO engagement.test: ready on 4 partitions")
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])
