"""What every casa cluster kind shares: defaults from ``jobqueue.yaml``, TLS, loopback binds,
a short lost-worker timeout, clean-up at close.

To add a cluster kind:

1. Put its defaults in ``casa_compute/jobqueue.yaml``: ``casa-compute.<kind>`` (ports, lifetime,
   TLS; read with :func:`setting`) and, for a dask-jobqueue kind, ``jobqueue.<config_name>``.
2. Subclass the dask cluster class together with :class:`FacilityDefaults` (mixin first) and set
   ``_casa_kind``.
3. In ``__init__`` call :meth:`FacilityDefaults._casa_setup` before the dask constructor and pass
   it ``security=self._casa_security`` (plus :meth:`_casa_scheduler_options` and
   :meth:`_casa_token_copy` for batch kinds); wrap the constructor in ``try/except`` calling
   :meth:`_casa_cleanup`.
4. Register the class in :data:`casa_compute.clusters.KINDS`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import Any

import dask
import yaml

from .tls import ClusterTLS

__all__ = ["ClusterError", "ensure_config", "setting", "scheduler_host", "find_token",
           "FacilityDefaults"]

_YAML = Path(__file__).resolve().parent.parent / "jobqueue.yaml"
_loaded = False


class ClusterError(RuntimeError):
    """A cluster could not be created, scaled or reached."""


def ensure_config() -> None:
    """Merge ``casa_compute/jobqueue.yaml`` into dask config as defaults (once)."""
    global _loaded
    if not _loaded:
        with open(_YAML) as f:
            dask.config.update_defaults(yaml.safe_load(f))
        _loaded = True


def setting(key: str, kind: str | None = None, default: Any = None) -> Any:
    """``casa-compute.<kind>.<key>`` if set, else ``casa-compute.<key>``, else ``default``."""
    ensure_config()
    if kind is not None:
        v = dask.config.get(f"casa-compute.{kind}.{key}", None)
        if v is not None:
            return v
    return dask.config.get(f"casa-compute.{key}", default)


def scheduler_host() -> str:
    """Where the scheduler binds and is contacted: config, ``$POD_IP``, ``$HOST_IP``, loopback."""
    return (setting("host") or os.environ.get("POD_IP") or os.environ.get("HOST_IP")
            or "127.0.0.1")


def find_token(spec: str | os.PathLike | None = "auto") -> Path | None:
    """The bearer-token file to forward: ``spec`` if a path, discovery if ``"auto"``."""
    if spec is None or spec is False:
        return None
    if spec != "auto":
        p = Path(os.path.expanduser(str(spec)))
        if not p.is_file():
            raise ClusterError(f"bearer token file {p} does not exist")
        return p
    from casa_data.tokens import token_sources

    # The files of WLCG bearer-token discovery, in its order ($BEARER_TOKEN itself is no file).
    for _label, path in token_sources()[1:]:
        if path is not None and path.is_file():
            return path
    return None


class FacilityDefaults:
    """Mixin: TLS material, a private temp dir and the lost-worker timeout of one cluster."""

    _casa_kind = "local"
    _casa_tls: ClusterTLS | None = None
    _casa_tmp: Path | None = None
    _casa_security = None

    def _casa_setup(self, *, security=None, tls: bool | None = None,
                    lost_worker_timeout: str | None = None, hosts: list[str] | None = None
                    ) -> None:
        ensure_config()
        self.cluster_id = uuid.uuid4().hex
        self._casa_lost_worker_timeout = (
            lost_worker_timeout or setting("lost-worker-timeout", self._casa_kind))
        self._casa_tmp = Path(tempfile.mkdtemp(prefix=f"casa-cluster-{self._casa_kind}-"))
        os.chmod(self._casa_tmp, 0o700)
        if tls is None:
            tls = security is not None or bool(setting("tls", self._casa_kind))
        if security is not None:
            self._casa_security = security
        elif tls:
            self._casa_tls = ClusterTLS.create(setting("tls-directory", self._casa_kind),
                                               hosts=hosts, workdir=self._casa_tmp)
            self._casa_security = self._casa_tls.security()
        # Removes generated keys even if the user never calls close().
        self._casa_finalizer = weakref.finalize(self, shutil.rmtree, str(self._casa_tmp), True)

    def _casa_scheduler_options(self, host: str, scheduler_port: int | None,
                                dashboard_port: int | None,
                                extra: dict[str, Any] | None) -> dict[str, Any]:
        """Scheduler bind address and ports (``casa-compute.<kind>``), then
        ``jobqueue.<config_name>.scheduler-options``, then ``extra``."""
        kind = self._casa_kind
        sport = setting("scheduler-port", kind) if scheduler_port is None else scheduler_port
        dport = setting("dashboard-port", kind) if dashboard_port is None else dashboard_port
        opts = {"host": host, "port": sport, "dashboard_address": f"{host}:{dport}"}
        config_name = getattr(self, "config_name", None)
        if config_name:
            opts.update(dask.config.get(f"jobqueue.{config_name}.scheduler-options", {}) or {})
        opts.update(extra or {})
        return opts

    def _casa_token_copy(self, token: str | os.PathLike[str] | None, name: str) -> Path | None:
        """A private 0600 copy of the bearer token to forward (``token="auto"``: the kind's
        ``token`` setting, then discovery), or None when there is none."""
        tok = find_token(token if token != "auto" else setting("token", self._casa_kind))
        if tok is None or self._casa_tmp is None:
            return None
        copy = self._casa_tmp / name
        shutil.copyfile(tok, copy)
        os.chmod(copy, 0o600)
        return copy

    def _casa_cleanup(self) -> None:
        if self._casa_tls is not None:
            self._casa_tls.cleanup()
        if self._casa_tmp is not None:
            shutil.rmtree(self._casa_tmp, ignore_errors=True)

    async def _close(self):
        try:
            await super()._close()
        finally:
            self._casa_cleanup()

    def _update_worker_status(self, op, msg):
        # Scoped, not global: other clusters in this process keep their own timeout.
        with dask.config.set({"distributed.deploy.lost-worker-timeout":
                              self._casa_lost_worker_timeout}):
            super()._update_worker_status(op, msg)
        if op == "remove":
            import asyncio

            from dask.utils import parse_timedelta

            delay = parse_timedelta(self._casa_lost_worker_timeout) + 0.5
            asyncio.get_running_loop().call_later(delay, self._casa_heal)

    def _casa_heal(self) -> None:
        """Replace workers that died while still planned (worker_spec): upstream only does it
        under ``adapt``; a fixed-size cluster would otherwise shrink for good."""
        from distributed.core import Status

        if self.status == Status.running and set(self.worker_spec) - set(self.workers):
            self._correct_state()

    @property
    def tls_files(self) -> dict[str, Path]:
        """CA and certificate files in use (empty without TLS)."""
        return dict(self._casa_tls.files) if self._casa_tls else {}
