"""``CoffeaCasaCluster``: dask-jobqueue's ``HTCondorCluster`` with coffea-casa facility defaults.

Differences from the upstream coffea-casa package, on purpose:

- TLS certificates and the bearer token are always ``encrypt_input_files``; configuration that
  would ship them unencrypted raises instead of silently winning.
- Nothing in global dask config is changed; the scheduler and dashboard bind one address
  (``$POD_IP``/``$HOST_IP`` at a facility, 127.0.0.1 otherwise), worker HTTP servers loopback.
- A missing ``condor_submit`` is a clear :class:`ClusterError` at ``scale``/``adapt``, and a
  failed submission never leaves a worker that breaks ``close()``.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import dask
from dask_jobqueue.htcondor import HTCondorCluster, HTCondorJob
from distributed.core import Status

from .base import ClusterError, FacilityDefaults, scheduler_host, setting

__all__ = ["CoffeaCasaCluster", "CoffeaCasaJob"]

TOKEN_NAME = "access_token"

# Docker universe: the worker listens on a fixed in-container port that HTCondor forwards to a
# host port it publishes in the job ad as dask_HostPort (possibly a few seconds after start).
# The worker must advertise host IP + host port. Plain sh without quotes, because the line goes
# through HTCondor's Arguments quoting.
CONTACT_PROLOGUE = [
    "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30;"
    " do while read k eq v; do case $k in dask_HostPort) CASA_PORT=$v;; esac;"
    " done < ${_CONDOR_JOB_AD:-/dev/null}; test -n \"$CASA_PORT\" && break; sleep 1; done",
    "while read k eq v; do case $k in StartdIpAddr) v=${v#?<}; CASA_IP=${v%%:*};; esac;"
    " done < ${_CONDOR_MACHINE_AD:-/dev/null}",
]


def _split_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).strip().strip('"').split(",") if v.strip()]


class CoffeaCasaJob(HTCondorJob):
    """One HTCondor job running one Dask worker (under a nanny, except in a container), with
    shipped, encrypted secrets."""

    config_name = "coffea-casa"

    def __init__(self, scheduler=None, name=None, *, cluster_id: str = "",
                 secret_files: dict[str, str] | None = None, worker_image: str | None = None,
                 worker_port: int | None = None, nanny_port: int | None = None,
                 lifetime: str | None = None, lifetime_stagger: str | None = None,
                 worker_http: str = "127.0.0.1:0", security=None, worker_extra_args=None,
                 job_extra_directives=None, job_script_prologue=None, python=None,
                 log_directory=None, config_name=None, nanny=None, **kwargs):
        config_name = config_name or self.config_name

        def get(key, default=None):
            return dask.config.get(f"jobqueue.{config_name}.{key}", default)

        if nanny is None:
            # In a container the nanny would advertise its in-container address, which the
            # scheduler cannot reach (`dask worker` has no nanny contact address): run the
            # worker alone there; HTCondor and adapt replace a worker that dies.
            nanny = not worker_image and get("nanny", True)

        secret_files = dict(secret_files or {})
        args = list(worker_extra_args if worker_extra_args is not None
                    else get("worker-extra-args", []) or [])
        if security is not None:
            # The sandbox holds the transferred files under their base names.
            args += ["--tls-ca-file", Path(secret_files["ca"]).name,
                     "--tls-cert", Path(secret_files["worker"]).name,
                     "--tls-key", Path(secret_files["worker-key"]).name]
        args += ["--no-dashboard", "--dashboard-address", worker_http]
        if lifetime:
            args += ["--lifetime", str(lifetime), "--lifetime-stagger", str(lifetime_stagger or "0s")]
        prologue = list(job_script_prologue if job_script_prologue is not None
                        else get("job-script-prologue", []) or [])
        if worker_image:
            proto = "tls" if security is not None else "tcp"
            args += ["--worker-port", str(worker_port)]
            if nanny:
                args += ["--nanny-port", str(nanny_port)]
            args += [f"${{CASA_PORT:+--contact-address}} ${{CASA_PORT:+{proto}://$CASA_IP:$CASA_PORT}}"]
            python = python or get("python") or "python3"  # the image's, not ours
            prologue = CONTACT_PROLOGUE + prologue
        if "token" in secret_files:
            prologue.insert(0, f"export BEARER_TOKEN_FILE=$_CONDOR_SCRATCH_DIR/{TOKEN_NAME}")
        log_directory = log_directory if log_directory is not None else get("log-directory")
        if log_directory:
            log_directory = os.path.expandvars(os.path.expanduser(log_directory))
        super().__init__(scheduler, name, security=None, worker_extra_args=args,
                         job_extra_directives={}, job_script_prologue=prologue, python=python,
                         log_directory=log_directory, config_name=config_name, nanny=nanny, **kwargs)
        self.cluster_id = cluster_id
        self.secret_files = secret_files

        directives: dict[str, object] = {"batch_name": f"casa-{cluster_id[:12]}"}
        if worker_image:
            directives.update({"universe": "docker", "docker_image": worker_image,
                               "container_service_names": "dask,nanny" if nanny else "dask",
                               "dask_container_port": worker_port})
            if nanny:
                directives["nanny_container_port"] = nanny_port
        if secret_files:
            shipped = ", ".join(secret_files.values())
            directives.update({"should_transfer_files": "YES",
                               "when_to_transfer_output": "ON_EXIT_OR_EVICT",
                               "transfer_input_files": shipped, "encrypt_input_files": shipped})
        directives.update({
            "MY.CoffeaCasaWorkerType": '"dask"',
            "MY.CasaClusterId": f'"{cluster_id}"',
            "MY.DaskSchedulerAddress": f'"{scheduler}"',
        })
        directives.update(get("job-extra-directives", {}) or {})
        directives.update(job_extra_directives or {})
        self._check_secrets_encrypted(directives)
        self.job_header_dict.update(directives)

    def _check_secrets_encrypted(self, directives: dict) -> None:
        if not self.secret_files:
            return
        if str(directives.get("should_transfer_files", "YES")).upper() == "NO":
            raise ValueError("job_extra_directives set should_transfer_files = NO: the TLS "
                             "certificates and token could not reach the workers")
        shipped = {Path(p).name for p in _split_list(directives.get("transfer_input_files"))}
        encrypted = {Path(p).name for p in _split_list(directives.get("encrypt_input_files"))}
        for role, path in self.secret_files.items():
            name = Path(path).name
            if name not in shipped:
                raise ValueError(f"job_extra_directives' transfer_input_files drops the {role} "
                                 f"file {name}; keep it in the list")
            if name not in encrypted:
                raise ValueError(f"job_extra_directives' encrypt_input_files would ship the {role} "
                                 f"file {name} unencrypted; list it there too")

    async def start(self):
        try:
            await super().start()
        except Exception as e:
            # Failed, not created: SpecCluster.close() asserts on jobs left in Status.created.
            self.status = Status.failed
            self._event_finished.set()
            raise ClusterError(f"submitting worker {self.name} with "
                               f"{self.submit_command.strip()!r} failed: {e}") from e


class CoffeaCasaCluster(FacilityDefaults, HTCondorCluster):
    """An HTCondor Dask cluster with coffea-casa facility defaults.

    Parameters
    ----------
    security : distributed.Security, optional
        Use these certificates; default: the facility's (``casa-compute.tls-directory``) or a
        per-cluster CA generated now and deleted at close. ``tls=False`` disables TLS.
    worker_image : str, optional
        Run workers in this container (docker universe, the worker port forwarded and advertised
        as the host's address). There the worker runs without a nanny (``nanny=False``): a nanny
        would advertise its in-container address, which the scheduler cannot reach. Pass
        ``nanny=True`` only where the container shares the host network.
    scheduler_port, dashboard_port, worker_port, nanny_port : int, optional
        Fixed ports (defaults in ``casa-compute.htcondor``; 0 means any free port).
    token : path, "auto" or None
        Bearer token file shipped (encrypted) to workers as ``$BEARER_TOKEN_FILE``.
    lifetime : str, optional
        Worker ``--lifetime``; with ``adapt`` retired workers are replaced.
    **job_kwargs
        Passed to :class:`dask_jobqueue.HTCondorCluster` (cores, memory, disk, ...).
    """

    job_cls = CoffeaCasaJob
    config_name = "coffea-casa"
    _casa_kind = "htcondor"

    def __init__(self, *, security=None, tls: bool | None = None, worker_image: str | None = None,
                 scheduler_port: int | None = None, dashboard_port: int | None = None,
                 worker_port: int | None = None, nanny_port: int | None = None,
                 token="auto", lifetime: str | None = None, lost_worker_timeout: str | None = None,
                 host: str | None = None, scheduler_options: dict | None = None, **job_kwargs):
        kind = self._casa_kind
        host = host or scheduler_host()
        self._casa_setup(security=security, tls=tls, lost_worker_timeout=lost_worker_timeout,
                         hosts=[host])
        try:
            sec = self._casa_security
            secret_files: dict[str, str] = {}
            if sec is not None:
                secret_files = {"ca": sec.tls_ca_file, "worker": sec.tls_worker_cert,
                                "worker-key": sec.tls_worker_key or sec.tls_worker_cert}
                if secret_files["worker-key"] == secret_files["worker"]:
                    del secret_files["worker-key"]
                if not all(secret_files.values()):
                    raise ClusterError("security needs tls_ca_file and tls_worker_cert files "
                                       "to ship to HTCondor workers")
            copy = self._casa_token_copy(token, TOKEN_NAME)  # fixed name in the sandbox, mode 0600
            if copy is not None:
                secret_files["token"] = str(copy)
            opts = self._casa_scheduler_options(host, scheduler_port, dashboard_port, scheduler_options)
            job_kwargs.setdefault("worker_image", worker_image or setting("worker-image", kind))
            job_kwargs.update(
                cluster_id=self.cluster_id, secret_files=secret_files,
                worker_port=setting("worker-port", kind) if worker_port is None else worker_port,
                nanny_port=setting("nanny-port", kind) if nanny_port is None else nanny_port,
                lifetime=lifetime or setting("lifetime", kind),
                lifetime_stagger=setting("lifetime-stagger", kind),
                worker_http=setting("worker-http", kind))
            super().__init__(security=sec, protocol="tls://" if sec is not None else None,
                             scheduler_options=opts, config_name=self.config_name, **job_kwargs)
        except BaseException:
            self._casa_cleanup()
            raise

    def _check_submit(self) -> None:
        cmd = shlex.split(self._dummy_job.submit_command)[0]
        if shutil.which(cmd) is None:
            raise ClusterError(
                f"{cmd!r} is not on PATH: this machine cannot submit HTCondor jobs. Run on a "
                "facility submit node, or use casa_compute.cluster(kind='local'|'slurm')")

    def scale(self, n=None, jobs=0, memory=None, cores=None):
        if n or jobs or memory or cores:
            self._check_submit()
        return super().scale(n, jobs=jobs, memory=memory, cores=cores)

    def adapt(self, *args, **kwargs):
        self._check_submit()
        return super().adapt(*args, **kwargs)

    def __repr__(self) -> str:
        try:
            addr = self.scheduler_address
        except Exception:
            addr = "?"
        return f"<CoffeaCasaCluster {self.cluster_id[:12]} {addr} workers={len(self.workers)}>"
