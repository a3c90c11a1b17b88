"""Dask Gateway for the facility: elastic, per-user Dask clusters on the batch system.

:class:`GatewayService` runs ``dask-gateway-server`` on 127.0.0.1 with

* the SLURM backend (``dask_gateway_server.backends.jobqueue.slurm``) on the facility's SLURM: a
  scheduler job and one job per worker, or, where there is no SLURM, local processes
  (``backend="local"``);
* :class:`~casa_facility.gateway_auth.WLCGAuthenticator`: the facility's WLCG tokens; the user is
  the token's subject and sees, scales and connects to their own clusters only;
* TLS everywhere: the API and dashboards over HTTPS (a CA of its own, in ``<workdir>/tls``), the
  scheduler proxy and every Dask connection over TLS with per-cluster credentials;
* cluster options with facility limits (:func:`cluster_options`): worker cores and memory,
  environment variables, the environment (python) workers run, idle timeouts, maximum workers.
  A request over a limit is refused, naming the option and the limit.

The gateway runs jobs as the facility's own account (no ``sudo``): users are separated by the
gateway (token subject), not by Unix accounts. :func:`start_for_facility` is what
``casa facility up`` calls.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import sys
import urllib.request
from pathlib import Path
from typing import Any

from dask_gateway_server.backends.jobqueue.slurm import SlurmBackend, SlurmClusterConfig
from dask_gateway_server.backends.local import LocalClusterConfig, UnsafeLocalBackend
from dask_gateway_server.options import Float, Integer, Mapping, Options, Select
from dask_gateway_server.traitlets import Type
from traitlets import Float as FloatTrait

from casa_data.errors import ServiceError
from casa_facility.services.base import Daemon, Part, Service

__all__ = ["GatewayService", "cluster_options", "configure", "start_for_facility", "kill_strays",
           "FACILITY_SCOPES", "DEFAULT_LIMITS", "DEFAULT_OPTIONS"]

SETTINGS_ENV = "CASA_GATEWAY_SETTINGS"

#: The scopes of the facility's user token: data (XCache, Skyhook, ServiceX) and compute (gateway).
FACILITY_SCOPES = "storage.read:/ compute.create compute.read compute.modify compute.cancel"

#: What one cluster may ask for at most (the gateway refuses more, naming the option and limit).
DEFAULT_LIMITS: dict[str, float] = {
    "worker_cores": 4, "worker_memory": 8.0, "max_workers": 8, "idle_timeout": 86400.0,
    "idle_worker_timeout": 3600.0, "environment": 64,
}
#: Defaults of the options (``worker_memory`` in GiB, timeouts in seconds).
DEFAULT_OPTIONS: dict[str, float] = {
    "worker_cores": 1, "worker_memory": 2.0, "max_workers": 8, "idle_timeout": 1800.0,
    "idle_worker_timeout": 60.0,
}
# Variables casa sets for every job; a user's environment option may not change them.
_RESERVED = re.compile(r"^(PATH|HOME|SLURM_.*|DASK_GATEWAY_.*|DASK_DISTRIBUTED__COMM__.*|DASK_CONFIG|"
                       r"SSL_CERT_FILE|LD_PRELOAD|LD_LIBRARY_PATH|PYTHONHOME|CASA_GATEWAY_.*)$")


# -- options --------------------------------------------------------------------------------------
def _over(field: str, value: Any, limit: Any, unit: str = "") -> ValueError:
    return ValueError(f"cluster option {field}={value}{unit} is over this facility's limit of "
                      f"{limit}{unit}; ask for at most {limit}{unit}")


class _LimitedInteger(Integer):
    def validate(self, x):
        if not isinstance(x, int) or isinstance(x, bool):
            raise TypeError(f"cluster option {self.field} must be an integer, got {x!r}")
        if self.max is not None and x > self.max:
            raise _over(self.field, x, self.max)
        if self.min is not None and x < self.min:
            raise ValueError(f"cluster option {self.field}={x} is below the minimum of {self.min}")
        return x


class _LimitedFloat(Float):
    unit = ""

    def __init__(self, *args, unit: str = "", **kwargs):
        self.unit = unit
        super().__init__(*args, **kwargs)

    def validate(self, x):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise TypeError(f"cluster option {self.field} must be a number, got {x!r}")
        x = float(x)
        if self.max is not None and x > self.max:
            raise _over(self.field, f"{x:g}", f"{self.max:g}", self.unit)
        if self.min is not None and x < self.min:
            raise ValueError(f"cluster option {self.field}={x:g}{self.unit} is below the minimum of "
                             f"{self.min:g}{self.unit}")
        return x


class _Environment(Mapping):
    limit = 64

    def validate(self, x):
        x = super().validate(x)
        if len(x) > self.limit:
            raise _over(self.field, f"<{len(x)} variables>", f"{self.limit} variables")
        out = {}
        for k, v in x.items():
            if not isinstance(k, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
                raise ValueError(f"cluster option environment: {k!r} is not a variable name")
            if _RESERVED.match(k):
                raise ValueError(f"cluster option environment: {k} is set by the facility and "
                                 "cannot be changed")
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                raise TypeError(f"cluster option environment: {k} must be a string, got {v!r}")
            out[k] = str(v)
        return out


def cluster_options(settings: dict[str, Any]) -> Options:
    """The options users may set, bounded by ``settings["limits"]``; values go to ClusterConfig."""
    lim = {**DEFAULT_LIMITS, **settings.get("limits", {})}
    dflt = {**DEFAULT_OPTIONS, **settings.get("defaults", {})}
    dflt = {k: min(v, lim[k]) if k in lim else v for k, v in dflt.items()}  # defaults within limits
    envs: dict[str, str] = settings.get("environments") or {"casa": sys.executable}
    env_field = _Environment("environment", label="Environment variables")
    env_field.limit = int(lim["environment"])

    def handler(opts, user):
        py = envs[opts.image]
        return {
            "worker_cores": opts.worker_cores, "worker_threads": opts.worker_cores,
            "worker_memory": int(opts.worker_memory * 2**30),
            "environment": dict(opts.environment),
            "idle_timeout": opts.idle_timeout, "idle_worker_timeout": opts.idle_worker_timeout,
            "cluster_max_workers": opts.max_workers,
            "scheduler_cmd": [py, "-m", "distributed.cli.dask_scheduler"],
            "worker_cmd": [py, "-m", "distributed.cli.dask_worker"],
        }

    return Options(
        _LimitedInteger("worker_cores", default=int(dflt["worker_cores"]), min=1, max=int(lim["worker_cores"]),
                        label="Worker cores"),
        _LimitedFloat("worker_memory", default=float(dflt["worker_memory"]), min=0.25,
                      max=float(lim["worker_memory"]), unit=" GiB", label="Worker memory (GiB)"),
        env_field,
        Select("image", list(envs), label="Worker environment (image)"),
        _LimitedFloat("idle_timeout", default=float(dflt["idle_timeout"]), min=0.0,
                      max=float(lim["idle_timeout"]), unit=" s", label="Idle cluster timeout (s, 0: never)"),
        _LimitedFloat("idle_worker_timeout", default=float(dflt["idle_worker_timeout"]), min=1.0,
                      max=float(lim["idle_worker_timeout"]), unit=" s", label="Idle worker timeout (s)"),
        _LimitedInteger("max_workers", default=int(dflt["max_workers"]), min=0, max=int(lim["max_workers"]),
                        label="Maximum workers (adapt and scale are bounded by it)"),
        handler=handler,
    )


# -- backends -------------------------------------------------------------------------------------
_settings_cache: dict[str, Any] = {}


def _settings() -> dict[str, Any]:
    if not _settings_cache:
        _settings_cache.update(json.loads(Path(os.environ[SETTINGS_ENV]).read_text()))
    return _settings_cache


class _Casa:
    """What casa changes in both backends: loopback binds, casa's preload (idle-worker time), the
    jobs' environment (no nanny MALLOC_TRIM_THRESHOLD_, see the notes), the CA of the API."""

    default_host = "127.0.0.1"

    def get_scheduler_command(self, cluster):
        cmd = list(super().get_scheduler_command(cluster))
        cmd[cmd.index("dask_gateway.scheduler_preload")] = "casa_facility.gateway_preload"
        return cmd + ["--casa-idle-worker-timeout", str(cluster.config.get("idle_worker_timeout", 0) or 0)]

    def get_worker_command(self, cluster, worker_name, scheduler_address=None):
        cmd = list(super().get_worker_command(cluster, worker_name, scheduler_address))
        # No nanny: it would double the start-up time of a worker job (two Python processes), and
        # the gateway replaces a worker that dies. The job's memory is SLURM's --mem. A worker
        # whose scheduler is gone exits after the death timeout instead of retrying forever.
        return cmd + ["--host", "127.0.0.1", "--local-directory", self._worker_dir(cluster), "--no-nanny",
                      "--death-timeout", "30"]

    def get_env(self, cluster):
        env = super().get_env(cluster)
        env.update(_settings().get("job_env", {}))
        return env

    def get_scheduler_env(self, cluster):
        env = super().get_scheduler_env(cluster)
        env["SSL_CERT_FILE"] = _settings()["tls"]["ca"]  # heartbeats to the HTTPS API
        return env


