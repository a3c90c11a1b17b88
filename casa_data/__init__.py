"""casa_data: from a dataset name to files and columns, by the best delivery path.

>>> import casa_data
>>> ds = casa_data.open("demo/zmumu")             # a catalog name, paths, URLs or a glob
>>> ds.to_awkward(["Muon_pt"], filter="nMuon >= 2")

Heavy modules are imported on first use, so ``import casa_data`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import _moved

__version__ = "0.1.0"

_LAZY = {
    "open": "casa_data.dataset:open",
    "Dataset": "casa_data.dataset:Dataset",
    "Catalog": "casa_data.catalog:Catalog",
    "DatasetSpec": "casa_data.catalog:DatasetSpec",
    "get_catalog": "casa_data.catalog:get_catalog",
    "get_config": "casa_data.config:get_config",
    "reset_config": "casa_data.config:reset_config",
    "get_path": "casa_data.paths:get_path",
    "Filter": "casa_data.expr:Filter",
    "prefetch": "casa_data.cache:prefetch",
    "cache_status": "casa_data.cache:cache_status",
}

_moved.install()  # old import paths of moved modules, with a DeprecationWarning

__all__ = sorted(_LAZY) + ["errors", "__version__"]

if TYPE_CHECKING:  # pragma: no cover  (the lazy names, typed; "as" marks a re-export)
    from .cache import cache_status as cache_status
    from .cache import prefetch as prefetch
    from .catalog import Catalog as Catalog
    from .catalog import DatasetSpec as DatasetSpec
    from .catalog import get_catalog as get_catalog
    from .config import get_config as get_config
    from .config import reset_config as reset_config
    from .dataset import Dataset as Dataset
    from .dataset import open as open
    from .expr import Filter as Filter
    from .paths import get_path as get_path


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        if name == "errors":
            return importlib.import_module("casa_data.errors")
        raise AttributeError(f"module 'casa_data' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
