"""Dask clusters with facility defaults, chosen by one factory: :func:`cluster`.

>>> import casa_compute
>>> with casa_compute.cluster("local", n_workers=2) as c: ...
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import ClusterError, ensure_config, setting

if TYPE_CHECKING:
    from dask_gateway import GatewayCluster
    from distributed.deploy.spec import SpecCluster

    from casa_compute.types import ClusterKind

__all__ = ["cluster", "detect_kind", "KINDS", "ClusterError"]

ensure_config()  # like dask_jobqueue: importing the package registers its config defaults

KINDS: dict[str, str] = {
    "local": "casa_compute.clusters.local:CasaLocalCluster",
    "slurm": "casa_compute.clusters.slurm:CasaSLURMCluster",
    "htcondor": "casa_compute.clusters.coffea_casa:CoffeaCasaCluster",
    "gateway": "casa_compute.clusters.gateway:CasaGatewayCluster",
    "facility": "casa_compute.clusters.gateway:CasaGatewayCluster",  # the facility's gateway
}


def detect_kind() -> str:
    """htcondor at a facility (condor_submit and a facility CA), slurm where Slurm is
    configured (``$SLURM_CONF`` or /etc/slurm/slurm.conf, and sbatch), else local."""
    tls_dir = setting("tls-directory")
    if shutil.which("condor_submit") and tls_dir and Path(tls_dir, "ca.pem").is_file():
        return "htcondor"
    conf = os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
    if shutil.which("sbatch") and Path(conf).is_file():
        return "slurm"
    return "local"


def cluster(kind: ClusterKind | str | None = None, **kwargs: Any) -> SpecCluster | GatewayCluster:
    """Create a cluster of ``kind`` ("auto", "local", "slurm", "htcondor", "gateway" or
    "facility"; default from dask config ``casa-compute.kind``). Keyword arguments go to the
    cluster class.

    Returns
    -------
    distributed.SpecCluster or dask_gateway.GatewayCluster
        A :class:`CasaLocalCluster`, :class:`CasaSLURMCluster` or :class:`CoffeaCasaCluster`,
        or for "gateway"/"facility" a :class:`CasaGatewayCluster` (a new cluster of the Dask
        Gateway, adaptive from 0 workers); a context manager that closes the cluster.
    """
    import importlib

    ensure_config()
    kind = kind or setting("kind") or "auto"
    if kind == "auto":
        kind = detect_kind()
    try:
        target = KINDS[str(kind)]
    except KeyError:
        raise ClusterError(f"unknown cluster kind {kind!r}; choose one of "
                           f"{['auto', *KINDS]}") from None
    module, _, name = target.partition(":")
    cls: type[SpecCluster | GatewayCluster] = getattr(importlib.import_module(module), name)
    return cls(**kwargs)
