"""Process groups and sockets for the process managers: a free port, whether a
process or group lives, TERM-grace-KILL of a group, a log's tail."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tables.errors import EngagementError

LOCALHOST = "127.0.0.1"
POLL_S = 0.1
_LOG_TAIL_LINES = 30

T = TypeVar("T")


class ServiceStopError(EngagementError):
    """A process survived SIGKILL (stuck in the kernel); look at it with ps."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of a process, or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie waiting to be reaped."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def group_alive(pgid: int) -> bool:
    """True if any live (non-zombie) process belongs to process group ``pgid``."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
                return True
    return False


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def kill_group(pgid: int, grace_s: float, reap: Callable[[], object] | None = None) -> None:
    """TERM the group, wait ``grace_s``, then KILL it; returns once it is gone."""
    signal_group(pgid, signal.SIGTERM)
    # A frozen (SIGSTOPped) process never sees the TERM until it runs again.
    signal_group(pgid, signal.SIGCONT)
    gone = _wait_group_gone(pgid, grace_s)
    if not gone:
        signal_group(pgid, signal.SIGKILL)
        gone = _wait_group_gone(pgid, 10.0)
    if reap is not None:
        reap()
    if not gone:
        raise ServiceStopError(f"process group {pgid} survived SIGKILL")


def tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def tcp_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running loop."""
    # A fresh thread leaves the caller's event loop (e.g. pytest-asyncio's) untouched.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
