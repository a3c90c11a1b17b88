"""Local files: plain paths and ``file://`` URLs."""

from __future__ import annotations

import os
from typing import Any

import fsspec

from ..errors import ServiceError
from .base import DeliveryPath

__all__ = ["LocalPath", "local_path", "looks_like_path"]


def local_path(url: str) -> str:
    """``file:///a/b`` or ``/a/b`` or ``~/a`` -> ``/a/b``."""
    if url.startswith("file://"):
        url = url[len("file://"):]
    return os.path.expanduser(url)


def looks_like_path(s: str) -> bool:
    """Whether ``s`` is a path or URL rather than a catalog dataset name."""
    return "://" in s or s.startswith(("/", ".", "~")) or os.path.exists(s) or s.endswith(
        (".root", ".parquet", ".parq"))


class LocalPath(DeliveryPath):
    """Files on a local or network-mounted filesystem."""

    name = "local"
    schemes = ("file", "local")

    def filesystem(self, url: str) -> fsspec.AbstractFileSystem:
        return fsspec.filesystem("file")

    def check(self, url: str, timeout: float = 5.0) -> None:
        path = local_path(url)
        if not os.path.exists(path):
            raise ServiceError(f"{path} does not exist")
        if not os.access(path, os.R_OK):
            raise ServiceError(f"{path} is not readable by this user")

    def to_url(self, lfn: str, base: str, prefix: str) -> str:
        return os.path.join(local_path(base), lfn[len(prefix):].lstrip("/"))

    def reader_url(self, url: str) -> str:
        return local_path(url)

    def storage_options(self, url: str) -> dict[str, Any]:
        return {}

    def uproot_options(self, url: str) -> dict[str, Any]:
        """uproot reads local files through ``mmap``: its default (fsspec) hands every request to
        an I/O thread and waits for it, ~0.5 ms per branch read; lazily read NanoEvents make one
        request per branch (measured: 5% of a 4-branch dimuon loop over 10 files)."""
        from uproot.source.file import MemmapSource

        return {"handler": MemmapSource}

    def arrow_filesystem(self, url: str):
        from pyarrow.fs import LocalFileSystem

        return LocalFileSystem(), local_path(url)
