"""``casa://<dataset>//<lfn>``: a catalog file by name, as a delivery path.

Reads go through the ``casa`` fsspec filesystem (:mod:`casa_data.fs`, found by protocol name):
it resolves the file's replicas and reads them through :mod:`casa_data.access` (order, health
marks, failover mid-read, errors translated), so ``casa_data.open("casa://...")`` raises the same
casa errors as the replica's own path would. Options (``paths: {casa: {via, catalog}}``) go to
the filesystem.
"""

from __future__ import annotations

from typing import Any

import fsspec

from .base import DeliveryPath

__all__ = ["CasaPath"]

_FS_OPTIONS = ("via", "catalog")


class CasaPath(DeliveryPath):
    """Catalog files by name, read through their replicas' own delivery paths."""

    name = "casa"
    schemes = ("casa",)

    def filesystem(self, url: str) -> fsspec.AbstractFileSystem:
        """The ``casa`` filesystem (fsspec's cached instance, as uproot gets it), its resolution
        dropped if the casa configuration changed since (``reset_config``)."""
        from ..config import get_config

        fs = fsspec.filesystem("casa", **{k: v for k, v in self.options.items() if k in _FS_OPTIONS})
        cfg = get_config()
        if getattr(fs, "_casa_config", None) is not cfg:
            fs.invalidate_cache()
            fs._casa_config = cfg
        return fs

    def reader_url(self, url: str) -> str:
        self.filesystem(url)  # readers (uproot, pyarrow) reach the same instance by URL
        return url

    def check(self, url: str, timeout: float = 5.0) -> None:
        """The file's first healthy replica answers (its size)."""
        self.size(url)

    def storage_options(self, url: str) -> dict[str, Any]:
        return {k: v for k, v in self.options.items() if k in _FS_OPTIONS}
