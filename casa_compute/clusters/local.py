"""``CasaLocalCluster``: a ``LocalCluster`` with the casa defaults (loopback, TLS)."""

from __future__ import annotations

from distributed import LocalCluster

from .base import FacilityDefaults, setting

__all__ = ["CasaLocalCluster"]


class CasaLocalCluster(FacilityDefaults, LocalCluster):
    """Worker processes on this machine; every listener on 127.0.0.1; TLS unless ``tls=False``.

    Keyword arguments not listed go to :class:`distributed.LocalCluster`.
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