class CasaSlurmClusterConfig(SlurmClusterConfig):
    idle_worker_timeout = FloatTrait(60.0, min=0.0, config=True,
                                     help="Seconds an idle worker is kept before adapt releases it.")


class CasaSlurmBackend(_Casa, SlurmBackend):
    """SLURM jobs submitted as the facility's account, staged under the gateway's work dir."""

    cluster_config_class = Type("casa_facility.gateway.CasaSlurmClusterConfig",
                                klass="dask_gateway_server.backends.base.ClusterConfig", config=True)

    def _slurm_env(self) -> dict[str, str]:
        return {k: os.environ[k] for k in ("PATH", "SLURM_CONF", "HOME", "LANG") if k in os.environ}

    def get_staging_directory(self, cluster):
        return os.path.join(_settings()["staging"], cluster.username, cluster.name)

    # The job script runs the command with `exec`: the Python process is then the job's own, so
    # scancel's SIGTERM (and SIGKILL after KillWait) reach it. Without, /bin/sh dies first, the
    # worker is re-parented to init and escapes proctrack/linuxproc (it was seen running on,
    # retrying its vanished scheduler).
    def get_scheduler_command(self, cluster):
        return ["exec", *super().get_scheduler_command(cluster)]

    def get_worker_command(self, cluster, worker_name, scheduler_address=None):
        return ["exec", *super().get_worker_command(cluster, worker_name, scheduler_address)]

    def _worker_dir(self, cluster):
        return self.get_staging_directory(cluster)

    def get_env(self, cluster):
        return {**super().get_env(cluster), **self._slurm_env()}

    def get_stop_cmd_env(self, job_id):
        return [self.cancel_command, job_id], self._slurm_env()

    def get_status_cmd_env(self, job_ids):
        cmd, _ = super().get_status_cmd_env(job_ids)
        return cmd, self._slurm_env()

    async def _run(self, cmd, env, stdin=None):
        proc = await asyncio.create_subprocess_exec(
            *cmd, env=env, stdin=asyncio.subprocess.PIPE if stdin is not None else None,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    async def start_job(self, username, cmd, env, stdin, staging_dir=None, files=None):
        # Upstream runs a launcher process through `sudo -u <user>` (~1 s per job here): every
        # job is the facility account's, so stage and submit in-process.
        if staging_dir:
            os.makedirs(staging_dir, mode=0o700, exist_ok=False)
            for name, value in (files or {}).items():
                fd = os.open(os.path.join(staging_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(value)
        code, out, err = await self._run(cmd, env, stdin)
        if code != 0:
            raise Exception(f"sbatch failed ({code}): {err.strip() or out.strip()}")
        return self.parse_job_id(out)

    async def stop_job(self, username, job_id, staging_dir=None):
        if staging_dir and os.path.isdir(staging_dir):
            import shutil

            shutil.rmtree(staging_dir, ignore_errors=True)
        cmd, env = self.get_stop_cmd_env(job_id)
        code, _, err = await self._run(cmd, env)
        if code != 0 and "Job has finished" not in err and "Invalid job id" not in err:
            raise Exception(f"scancel {job_id} failed ({code}): {err.strip()}")


class CasaLocalClusterConfig(LocalClusterConfig):
    idle_worker_timeout = FloatTrait(60.0, min=0.0, config=True,
                                     help="Seconds an idle worker is kept before adapt releases it.")


class CasaLocalBackend(_Casa, UnsafeLocalBackend):
    """Local processes (for machines without a batch system), as the facility's account."""

    cluster_config_class = Type("casa_facility.gateway.CasaLocalClusterConfig",
                                klass="dask_gateway_server.backends.base.ClusterConfig", config=True)

    def _worker_dir(self, cluster):
        return cluster.state["workdir"]


def configure(c: Any, settings_path: str | os.PathLike[str]) -> None:
    """Fill the traitlets config ``c`` of ``dask-gateway-server`` from casa's settings file."""
    os.environ[SETTINGS_ENV] = str(settings_path)
    s = _settings()
    py = sys.executable
    c.DaskGateway.address = f"127.0.0.1:{s['api_port']}"
    c.DaskGateway.log_level = s.get("log_level", "INFO")
    c.DaskGateway.authenticator_class = "casa_facility.gateway_auth.WLCGAuthenticator"
    c.WLCGAuthenticator.issuer = s["issuer"]
    c.WLCGAuthenticator.jwks_file = s["jwks_file"]
    c.WLCGAuthenticator.audience = s.get("audience", "")
    c.WLCGAuthenticator.cache_max_age = 60
    c.Proxy.address = f"127.0.0.1:{s['proxy_port']}"
    c.Proxy.tcp_address = f"127.0.0.1:{s['tcp_port']}"
    c.Proxy.tls_cert, c.Proxy.tls_key = s["tls"]["cert"], s["tls"]["key"]
    c.DaskGateway.backend_class = ("casa_facility.gateway.CasaSlurmBackend" if s["backend"] == "slurm"
                                   else "casa_facility.gateway.CasaLocalBackend")
    c.Backend.cluster_options = cluster_options(s)
    c.DBBackendBase.api_url = f"https://127.0.0.1:{s['proxy_port']}/api"
    # Fast feedback on a small facility: heartbeats and job checks every few seconds.
    c.DBBackendBase.cluster_heartbeat_period = 5
    c.DBBackendBase.worker_status_period = 5
    c.DBBackendBase.cluster_status_period = 10
    c.DBBackendBase.cluster_start_timeout = 120
    c.DBBackendBase.worker_start_timeout = 120
    c.ClusterConfig.adaptive_period = 1.0
    c.ClusterConfig.scheduler_cmd = [py, "-m", "distributed.cli.dask_scheduler"]
    c.ClusterConfig.worker_cmd = [py, "-m", "distributed.cli.dask_worker"]
    c.SlurmClusterConfig.partition = s.get("partition", "")
    c.LocalBackend.clusters_directory = s["staging"]
    c.LocalBackend.inherited_environment = ["PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "HOME"]


# -- the launcher ---------------------------------------------------------------------------------
_CONFIG = '''# written by casa_facility.gateway.GatewayService
from casa_facility.gateway import configure

configure(c, {settings!r})
'''
# Worker processes without the nanny's MALLOC_TRIM_THRESHOLD_: any explicit value turns off
# glibc's dynamic mmap threshold and costs ~30% on uproot/awkward tasks (see the notes).
_DASK_YAML = """distributed:
  nanny:
    pre-spawn-environ:
      MALLOC_TRIM_THRESHOLD_: null
"""


class GatewayService(Service):
    """``dask-gateway-server`` (and its proxy) on 127.0.0.1, trusting one WLCG token issuer.

    ``issuer`` is a :class:`~casa_facility.services.pki.TestIssuer` (or give ``issuer_url`` and
    ``jwks``). ``backend``: ``"slurm"`` (``$SLURM_CONF`` must point at a running SLURM),
    ``"local"`` or ``"auto"`` (slurm when ``$SLURM_CONF`` is set and ``sbatch`` exists).
    ``limits`` and ``defaults`` update :data:`DEFAULT_LIMITS` and :data:`DEFAULT_OPTIONS`;
    ``environments`` names the pythons workers may run (option ``image``).
    """

    name = "dask-gateway"
    install_hint = "pip install 'casa-sdk[facility]' (dask-gateway-server[jobqueue])"

    def __init__(self, workdir: str | os.PathLike[str] | None = None, *, issuer: Any = None,
                 issuer_url: str | None = None, jwks: dict[str, Any] | None = None, audience: str = "",
                 backend: str = "auto", limits: dict[str, float] | None = None,
                 defaults: dict[str, float] | None = None, environments: dict[str, str] | None = None,
                 partition: str = "", startup_timeout: float = 60.0):
        super().__init__(workdir)
        if issuer is not None:
            issuer_url, jwks = issuer.issuer, issuer.jwks()
        if not issuer_url or not jwks:
            raise ServiceError("dask-gateway: give the token issuer (issuer=, or issuer_url= and jwks=)")
        self.issuer_url, self.jwks, self.audience = issuer_url, jwks, audience
        if backend == "auto":
            import shutil

            backend = "slurm" if os.environ.get("SLURM_CONF") and shutil.which("sbatch") else "local"
        if backend not in ("slurm", "local"):
            raise ServiceError(f"dask-gateway: backend {backend!r} is neither 'slurm' nor 'local'")
        self.backend = backend
        self.limits, self.defaults = dict(limits or {}), dict(defaults or {})
        self.environments = environments or {"casa": sys.executable}
        self.partition = partition
        self.startup_timeout = startup_timeout

    def check_binary(self) -> str:
        import dask_gateway_server

        proxy = Path(dask_gateway_server.__file__).parent / "proxy" / "dask-gateway-proxy"
        if not proxy.is_file():
            raise ServiceError(f"dask-gateway: the proxy binary {proxy} is missing; {self.install_hint}")
        return str(proxy)

    binary = "dask-gateway-proxy"  # found by check_binary, not on $PATH

    def check_binaries(self) -> None:
        self.check_binary()
        if self.backend == "slurm":
            import shutil

            missing = [b for b in ("sbatch", "squeue", "scancel") if shutil.which(b) is None]
            if missing or not os.environ.get("SLURM_CONF"):
                raise ServiceError(f"dask-gateway: the slurm backend needs {', '.join(missing) or 'SLURM_CONF'} "
                                   "(start casa_facility.services.slurm.SlurmService first, or backend='local')")

    # -- files and ports ----------------------------------------------------------------------
    @property
    def settings_path(self) -> Path:
        return self.workdir / "settings.json"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "tls" / "ca.pem"

    @property
    def address(self) -> str:
        """The gateway's HTTPS address (API, dashboards)."""
        return f"https://127.0.0.1:{self.ports['proxy']}"

    @property
    def proxy_address(self) -> str:
        """The scheduler proxy (TLS, routed by SNI to each cluster's scheduler)."""
        return f"gateway://127.0.0.1:{self.ports['tcp']}"

    def client_config(self) -> dict[str, str]:
        """What clients need: ``compute: {gateway: ...}`` in casa's configuration."""
        return {"address": self.address, "proxy_address": self.proxy_address, "ca": str(self.ca_file)}

    def prepare(self) -> None:
        from casa_compute.clusters.tls import generate_ca_and_leaves

        self.ports = {}
        self.allocate_ports("api", "proxy", "tcp")
        for sub in ("tls", "staging", "dask-config"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
            os.chmod(self.workdir / sub, 0o700)
        os.chmod(self.workdir, 0o700)
        tls = generate_ca_and_leaves(self.workdir / "tls", ["127.0.0.1"])
        (self.workdir / "jwks.json").write_text(json.dumps(self.jwks))
        (self.workdir / "dask-config" / "casa-workers.yaml").write_text(_DASK_YAML)
        job_env = {"DASK_CONFIG": str(self.workdir / "dask-config")}
        # Workers read casa's configuration where the facility wrote it (facility.yaml: the XCache's
        # CA, S3 endpoint...), also when the facility runs with its own config or data directories.
        for var in ("PYTHONPATH", "XDG_CONFIG_HOME", "CASA_DATA_DIR", "CASA_CONFIG", "CASA_CATALOG", "CASA_SITE",
                    "CASA_FACILITY_DIR"):
            if var in os.environ:
                job_env[var] = os.environ[var]
        settings = {
            "api_port": self.ports["api"], "proxy_port": self.ports["proxy"], "tcp_port": self.ports["tcp"],
            "tls": {"cert": str(tls["scheduler"]), "key": str(tls["scheduler-key"]), "ca": str(tls["ca"])},
            "issuer": self.issuer_url, "jwks_file": str(self.workdir / "jwks.json"), "audience": self.audience,
            "backend": self.backend, "staging": str(self.workdir / "staging"), "job_env": job_env,
            "limits": self.limits, "defaults": self.defaults, "environments": self.environments,
            "partition": self.partition,
        }
        self.settings_path.write_text(json.dumps(settings, indent=1))
        (self.workdir / "dask_gateway_config.py").write_text(_CONFIG.format(settings=str(self.settings_path)))

    def daemons(self) -> list[Part]:
        return [Daemon(self.name, [sys.executable, "-m", "dask_gateway_server", "-f",
                                   str(self.workdir / "dask_gateway_config.py")],
                       ready=self._healthy, log=self.log_path, poll=0.1)]

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.address}/api/health", timeout=2, context=self.ssl_context()) as r:
            return bool(r.status == 200)

    def after_stop(self) -> None:
        kill_strays(self.workdir)
        if self._own_workdir:
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)


def kill_strays(workdir: str | os.PathLike[str]) -> list[int]:
    """SIGKILL processes working in ``workdir`` (schedulers and workers of its clusters that
    outlived their jobs); their ids."""
    import signal

    root = str(Path(workdir).resolve())
    killed = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                cwd = os.readlink(d / "cwd").removesuffix(" (deleted)")
            except OSError:
                continue
            if cwd == root or cwd.startswith(root + os.sep):
                try:
                    os.kill(int(d.name), signal.SIGKILL)
                    killed.append(int(d.name))
                except OSError:
                    pass
    return killed


def start_for_facility(fac: Any) -> None:
    """``casa facility up``: a one-node SLURM (if installed) and the gateway on it, trusting the
    facility's token issuer; writes ``compute: {gateway: ...}`` into the facility config."""
    import shutil

    env_backend = "local"
    if shutil.which("slurmctld") and shutil.which("sbatch"):
        from casa_facility.services.slurm import SlurmService

        slurm = SlurmService(fac.dir / "slurm", cpus=16)
        # Runs last (stoppers run in reverse): a job process that outlived SLURM is ended too.
        fac.stoppers.append(lambda: kill_strays(fac.dir / "gateway"))
        slurm.start()
        fac.stoppers.append(slurm.stop)
        env_backend = "slurm"
        fac.services["slurm"] = {"url": str(slurm.conf), "ports": [slurm.ports["ctld_port"]],
                                 "pids": [p.pid for p in slurm.procs.values()]}
    # `casa facility up --workers N`: a user's cluster has at most N workers unless it asks for
    # more (up to the limit, raised to N if N is higher)
    workers = int(getattr(fac, "workers", DEFAULT_OPTIONS["max_workers"]))
    gw = GatewayService(fac.dir / "gateway", issuer=fac.issuer, backend=env_backend,
                        defaults={"max_workers": workers},
                        limits={"max_workers": max(workers, DEFAULT_LIMITS["max_workers"])})
    gw.start()
    fac.stoppers.append(gw.stop)
    fac.config["compute"] = {"gateway": gw.client_config()}
    fac.services["dask-gateway"] = {"url": gw.address, "backend": env_backend,
                                    "ports": [gw.ports["proxy"], gw.ports["tcp"], gw.ports["api"]],
                                    "pids": [gw.proc.pid] if gw.proc else []}
