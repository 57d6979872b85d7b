"""Worker processes measured by the bench: events/s and CPU seconds of one or more
workers on a pre-filled topic, and of the naive Faust agent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
import uuid
from pathlib import Path

from agents.bench.broker import PARTITIONS, say
from agents.stack.processes import free_port
from agents.stack.worker_process import WorkerProcess


def metric_sum(text: str, name: str) -> float:
    """The sum of the samples of ``name`` (a prefix, e.g. ``name{``) in a Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def worker_rate(
    broker_url: str, run_dir: Path, topics: dict[str, str], expected: int, extra_env: dict[str, str]
) -> tuple[float, WorkerProcess]:
    """Start a worker on a pre-filled topic; events/s from first to last event applied."""
    rate, processes, _cpu_s = await workers_rate(
        broker_url, run_dir, topics, expected, extra_env, 1
    )
    return rate, processes[0]


def _cpu_s(process: WorkerProcess) -> float:
    """CPU seconds (user + system) the process has used, from /proc."""
    if process.proc is None:
        return 0.0
    fields = Path(f"/proc/{process.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def workers_rate(
    broker_url: str,
    run_dir: Path,
    topics: dict[str, str],
    expected: int,
    extra_env: dict[str, str],
    count: int,
) -> tuple[float, list[WorkerProcess], float]:
    """``count`` workers of one new group on a pre-filled topic: events/s from the
    first to the last event applied by any of them (a rebalance included), and
    the CPU seconds the workers used meanwhile (which a busy machine does not
    stretch as it stretches the wall time)."""
    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    shared = {
        "ENGAGEMENT_BROKER": broker_url,
        "ENGAGEMENT_PARTITIONS": str(PARTITIONS),
        "ENGAGEMENT_APP_ID": app_id,
        "ENGAGEMENT_HOLDOUT_SALT": uuid.uuid4().hex,
        "ENGAGEMENT_ERASURE_SALT": uuid.uuid4().hex,
        "ENGAGEMENT_CLOCK_KEYS": f"k1:{secrets.token_hex(32)}",
        "ENGAGEMENT_SESSION_TIMEOUT": "6s",
        "ENGAGEMENT_LOG_LEVEL": "WARNING",
        "ENGAGEMENT_MAX_FUTURE": "3650d",
        **topics,
        **extra_env,
    }
    processes = []
    for n in range(count):
        env = {
            **shared,
            "ENGAGEMENT_WEB_PORT": str(free_port()),
            "ENGAGEMENT_DATA_DIR": str(run_dir / f"{app_id}-{n}-data"),
        }
        process = WorkerProcess(env, run_dir / f"worker-{app_id}-{n}.log")
        process.start()
        processes.append(process)
    try:
        for process in processes:
            await process.wait_ready(180)
        first = last = cpu_first = cpu_last = 0.0
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            count_now = 0.0
            for process in processes:
                with contextlib.suppress(OSError):
                    text = await asyncio.to_thread(process.metrics_text)
                    count_now += metric_sum(text, "engagement_events_total{")
            now = time.monotonic()
            if count_now > 0 and not first:
                first = now
                cpu_first = sum(_cpu_s(process) for process in processes)
            if count_now >= expected:
                last = now
                cpu_last = sum(_cpu_s(process) for process in processes)
                break
            await asyncio.sleep(0.1)
        if not last:
            logs = ", ".join(str(process.log_path) for process in processes)
            raise RuntimeError(f"workers did not apply {expected} events; see {logs}")
        # the first poll that saw events is up to one poll late: count from the first poll
    except BaseException:
        for process in processes:
            process.stop()
        raise
    return expected / max(last - first, 1e-6), processes, cpu_last - cpu_first


async def naive_faust_rate(
    broker_url: str, topic: str, expected: int, log_path: Path
) -> float | None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agents.bench.naive",
        broker_url,
        topic,
        str(expected),
        f"naive-{uuid.uuid4().hex[:8]}",
        stdout=asyncio.subprocess.PIPE,
        stderr=log_path.open("ab"),
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60 + expected / 500
        while True:  # the figure line; anything else on stdout goes to the log
            try:
                line = await asyncio.wait_for(
                    proc.stdout.readline(), timeout=max(0.1, deadline - time.monotonic())
                )
            except TimeoutError:
                line = b""
            if not line:
                say(f"the naive Faust agent gave no figure; see {log_path}")
                return None
            try:  # Faust's spinner may leave terminal codes ahead of the object
                figures = json.loads(line[line.find(b"{") :])
                return float(figures["events"] / (figures["last_s"] - figures["first_s"]))
            except (ValueError, KeyError, TypeError):
                with log_path.open("ab") as log:
                    log.write(b"stdout: " + line)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
