"""The launcher base on real processes: several daemons, each readiness kind, group kill, errors."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from casa_data.errors import ServiceError
from casa_facility.services.base import Daemon, Part, Service, port_open

# Listens on the port given as argv[1], starts a grandchild (same process group), says so.
LISTENER = """
import socket, subprocess, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[2], "w").write(str(child.pid))
print("listening", flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


class Pair(Service):
    """A port-ready daemon, then a pattern-ready one with its own environment."""

    name = "pair"

    def prepare(self) -> None:
        self.allocate_ports("a")

    def daemons(self) -> list[Part]:
        py = sys.executable
        return [
            Daemon("a", [py, "-c", LISTENER, str(self.ports["a"]), str(self.workdir / "grandchild")],
                   ready=self.ports["a"]),
            Daemon("b", [py, "-c", "import os, time; print('up', os.environ['CASA_X'], flush=True); "
                                   "time.sleep(600)"], ready=r"up 42", env={"CASA_X": "42"}),
        ]


def test_daemons_start_in_order_and_stop_with_their_process_groups(tmp_path):
    svc = Pair(tmp_path)
    with svc:
        assert svc.running and list(svc.procs) == ["a", "b"] and svc.proc is svc.procs["b"]
        port = svc.ports["a"]
        assert port_open(port)
        grandchild = int((tmp_path / "grandchild").read_text())
        pids = [p.pid for p in svc.procs.values()]
        assert "up 42" in (tmp_path / "b.log").read_text()
    assert not svc.running and svc.proc is None
    assert all(_gone(p) for p in [*pids, grandchild])
    assert not port_open(port)


def test_start_after_a_daemon_died_restarts_the_group(tmp_path):
    import signal

    with Pair(tmp_path) as svc:
        old = {n: p.pid for n, p in svc.procs.items()}
        os.killpg(old["b"], signal.SIGKILL)
        svc.procs["b"].wait(5)
        assert not svc.running
        svc.start()
        assert svc.running and not set(old.values()) & {p.pid for p in svc.procs.values()}
        assert _gone(old["a"]), "the survivor of the old group was stopped before the restart"


class Dies(Service):
    name = "dies"

    def daemons(self) -> list[Part]:
        py = sys.executable
        return [Daemon("sleeper", [py, "-c", "import time; time.sleep(600)"]),
                Daemon("crasher", [py, "-c", "import sys; print('bad config line 7'); sys.exit(3)"],
                       ready=lambda: False, hint="check the config")]


def test_a_daemon_that_dies_fails_the_start_with_its_log_and_stops_the_others(tmp_path):
    svc = Dies(tmp_path)
    with pytest.raises(ServiceError, match=r"dies: crasher exited with code 3") as info:
        svc.start()
    assert "bad config line 7" in str(info.value) and "check the config" in str(info.value)
    assert not svc.running and svc.procs == {}


class Slow(Service):
    name = "slow"
    startup_timeout = 0.5

    def command(self) -> list[str]:
        return [sys.executable, "-c", "print('still thinking', flush=True); import time; time.sleep(600)"]

    def is_ready(self) -> bool:
        return False


def test_not_ready_in_time_names_the_timeout_and_quotes_the_log(tmp_path):
    svc = Slow(tmp_path)
    t0 = time.monotonic()
    with pytest.raises(ServiceError, match=r"slow did not become ready within 0 s") as info:
        svc.start()
    assert "still thinking" in str(info.value) and time.monotonic() - t0 < 10
    assert not svc.running


class Missing(Service):
    name = "missing"
    binary = sys.executable
    binaries = ("casa-no-such-daemon",)
    install_hint = "apt-get install casa-no-such-daemon"

    def command(self) -> list[str]:
        return [self.binary]


def test_a_missing_binary_fails_with_the_install_hint(tmp_path):
    with pytest.raises(ServiceError, match="'casa-no-such-daemon' is not installed; install it with: "
                                           "apt-get install casa-no-such-daemon"):
        Missing(tmp_path).start()
    assert not list(tmp_path.glob("*.log")), "nothing was started"


def test_allocated_ports_are_distinct_and_free(tmp_path):
    ports = Pair(tmp_path).allocate_ports(*"abcdefgh")
    assert len(set(ports.values())) == 8 and not any(port_open(p) for p in ports.values())
    assert os.path.isdir(tmp_path)
