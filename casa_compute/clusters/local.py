"""``CasaLocalCluster``: a ``LocalCluster`` with the casa defaults (loopback, TLS) and workers
tuned for uproot/awkward work (see :class:`CasaNanny`)."""

from __future__ import annotations

import copy
import os
from typing import Any

import dask
from distributed import LocalCluster, Nanny

from .base import FacilityDefaults, setting

__all__ = ["CasaLocalCluster", "CasaNanny", "worker_overrides"]


def worker_overrides(kind: str = "local") -> dict[str, Any]:
    """The dask config a casa local worker process starts with: ``casa-compute.<kind>.worker-environ``
    as ``distributed.nanny.pre-spawn-environ`` entries (None: not set) and the profiler switch."""
    out: dict[str, Any] = {}
    for var, value in (setting("worker-environ", kind) or {}).items():
        out[f"distributed.nanny.pre-spawn-environ.{var}"] = None if value is None else str(value)
    profile = setting("worker-profile", kind)
    if profile is not None:
        out["distributed.worker.profile.enabled"] = bool(profile)
    return out


def _initial_environ() -> set[str]:
    """Names in the environment this process was started with (Linux: /proc/self/environ)."""
    try:
        with open("/proc/self/environ", "rb") as f:
            return {item.split(b"=", 1)[0].decode(errors="replace") for item in f.read().split(b"\0") if item}
    except OSError:  # no /proc: treat every variable as the user's
        return set(os.environ)


class CasaNanny(Nanny):
    """A nanny whose worker process starts without ``MALLOC_TRIM_THRESHOLD_`` (and without the
    statistical profiler), per ``casa-compute.local`` in ``jobqueue.yaml``.

    distributed's nanny exports ``MALLOC_TRIM_THRESHOLD_=65536`` to its worker. Any explicit value
    turns off glibc's dynamic mmap threshold, so every buffer above 128 KiB is mmap'd and freed
    with munmap, and page-faulted again on the next chunk: a 100,000-event dimuon task took 0.15 s
    in a worker against 0.07 s in-process. The nanny reads the setting when it is created, so a
    worker it restarts, or one ``scale`` adds later, starts the same way. A variable the user set in
    the environment wins (distributed's rule).
    """

    _casa_kind = "local"

    async def instantiate(self):  # type: ignore[override]
        # A plain distributed nanny earlier in this process leaves its pre-spawn variables in
        # os.environ, and a spawned worker inherits them. Variables casa unsets are dropped for
        # the spawn unless they were in the environment this process started with (the user's).
        leaked = {var: os.environ[var] for var in self._casa_unset
                  if var in os.environ and var not in _initial_environ()}
        for var in leaked:
            del os.environ[var]
        try:
            return await super().instantiate()
        finally:
            for var, value in leaked.items():
                os.environ.setdefault(var, value)

    def __init__(self, *args: Any, config: dict | None = None, **kwargs: Any) -> None:
        self._casa_unset = [var for var, value in (setting("worker-environ", self._casa_kind) or {}).items()
                            if value is None]
        # The environment is read here (pre_spawn_env); the worker's config is a shallow merge
        # of the global one, so it gets a full copy taken while the overrides are in place.
        with dask.config.set(worker_overrides(self._casa_kind)):
            worker_config = dask.config.merge(copy.deepcopy(dask.config.config), config or {})
            super().__init__(*args, config=worker_config, **kwargs)


class CasaLocalCluster(FacilityDefaults, LocalCluster):
    """Worker processes on this machine; every listener on 127.0.0.1; TLS unless ``tls=False``.

    Workers are :class:`CasaNanny` processes (``worker_class=`` replaces it). Keyword arguments
    not listed go to :class:`distributed.LocalCluster`.
    """

    _casa_kind = "local"

    def __init__(self, n_workers: int | None = None, *, threads_per_worker: int | None = None,
                 memory_limit=None, security=None, tls: bool | None = None,
                 scheduler_port: int | None = None, dashboard_port: int | None = None,
                 lost_worker_timeout: str | None = None, **kwargs):
        kind = self._casa_kind
        self._casa_setup(security=security, tls=tls, lost_worker_timeout=lost_worker_timeout,
                         hosts=["127.0.0.1"])
        try:
            dport = setting("dashboard-port", kind) if dashboard_port is None else dashboard_port
            sec = self._casa_security
            kwargs.setdefault("host", "127.0.0.1")
            kwargs.setdefault("dashboard_address", f"127.0.0.1:{dport}")
            kwargs.setdefault("worker_dashboard_address", setting("worker-http", kind))
            if kwargs.get("processes", True):
                kwargs.setdefault("worker_class", CasaNanny)
            super().__init__(
                n_workers=setting("n-workers", kind) if n_workers is None else n_workers,
                threads_per_worker=threads_per_worker or setting("threads-per-worker", kind),
                memory_limit=memory_limit or setting("memory-limit", kind),
                scheduler_port=setting("scheduler-port", kind) if scheduler_port is None
                else scheduler_port,
                security=sec, protocol="tls://" if sec is not None else None, **kwargs)
        except BaseException:
            self._casa_cleanup()
            raise
