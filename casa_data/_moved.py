"""Old import paths of modules that moved out of the client packages (kept for one release).

``casa_data.services``, the Skyhook server, the ServiceX endpoint, the benchmark harness and the
command line moved to ``casa_facility``, ``casa_bench`` and ``casa_cli`` (see the README's Layout).
Importing an old name still works, with a :class:`DeprecationWarning` naming the new one. The
targets are strings: the client packages never import the service packages.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

__all__ = ["MOVED", "install"]

#: old module -> new module (a prefix maps its submodules too)
MOVED: dict[str, str] = {
    "casa_data.services": "casa_facility.services",
    "casa_data.skyhook.server": "casa_facility.skyhook.server",
    "casa_data.skyhook.auth": "casa_facility.skyhook.auth",
    "casa_data.servicex.app": "casa_facility.servicex.app",
    "casa_data.servicex.scheduler": "casa_facility.servicex.scheduler",
    "casa_data.servicex.store": "casa_facility.servicex.store",
    "casa_data.servicex.transform": "casa_facility.servicex.transform",
    "casa_data.servicex.cli": "casa_cli.servicex",
    "casa_data.bench.cli": "casa_cli.bench",
    "casa_data.bench": "casa_bench",
    "casa_data.cli": "casa_cli.data",
    "casa_compute.services.slurm": "casa_facility.services.slurm",
    "casa_compute.services": "casa_facility.services",
    "casa_compute.cli": "casa_cli.main",
    "casa_compute.compute_cli": "casa_cli.compute",
    "casa_compute.facility.cli": "casa_cli.facility",
    "casa_compute.facility.supervisor": "casa_facility.supervisor",
    "casa_compute.facility": "casa_facility.lifecycle",
    "casa_compute.pipeline.cli": "casa_cli.run",
    "casa_compute.demo": "casa_facility.demo",
}


def new_name(old: str) -> str | None:
    """The module ``old`` moved to, or None."""
    for prefix in sorted(MOVED, key=len, reverse=True):
        if old == prefix or old.startswith(prefix + "."):
            return MOVED[prefix] + old[len(prefix):]
    return None


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec: Any) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.target}; the old name goes away in the next release",
                      DeprecationWarning, stacklevel=3)
        from .extras import import_extra

        return import_extra(self.target)

    def exec_module(self, module: ModuleType) -> None:
        pass


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None):
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(new), is_package=True)


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
