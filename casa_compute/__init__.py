"""casa_compute: coffea processors on elastic Dask clusters with facility defaults.

>>> import casa_compute, casa_data
>>> out, report = casa_compute.run(MyProcessor(), casa_data.open("demo/zmumu"), cluster="local")

Heavy modules (dask, coffea) are imported on first use, so ``import casa_compute`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from casa_data import _moved

_LAZY = {
    "run": "casa_compute.runner:run",
    "apply": "casa_compute.apply:apply",
    "RunResult": "casa_compute.report:RunResult",
    "RunError": "casa_compute.report:RunError",
    "Report": "casa_compute.report:Report",
    "cluster": "casa_compute.clusters:cluster",
    "ClusterError": "casa_compute.clusters.base:ClusterError",
    "CoffeaCasaCluster": "casa_compute.clusters.coffea_casa:CoffeaCasaCluster",
    "CasaSLURMCluster": "casa_compute.clusters.slurm:CasaSLURMCluster",
    "CasaLocalCluster": "casa_compute.clusters.local:CasaLocalCluster",
}

_moved.install()  # old import paths of moved modules, with a DeprecationWarning

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover  (the lazy names, typed; "as" marks a re-export)
    from .apply import apply as apply
    from .clusters import cluster as cluster
    from .clusters.base import ClusterError as ClusterError
    from .clusters.coffea_casa import CoffeaCasaCluster as CoffeaCasaCluster
    from .clusters.local import CasaLocalCluster as CasaLocalCluster
    from .clusters.slurm import CasaSLURMCluster as CasaSLURMCluster
    from .report import Report as Report
    from .report import RunError as RunError
    from .report import RunResult as RunResult
    from .runner import run as run


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'casa_compute' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
