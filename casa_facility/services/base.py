"""A declarative service starter, in the style of pytest-xprocess's ``ProcessStarter``.

To write a launcher:

1. Subclass :class:`Service`; set ``name`` and ``binary`` (the executable, for the install hint)
   and ``install_hint`` (e.g. ``"apt-get install xrootd-server"``).
2. Implement :meth:`command` (the argv) and :meth:`is_ready` (a real readiness probe: a TCP
   connect, an HTTP GET, a PUT, never ``sleep``).
3. Optionally override :meth:`prepare` (write configs and keys into ``self.workdir``, choose ports
   with :func:`free_port`), :meth:`env` and :meth:`cleanup`.

``start()`` runs ``prepare``, launches the process with its output in ``<workdir>/<name>.log``,
polls ``is_ready`` until ``startup_timeout`` and fails with the log tail if the process dies or
never becomes ready. ``stop()`` terminates the whole process group and waits. Use as a context
manager or call start/stop.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from casa_data.errors import ServiceError

__all__ = ["Service", "free_port", "wait_for_port", "port_open"]

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    with socket.socket() as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0


def wait_for_port(port: int, host: str = LOOPBACK, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port, host):
            return
        time.sleep(0.02)
    raise ServiceError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


class Service(ABC):
    """One external process, started on loopback and stopped cleanly."""

    name: ClassVar[str] = "service"
    binary: ClassVar[str] = ""
    install_hint: ClassVar[str] = ""
    startup_timeout: ClassVar[float] = 30.0
    host: str = LOOPBACK

    def __init__(self, workdir: str | os.PathLike | None = None):
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"casa-{self.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    # -- to implement -----------------------------------------------------------------------
    @abstractmethod
    def command(self) -> list[str]:
        """The argv that starts the service (after :meth:`prepare`)."""

    @abstractmethod
    def is_ready(self) -> bool:
        """True once the service answers real requests."""

    # -- optional hooks ---------------------------------------------------------------------
    def prepare(self) -> None:
        """Write configs, keys and choose ports before :meth:`command` is called."""

    def env(self) -> dict[str, str]:
        """Environment of the process (default: ours)."""
        return dict(os.environ)

    def cleanup(self) -> None:
        """Called after the process stopped."""

    # -- provided ---------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_binary(self) -> str:
        if not self.binary:
            return ""
        found = shutil.which(self.binary)
        if not found:
            raise ServiceError(
                f"{self.name}: {self.binary!r} is not installed"
                + (f"; install it with: {self.install_hint}" if self.install_hint else "")
                + " (make test installs everything the tests need)"
            )
        return found

    def start(self) -> "Service":
        if self.running:
            return self
        self.check_binary()
        self.prepare()
        argv = self.command()
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env(), cwd=self.workdir, start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with code {self.proc.returncode} while starting; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if self.is_ready():
                    return self
            except Exception:  # readiness probes may raise until the service is up
                pass
            time.sleep(0.05)
        self.stop()
        raise ServiceError(
            f"{self.name} did not become ready within {self.startup_timeout:.0f} s; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        self.cleanup()

    def __enter__(self) -> "Service":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.name} {state} workdir={self.workdir}>"
