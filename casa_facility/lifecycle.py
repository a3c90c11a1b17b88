"""The facility in a box: every service a coffea-casa-style facility offers, on 127.0.0.1.

``casa facility up`` starts a supervisor process that runs an XRootD origin with a token-protected
XCache, an S3 server (SeaweedFS), the ServiceX-compatible endpoint, the Skyhook service, a one-node
SLURM and Dask Gateway on it (TLS, the facility's tokens), loads the demo
dataset into the origin and a bucket, and writes ``~/.config/casa/facility.yaml`` so casa_data and
casa_compute use it by themselves. ``status`` checks every service; ``down`` stops them all and
removes the config. Secrets (token, S3 keys, TLS keys) are 0600 files in the state directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from casa_data.errors import ServiceError
from casa_facility.services.base import port_open

__all__ = ["facility_dir", "up", "down", "status", "read_state"]


def facility_dir() -> Path:
    """``$CASA_FACILITY_DIR``, else ``<tmp>/casa-facility-<uid>`` (the xrootd user must reach it)."""
    return Path(os.environ.get("CASA_FACILITY_DIR") or Path(tempfile.gettempdir()) / f"casa-facility-{os.getuid()}")


def read_state(state_dir: Path | None = None) -> dict[str, Any] | None:
    path = (state_dir or facility_dir()) / "state.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def up(state_dir: Path | None = None, timeout: float = 240.0, workers: int = 2) -> dict[str, Any]:
    """Start the facility (or return the running one's state)."""
    state_dir = Path(state_dir or facility_dir())
    state = read_state(state_dir)
    if state and _alive(state.get("pid")) and state.get("status") == "up":
        return state
    if state and _alive(state.get("pid")):
        raise ServiceError(f"a facility supervisor (pid {state['pid']}) is {state.get('status')}; "
                           "run `casa facility down` first")
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o755)
    (state_dir / "state.json").unlink(missing_ok=True)
    log = open(state_dir / "supervisor.log", "ab")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "casa_facility.supervisor", str(state_dir), "--workers", str(workers)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    finally:
        log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(state_dir)
        if state and state.get("status") == "up":
            return state
        if state and state.get("status") == "failed":
            _wait_gone(proc.pid, 30)
            raise ServiceError(f"the facility did not start: {state.get('error')}\n"
                               f"log: {state_dir / 'supervisor.log'}")
        if proc.poll() is not None:
            raise ServiceError(f"the facility supervisor exited with code {proc.returncode}; "
                               f"log {state_dir / 'supervisor.log'}:\n{_tail(state_dir / 'supervisor.log')}")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    raise ServiceError(f"the facility did not come up within {timeout:.0f} s; log {state_dir / 'supervisor.log'}")


def down(state_dir: Path | None = None, timeout: float = 90.0) -> bool:
    """Stop the facility; True if one was running. Leaves no process or listener behind."""
    state_dir = Path(state_dir or facility_dir())
    state = read_state(state_dir)
    if not state:
        return False
    pid = state.get("pid")
    was_up = _alive(pid)
    if was_up:
        os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, timeout):
            os.killpg(pid, signal.SIGKILL)
            _wait_gone(pid, 10)
    # Every service runs in its own process group (its pid): wait for all members (pool workers
    # too) to exit, and kill what is left after a grace period.
    groups = {p for svc in state.get("services", {}).values() for p in svc.get("pids", [])} | {pid}
    deadline = time.monotonic() + 15
    while _group_members(groups) and time.monotonic() < deadline:
        time.sleep(0.1)
    for g in groups:
        try:
            os.killpg(g, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    from casa_facility.supervisor import remove_client_files

    remove_client_files(state)
    (state_dir / "state.json").unlink(missing_ok=True)
    return was_up


def status(state_dir: Path | None = None) -> dict[str, Any]:
    """Health of every service: ``{name: {"ok": bool, "detail": str, ...}}`` plus ``"up"``."""
    state = read_state(state_dir)
    if not state:
        return {"up": False, "services": {}, "detail": "no facility (run `casa facility up`)"}
    alive = _alive(state.get("pid"))
    out: dict[str, Any] = {"up": alive and state.get("status") == "up", "services": {},
                           "state_dir": state.get("state_dir")}
    for name, svc in state.get("services", {}).items():
        closed = [p for p in svc.get("ports", []) if not port_open(p)]
        dead = [p for p in svc.get("pids", []) if not _alive(p)]
        ok = alive and not closed and not dead
        detail = svc.get("url", "")
        if closed:
            detail += f" (ports not answering: {closed})"
        if dead:
            detail += f" (processes gone: {dead})"
        expiry = _expiry(svc.get("token_expires"), "its service token for the origin")
        if expiry:
            detail += f" ({expiry[1]})"
            ok = ok and expiry[0]
        out["services"][name] = {"ok": ok, "detail": detail.strip()}
    out["up"] = out["up"] and all(s["ok"] for s in out["services"].values())
    expiry = _expiry(state.get("token_expires"), f"the user token {state.get('token_file', '')}")
    if expiry and state.get("token_owned", True):
        out["token"] = {"ok": expiry[0], "detail": expiry[1]}
    return out


def _expiry(when: float | None, what: str, warn_hours: float = 48) -> tuple[bool, str] | None:
    """``(still valid, message)`` when ``what`` has expired or expires within ``warn_hours``."""
    if not when:
        return None
    left = when - time.time()
    if left <= 0:
        return False, f"{what} has expired: restart the facility (casa facility down; casa facility up)"
    if left < warn_hours * 3600:
        return True, (f"{what} expires in {left / 3600:.0f} h: restart the facility before then "
                      "(casa facility down; casa facility up)")
    return None


def _group_members(pgids: set[int]) -> list[int]:
    """Live processes whose process group is one of ``pgids``."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) in pgids:
                out.append(int(d))
    return out


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"
