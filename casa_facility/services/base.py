"""One declarative starter for single- and multi-process services (after pytest-xprocess).

A service is a list of parts started in order: :class:`Daemon` specs (a command, a readiness
check, a log file, extra environment) and, for stacks, other :class:`Service` objects (started
and stopped through their own launchers, so each can also be restarted alone).

To write a launcher:

1. Subclass :class:`Service`; set ``name``, ``binary`` (and ``binaries`` when it needs more
   executables) and ``install_hint`` (e.g. ``"apt-get install xrootd-server"``).
2. One process: implement :meth:`command` (the argv) and :meth:`is_ready` (a real readiness probe:
   a TCP connect, an HTTP GET, a PUT, never ``sleep``). Several: implement :meth:`daemons`.
3. Optionally override :meth:`prepare` (write configs and keys into ``self.workdir``, choose ports
   with :meth:`allocate_ports`), :meth:`env`, :meth:`before_stop` and :meth:`after_stop`.

``start()`` checks the binaries (a missing one fails with the install hint), runs ``prepare``,
then starts each part and polls its readiness until its timeout; a daemon that exits or is not
ready in time fails the start with the tail of its log, after stopping what was started.
``stop()`` terminates each daemon's process group in reverse order (SIGTERM, then SIGKILL after
``timeout``). Use as a context manager or call start/stop.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self, TypeAlias

from casa_data.errors import ServiceError

__all__ = ["Service", "Daemon", "Part", "free_port", "wait_for_port", "port_open", "LOOPBACK"]

LOOPBACK = "127.0.0.1"

#: A readiness check: a TCP port that accepts connections, a regular expression that appears in
#: the daemon's log, a callable returning True (exceptions count as "not yet"), or None (alive).
Ready = int | str | re.Pattern[str] | Callable[[], bool] | None


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


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


def _tail(path: Path, lines: int, start: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Daemon:
    """One process of a service.

    ``command`` and ``env`` may be callables, evaluated after ``setup`` (which runs just before the
    spawn: mkfs, keys, ids the command needs). ``log`` receives stdout and stderr (default
    ``<workdir>/<name>.log``); ``logs`` are the daemon's own log files, quoted in errors too.
    ``timeout`` defaults to the service's ``startup_timeout``; ``hint`` is appended to errors.
    """

    name: str
    command: Sequence[str] | Callable[[], Sequence[str]]
    ready: Ready = None
    log: Path | None = None
    env: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None
    setup: Callable[[], None] | None = None
    logs: Sequence[Path] = ()
    timeout: float | None = None
    poll: float = 0.05
    hint: str = ""
    # Set when spawned: the process and where this run's output starts in the log.
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    log_start: int = field(default=0, repr=False, compare=False)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


Part: TypeAlias = "Daemon | Service"


class Service:
    """One or more external processes, started on loopback and stopped cleanly."""

    name: ClassVar[str] = "service"
    binary: ClassVar[str] = ""
    binaries: ClassVar[tuple[str, ...]] = ()  # further executables the service needs
    install_hint: ClassVar[str] = ""
    startup_timeout: float = 30.0
    host: str = LOOPBACK

    def __init__(self, workdir: str | os.PathLike[str] | None = None):
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"casa-{self.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ports: dict[str, int] = {}
        self._parts: list[Part] = []  # started parts, in start order

    # -- to implement (one process: command and is_ready; several: daemons) -----------------
    def command(self) -> list[str]:
        """The argv of a single-process service (after :meth:`prepare`)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither command() nor daemons()")

    def is_ready(self) -> bool:
        """True once a single-process service answers real requests."""
        return True

    def daemons(self) -> list[Part]:
        """The parts to start, in order (called after :meth:`prepare`). Default: one daemon
        named after the service, running :meth:`command`, ready when :meth:`is_ready`."""
        return [Daemon(self.name, self.command, ready=self.is_ready, log=self.log_path)]

    # -- optional hooks ---------------------------------------------------------------------
    def prepare(self) -> None:
        """Write configs, keys and choose ports before :meth:`daemons` is called."""

    def env(self) -> dict[str, str]:
        """Environment of the processes (default: ours)."""
        return dict(os.environ)

    def before_stop(self) -> None:
        """Called by :meth:`stop` while the daemons still run (e.g. cancel jobs)."""

    def after_stop(self) -> None:
        """Called after the processes stopped (also after a failed start)."""

    # -- provided ---------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines) or "(no log)"

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        """The processes this service started itself, by daemon name."""
        return {p.name: p.proc for p in self._parts if isinstance(p, Daemon) and p.proc is not None}

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The main (last started) process."""
        procs = list(self.procs.values())
        return procs[-1] if procs else None

    @property
    def running(self) -> bool:
        """Every part is up."""
        return bool(self._parts) and all(
            p.alive if isinstance(p, Daemon) else p.running for p in self._parts)

    def allocate_ports(self, *names: str) -> dict[str, int]:
        """Distinct free ports for ``names`` (kept in :attr:`ports`)."""
        taken = set(self.ports.values())
        for n in names:
            p = free_port(self.host)
            while p in taken:  # the kernel can hand the same free port twice in a row
                p = free_port(self.host)
            taken.add(p)
            self.ports[n] = p
        return {n: self.ports[n] for n in names}

    def check_binaries(self) -> None:
        """Fail with the install hint when an executable is missing."""
        missing = [b for b in self.binaries if shutil.which(b) is None]
        if self.binary and not self._binary_found():
            missing.insert(0, self.binary)
        if missing:
            what = (f"{missing[0]!r} is not installed" if len(missing) == 1
                    else f"{', '.join(missing)} are not installed")
            raise ServiceError(
                f"{self.name}: {what}"
                + (f"; install it with: {self.install_hint}" if self.install_hint else "")
                + " (make test installs everything the tests need)"
            )

    def _binary_found(self) -> bool:
        try:
            return bool(self.check_binary())
        except ServiceError:
            return False

    def check_binary(self) -> str:
        """The path of :attr:`binary` (subclasses may look elsewhere than ``$PATH``)."""
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

    def start(self) -> Self:
        if self.running:
            return self
        if any(isinstance(p, Daemon) for p in self._parts):
            self._stop_parts()  # a daemon died: end the rest of its group, then start afresh
        self.check_binaries()
        try:
            self.prepare()
            self._parts = []
            for part in self.daemons():
                self._parts.append(part)
                if isinstance(part, Service):
                    part.start()
                else:
                    self._spawn(part)
                    self._wait_ready(part)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, d: Daemon) -> None:
        if d.setup is not None:
            d.setup()
        d.log = d.log or self.workdir / f"{d.name}.log"
        argv = list(d.command() if callable(d.command) else d.command)
        extra = d.env() if callable(d.env) else d.env
        with open(d.log, "ab") as log:
            d.log_start = log.tell()
            d.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**self.env(), **(extra or {})}, cwd=self.workdir, start_new_session=True,
            )

    def _probe(self, d: Daemon) -> Callable[[], bool]:
        ready = d.ready
        if ready is None:
            return lambda: True
        if isinstance(ready, int):
            return lambda: port_open(ready, self.host)
        if isinstance(ready, (str, re.Pattern)):
            pattern = re.compile(ready)
            return lambda: any(pattern.search(_tail(f, 10**9, d.log_start if f == d.log else 0))
                               for f in (d.log, *d.logs) if f is not None)
        return ready

    def _wait_ready(self, d: Daemon) -> None:
        probe = self._probe(d)
        timeout = d.timeout or self.startup_timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for other in self._parts:
                if isinstance(other, Daemon) and other.proc is not None and other.proc.poll() is not None:
                    raise ServiceError(f"{self._label(other)} exited with code {other.proc.returncode} "
                                       f"while starting{self._logs(other)}")
            try:
                if probe():
                    return
            except Exception:  # readiness probes may raise until the daemon is up
                pass
            time.sleep(d.poll)
        raise ServiceError(f"{self._label(d)} did not become ready within {timeout:.0f} s{self._logs(d)}")

    def _label(self, d: Daemon) -> str:
        return self.name if d.name == self.name else f"{self.name}: {d.name}"

    def _logs(self, d: Daemon, lines: int = 30) -> str:
        out = []
        for f in (d.log, *d.logs):
            if f is not None:
                text = _tail(f, lines, d.log_start if f == d.log else 0)
                out.append(f"; log {f}:\n{text}" if text else f"; log {f} is empty")
        return "".join(out) + (f"\n{d.hint}" if d.hint else "")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every part, last started first, and wait for each."""
        try:
            if any(p.alive if isinstance(p, Daemon) else p.running for p in self._parts):
                self.before_stop()
        finally:
            self._stop_parts(timeout)
            self.after_stop()

    def _stop_parts(self, timeout: float = 10.0) -> None:
        parts, self._parts = self._parts, []
        for part in reversed(parts):
            if isinstance(part, Service):
                part.stop(timeout)
            elif part.proc is not None:
                _stop_group(part.proc, timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.name} {state} workdir={self.workdir}>"


def _stop_group(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it after ``timeout``, reap ``proc``."""
    if proc.poll() is None:
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
