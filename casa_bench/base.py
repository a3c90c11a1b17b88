"""The base classes of ``casa bench`` methods (see :mod:`casa_bench.methods` for the registry).

Plug-in methods import these from here, so the registry, which names them, never sits in an
import cycle with them.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from casa_data.errors import CasaError

__all__ = ["BenchFile", "BenchContext", "BenchMethod", "Unsupported", "file_size"]


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
    #: our own S3 server's processes (name -> pids), for server CPU figures
    s3_pids: dict[str, list[int]] = field(default_factory=dict)


class BenchMethod(ABC):
    """One way to get a dataset's bytes. See the module docstring."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: reads copies of the files in an S3 bucket (``casa bench`` then starts or finds one and uploads)
    needs_s3: ClassVar[bool] = False
    #: its ``setup`` starts no server, so a Dask worker can set up its own copy (``--workers``)
    portable: ClassVar[bool] = False

    def __init__(self) -> None:
        self.counted = 0      # bytes to the client in the last counting pass
        self.counted_up = 0   # bytes from the client (writes), where a relay counts them

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

    def write_object(self, key: str, data: bytes) -> int:
        """Write ``data`` as object ``key`` (under the method's own prefix); return the bytes written."""
        raise Unsupported(f"{self.name}: no object writes on this path")

    def server_processes(self) -> dict[str, list[int]]:
        """Our own server processes this method reads through (name -> pids), for CPU figures."""
        return {}

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Count transferred bytes into ``self.counted`` during one untimed pass."""
        self.counted = self.counted_up = 0
        self._count = True
        try:
            yield
        finally:
            self._count = False

    def _add(self, n: int) -> int:
        if getattr(self, "_count", False):
            self.counted += n
        return n


def file_size(path: str | os.PathLike) -> int:
    return os.path.getsize(path)
