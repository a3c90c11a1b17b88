"""A one-node Slurm (munged + slurmctld + slurmd) on loopback, for tests and demos.

Debian's ``slurmctld slurmd slurm-client munge`` packages; no systemd, no cgroups. Everything
(key, config, state, logs) lives in ``workdir``; clients find it through :meth:`client_env`
(``SLURM_CONF``, also set in ``os.environ`` while it runs). The three daemons run in the
foreground under :class:`~casa_facility.services.base.Service`. Start takes ~1.5 s; stop cancels
all jobs, then terminates the daemons.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from casa_data.errors import ServiceError
from casa_facility.services.base import Daemon, Part, Service

__all__ = ["SlurmService"]

INSTALL_HINT = "apt-get install --no-install-recommends slurmctld slurmd slurm-client munge"

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


class SlurmService(Service):
    """munged, slurmctld and slurmd for one node; ``partition`` is ``debug``."""

    name = "slurm"
    binary = "slurmctld"
    binaries = ("munged", "slurmd", "sbatch", "sinfo", "scancel", "squeue")
    install_hint = INSTALL_HINT
    partition = "debug"

    def __init__(self, workdir: str | os.PathLike[str] | None = None, cpus: int = 8,
                 startup_timeout: float = 60.0):
        super().__init__(workdir)
        self.cpus = cpus
        self.startup_timeout = startup_timeout
        self.host = socket.gethostname().split(".")[0]

    @property
    def conf(self) -> Path:
        return self.workdir / "slurm.conf"

    def client_env(self) -> dict[str, str]:
        """Variables Slurm clients need (also set in ``os.environ`` while it runs)."""
        return {"SLURM_CONF": str(self.conf)}

    def _check_host(self) -> None:
        try:
            addr = socket.gethostbyname(self.host)
        except OSError as e:
            raise ServiceError(f"slurm: hostname {self.host!r} does not resolve ({e}); add it "
                               "to /etc/hosts as 127.0.1.1") from e
        if not addr.startswith("127."):
            raise ServiceError(f"slurm: hostname {self.host!r} resolves to {addr}, not loopback;"
                               " slurmd binds the hostname's address")

    def prepare(self) -> None:
        self._check_host()
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
        self.ports = {}
        ports = self.allocate_ports("ctld_port", "slurmd_port", "srun0")
        srun0 = min(ports.pop("srun0"), 65000)
        self.conf.write_text(_CONF.format(
            host=self.host, base=base, user=os.environ.get("USER") or "root", cpus=self.cpus,
            memory_mb=(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) >> 20,
            srun0=srun0, srun1=srun0 + 19, **ports))
        os.environ.update(self.client_env())

    def daemons(self) -> list[Part]:
        base, conf = self.workdir, str(self.conf)
        log = base / "log"
        munge = base / "munge"
        return [
            Daemon("munged", ["munged", "--foreground", f"--socket={munge}/munge.socket",
                              f"--key-file={munge}/munge.key", f"--pid-file={munge}/munged.pid",
                              f"--log-file={log}/munged.log", f"--seed-file={munge}/munged.seed",
                              "--num-threads=2"],
                   ready=lambda: (munge / "munge.socket").is_socket(), log=log / "munged.stdout",
                   logs=[log / "munged.log"], timeout=30,
                   hint="(every parent of the work dir must be world-executable)"),
            Daemon("slurmctld", ["slurmctld", "-D", "-f", conf], ready=self.ports["ctld_port"],
                   log=log / "slurmctld.stdout", logs=[log / "slurmctld.log"]),
            Daemon("slurmd", ["slurmd", "-D", "-f", conf], ready=self._idle, poll=0.1,
                   log=log / "slurmd.stdout", logs=[log / "slurmd.log", log / "slurmctld.log"]),
        ]

    def _idle(self) -> bool:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                             env={**os.environ, **self.client_env()})
        return out.returncode == 0 and out.stdout.strip() == "idle"

    def jobs(self) -> list[str]:
        """Job ids in the queue."""
        out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                             env={**os.environ, **self.client_env()})
        return out.stdout.split()

    def before_stop(self) -> None:
        ctld = self.procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            subprocess.run(["scancel", "--full", "-u", os.environ.get("USER") or "root"],
                           capture_output=True, env={**os.environ, **self.client_env()})
            deadline = time.monotonic() + 15
            while self.jobs() and time.monotonic() < deadline:
                time.sleep(0.2)

    def after_stop(self) -> None:
        self._kill_stray_stepd()
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

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<SlurmService {state} conf={self.conf}>"
