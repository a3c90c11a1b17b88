"""Access methods ``casa bench`` compares, and the registry other packages add theirs to.

To add a method (XRootD, XCache cold/warm, ServiceX, Skyhook, ...):

1. Subclass :class:`BenchMethod`; set ``name`` and ``description``.
2. Implement :meth:`~BenchMethod.read_whole`, :meth:`~BenchMethod.read_columns` and
   :meth:`~BenchMethod.read_range` for a :class:`BenchFile` (and, if the path has a vector
   read, :meth:`~BenchMethod.read_ranges`).
3. Optionally override :meth:`~BenchMethod.setup` (copy the files where the method reads them,
   start a service) and :meth:`~BenchMethod.teardown`, and :meth:`~BenchMethod.counting`, a
   context manager for one untimed pass that counts the bytes the method transfers (by default
   the bytes its reads return).
4. A read the path does not have (a query service delivers columns, not a file's bytes) raises
   :class:`Unsupported` with the reason: the runner probes each read once, skips the unsupported
   ones and reports them as ``None`` / ``n/a`` with the reason under ``"unsupported"``.
5. Register it with :func:`register_method` or in the ``casa.bench`` entry-point group.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

from casa_data.errors import CasaError
from casa_data.registry import Registry

__all__ = ["BenchFile", "BenchContext", "BenchMethod", "Unsupported", "register_method", "get_method",
           "available_methods"]


class Unsupported(CasaError):
    """Raised by a method's read_whole / read_range / read_ranges / read_columns when that access
    does not exist on its path; the message is the reason (shown in the results)."""


@dataclass
class BenchFile:
    """One file of the benchmarked dataset: its local copy and facts to check results against."""

    local: Path
    size: int
    nevents: int
    format: str   # root | parquet
    tree: str = "Events"
    urls: dict[str, str] = field(default_factory=dict)  # method name -> URL it reads

    @property
    def name(self) -> str:
        return self.local.name


@dataclass
class BenchContext:
    """What methods share: the files, the columns, the S3 location and a scratch directory."""

    files: list[BenchFile]
    columns: list[str]
    s3_base: str | None = None          # s3://bucket/prefix holding copies of the files
    s3_options: dict[str, Any] = field(default_factory=dict)
    workdir: Path = Path(".")


class BenchMethod(ABC):
    """One way to get a dataset's bytes. See the module docstring."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    def __init__(self) -> None:
        self.counted = 0

    def setup(self, ctx: BenchContext) -> None:
        """Prepare (copy files, start services) before any measurement."""

    def teardown(self) -> None:
        """Undo :meth:`setup`."""

    @abstractmethod
    def read_whole(self, f: BenchFile) -> int:
        """Read every byte of ``f`` sequentially; return the bytes read."""

    @abstractmethod
    def read_columns(self, f: BenchFile, columns: list[str]) -> int:
        """Read ``columns`` of every event of ``f``; return the number of events."""

    @abstractmethod
    def read_range(self, f: BenchFile, start: int, length: int) -> int:
        """Read one byte range of ``f``; return the bytes read."""

    def read_ranges(self, items: list[tuple[BenchFile, int, int]]) -> int:
        """Read many ranges as one vector read, as uproot does (default: one by one)."""
        return sum(self.read_range(f, start, length) for f, start, length in items)

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Count transferred bytes into ``self.counted`` during one untimed pass."""
        self.counted = 0
        self._count = True
        try:
            yield
        finally:
            self._count = False

    def _add(self, n: int) -> int:
        if getattr(self, "_count", False):
            self.counted += n
        return n


# -- registry ------------------------------------------------------------------------------------
_REGISTRY: Registry[BenchMethod] = Registry("bench method", "casa.bench", {
    "local": "casa_bench.builtin:LocalMethod",
    "s3fs": "casa_bench.builtin:S3fsMethod",
    "s3fs-default": "casa_bench.builtin:S3fsDefaultMethod",
    "s3-arrow": "casa_bench.builtin:ArrowS3Method",
    "xrootd": "casa_bench.xrootd:XRootDMethod",
    "xcache-cold": "casa_bench.xrootd:XCacheColdMethod",
    "xcache-warm": "casa_bench.xrootd:XCacheWarmMethod",
    "skyhook": "casa_bench.skyhook:SkyhookMethod",
    "servicex": "casa_bench.servicex:ServiceXMethod",
})


def register_method(name: str, target: str | type[BenchMethod]) -> None:
    """Register a :class:`BenchMethod` class (or ``"module:Class"``) under ``name``."""
    _REGISTRY.register(name, target)


def available_methods() -> list[str]:
    return _REGISTRY.names()


def get_method(name: str) -> BenchMethod:
    return _REGISTRY.load(name)()


def file_size(path: str | os.PathLike) -> int:
    return os.path.getsize(path)
