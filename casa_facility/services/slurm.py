"""A one-node Slurm (munged + slurmctld + slurmd) on loopback, for tests and demos.

Debian's ``slurmctld slurmd slurm-client munge`` packages; no systemd, no cgroups. Everything
(key, config, state, logs) lives in ``workdir``; clients find it through :attr:`env`
(``SLURM_CONF``). Start takes ~1.5 s; stop cancels all jobs, then terminates the daemons by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from casa_data.errors import ServiceError
from casa_facility.services.base import free_port

__all__ = ["SlurmService"]

INSTALL_HINT = ("apt-get install --no-install-recommends slurmctld slurmd slurm-client munge "
                "(make test installs it)")

_CONF = """ClusterName=casa
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SrunPortRange={srun0}-{srun1}
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={base}/munge/munge.socket
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/run/slurmctld.pid
SlurmdPidFile={base}/run/slurmd.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MessageTimeout=10
KillWait=5
InactiveLimit=0
MinJobAge=60
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _alive(pid: int) -> bool:
    """True unless gone or a zombie (no reaping init here: kill -0 lies about zombies)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


class SlurmService:
    """munged, slurmctld and slurmd for one node; ``partition`` is ``debug``."""

    name = "slurm"
    binaries = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "scancel", "squeue")
    partition = "debug"

    def __init__(self, workdir: str | os.PathLike | None = None, cpus: int = 8,
                 startup_timeout: float = 60.0):
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="casa-slurm-"))
        self.cpus = cpus
        self.startup_timeout = startup_timeout
        self.procs: dict[str, subprocess.Popen] = {}
        self.munged_pid: int | None = None
        self.host = socket.gethostname().split(".")[0]

    @property
    def conf(self) -> Path:
        return self.workdir / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """Variables Slurm clients need (also set in ``os.environ`` by :meth:`start`)."""
        return {"SLURM_CONF": str(self.conf)}

    def _check(self) -> None:
        missing = [b for b in self.binaries if shutil.which(b) is None]
        if missing:
            raise ServiceError(f"slurm: {', '.join(missing)} not installed; {INSTALL_HINT}")
        try:
            addr = socket.gethostbyname(self.host)
        except OSError as e:
            raise ServiceError(f"slurm: hostname {self.host!r} does not resolve ({e}); add it "
                               "to /etc/hosts as 127.0.1.1") from e
        if not addr.startswith("127."):
            raise ServiceError(f"slurm: hostname {self.host!r} resolves to {addr}, not loopback;"
                               " slurmd binds the hostname's address")

    def _log_tail(self, name: str, n: int = 20) -> str:
        try:
            lines = (self.workdir / "log" / f"{name}.log").read_text(errors="replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return "(no log)"

    def start(self) -> "SlurmService":
        self._check()
        base = self.workdir
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        os.chmod(base, 0o755)
        for sub in ("munge", "state", "spool", "run", "log"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(base / "munge", 0o755)  # munged rejects a socket dir others cannot traverse
        key = base / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        out = subprocess.run(
            ["munged", f"--socket={base}/munge/munge.socket", f"--key-file={key}",
             f"--pid-file={base}/munge/munged.pid", f"--log-file={base}/log/munged.log",
             f"--seed-file={base}/munge/munged.seed", "--num-threads=2"],
            capture_output=True, text=True, cwd=base, timeout=30)
        if out.returncode != 0:
            raise ServiceError(f"slurm: munged failed ({out.returncode}): {out.stderr.strip()} "
                               "(every parent of the work dir must be world-executable)")
        self.munged_pid = int((base / "munge" / "munged.pid").read_text().strip())
        srun0 = free_port()
        srun0 = min(srun0, 65000)
        ports = {"ctld_port": free_port(), "slurmd_port": free_port()}
        self.conf.write_text(_CONF.format(
            host=self.host, base=base, user=os.environ.get("USER") or "root", cpus=self.cpus,
            memory_mb=(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) >> 20,
            srun0=srun0, srun1=srun0 + 19, **ports))
        self.ports = ports
        os.environ.update(self.env)
        try:
            for daemon in ("slurmctld", "slurmd"):
                log = open(base / "log" / f"{daemon}.stdout", "ab")
                self.procs[daemon] = subprocess.Popen(
                    [daemon, "-D", "-f", str(self.conf)], stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, cwd=base, start_new_session=True)
                log.close()
            self._wait_idle()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise ServiceError(f"slurm: {name} exited with {p.returncode} while "
                                       f"starting; log:\n{self._log_tail(name)}")
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                                 env={**os.environ, **self.env})
            if out.returncode == 0 and out.stdout.strip() == "idle":
                return
            time.sleep(0.1)
        raise ServiceError(f"slurm: node not idle after {self.startup_timeout:.0f} s; "
                           f"slurmctld log:\n{self._log_tail('slurmctld')}")

    def jobs(self) -> list[str]:
        """Job ids in the queue."""
        out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                             env={**os.environ, **self.env})
        return out.stdout.split()

    def stop(self) -> None:
        env = {**os.environ, **self.env}
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "-u", os.environ.get("USER") or "root"],
                           capture_output=True, env=env)
            deadline = time.monotonic() + 15
            while self.jobs() and time.monotonic() < deadline:
                time.sleep(0.2)
        pids = [p.pid for p in self.procs.values() if p.poll() is None]
        if self.munged_pid:
            pids.append(self.munged_pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            for p in self.procs.values():
                p.poll()  # reap our own children
            time.sleep(0.05)
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self._kill_stray_stepd()
        self.procs.clear()
        self.munged_pid = None
        if os.environ.get("SLURM_CONF") == str(self.conf):
            del os.environ["SLURM_CONF"]
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _kill_stray_stepd(self) -> None:
        """slurmstepd re-parented to init, ours by their cwd (inherited from the daemons)."""
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                if (os.path.basename(os.readlink(d / "exe")) == "slurmstepd"
                        and Path(os.readlink(d / "cwd")) == self.workdir):
                    os.kill(int(d.name), signal.SIGKILL)
            except OSError:
                pass

    def __enter__(self) -> "SlurmService":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.procs else "stopped"
        return f"<SlurmService {state} conf={self.conf}>"
