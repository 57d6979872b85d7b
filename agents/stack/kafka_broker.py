"""A single-node Apache Kafka (KRaft) for tests, the demo and the bench, run by
``deploy/kafka/kafka.sh``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from agents.stack.processes import LOCALHOST, free_port, group_alive, kill_group, pid_alive, tail
from agents.stack.services import KAFKA_SCRIPT, Service, kafka_answers
from tables.errors import ServiceStartError


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
                f"last lines of {self.log_path}:\n{tail(self.log_path)}"
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
                kill_group(pid, 0.0)
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
