"""``CasaSLURMCluster``: dask-jobqueue's ``SLURMCluster`` with the casa facility defaults."""

from __future__ import annotations

import os

import dask
from dask_jobqueue.slurm import SLURMCluster, SLURMJob

from .base import FacilityDefaults, scheduler_host, setting

__all__ = ["CasaSLURMCluster", "CasaSLURMJob"]


class CasaSLURMJob(SLURMJob):
    """A Slurm job running one Dask worker; defaults from ``jobqueue.casa-slurm``."""

    config_name = "casa-slurm"


class CasaSLURMCluster(FacilityDefaults, SLURMCluster):
    """A Slurm Dask cluster: TLS (per-cluster CA), loopback binds, ``--lifetime``, short
    lost-worker timeout, the bearer token exported to jobs (shared filesystem, mode 0600).

    Slurm clients must find the controller: set ``$SLURM_CONF`` before creating the cluster.
    Extra keyword arguments go to :class:`dask_jobqueue.SLURMCluster`.
    """

    job_cls = CasaSLURMJob
    config_name = "casa-slurm"
    _casa_kind = "slurm"

    def __init__(self, *, security=None, tls: bool | None = None,
                 scheduler_port: int | None = None, dashboard_port: int | None = None,
                 token="auto", lifetime: str | None = None, lost_worker_timeout: str | None = None,
                 host: str | None = None, scheduler_options: dict | None = None,
                 worker_extra_args: list[str] | None = None,
                 job_script_prologue: list[str] | None = None, **job_kwargs):
        kind = self._casa_kind
        host = host or scheduler_host()
        self._casa_setup(security=security, tls=tls, lost_worker_timeout=lost_worker_timeout,
                         hosts=[host])
        try:
            cfg = f"jobqueue.{self.config_name}"
            opts = self._casa_scheduler_options(host, scheduler_port, dashboard_port, scheduler_options)
            args = list(worker_extra_args if worker_extra_args is not None
                        else dask.config.get(f"{cfg}.worker-extra-args", []) or [])
            args += ["--no-dashboard", "--dashboard-address", setting("worker-http", kind)]
            lifetime = lifetime or setting("lifetime", kind)
            if lifetime:
                args += ["--lifetime", str(lifetime),
                         "--lifetime-stagger", str(setting("lifetime-stagger", kind))]
            if host.startswith("127.") or host == "localhost":
                args += ["--host", "127.0.0.1"]  # worker and nanny listen on loopback only
            prologue = list(job_script_prologue if job_script_prologue is not None
                            else dask.config.get(f"{cfg}.job-script-prologue", []) or [])
            copy = self._casa_token_copy(token, "access_token")
            if copy is not None:
                prologue.insert(0, f"export BEARER_TOKEN_FILE={copy}")
            logs = job_kwargs.pop("log_directory", None) or dask.config.get(f"{cfg}.log-directory")
            if logs:
                job_kwargs["log_directory"] = os.path.expandvars(os.path.expanduser(logs))
            sec = self._casa_security
            super().__init__(security=sec, protocol="tls://" if sec is not None else None,
                             scheduler_options=opts, worker_extra_args=args,
                             job_script_prologue=prologue, config_name=self.config_name,
                             **job_kwargs)
        except BaseException:
            self._casa_cleanup()
            raise
