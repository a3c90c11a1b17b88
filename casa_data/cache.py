"""Warm an XCache for a dataset and report what it holds.

>>> casa_data.prefetch("cms/dimuon-2012")          # reads every file through the cache, with a progress bar
>>> for f in casa_data.cache_status("cms/dimuon-2012"):
...     print(f)                                   # /store/...: cached 3.6/3.6 MB (100%)

How much of a file is cached comes from the cache's own files when the ``xcache`` path's
``cache_dir`` option points at the cache's local root (a facility-local cache: the XCache writes
``<cache_dir>/<lfn>`` as a sparse file, so its allocated blocks are the cached bytes); otherwise
from the server, which only tells fully cached files (mode 0644) from the rest.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .access import Candidate, RangeReader, Replicas
from .errors import CasaError

__all__ = ["prefetch", "cache_status", "CachedFile"]

log = logging.getLogger("casa_data")
_CHUNK = 8 << 20  # requests of 1-8 MiB are what the XRootD bindings serve fastest


@dataclass(frozen=True)
class CachedFile:
    """How much of one file the XCache holds (``cached_bytes`` None when only known as yes/no)."""

    lfn: str
    url: str
    size: int | None
    cached_bytes: int | None
    complete: bool

    @property
    def fraction(self) -> float | None:
        if self.cached_bytes is None or not self.size:
            return 1.0 if self.complete else None
        return min(1.0, self.cached_bytes / self.size)

    @property
    def state(self) -> str:
        if self.complete:
            return "cached"
        if self.cached_bytes:
            return "partial"
        return "not cached" if self.cached_bytes == 0 else "not (fully) cached"

    def __str__(self) -> str:
        if self.cached_bytes is None:
            return f"{self.lfn}: {self.state}"
        size = f"{self.size / 1e6:.1f}" if self.size else "?"
        return (f"{self.lfn}: {self.state} {self.cached_bytes / 1e6:.1f}/{size} MB"
                f" ({100 * (self.fraction or 0):.0f}%)")


def _xcache_files(dataset: Any, catalog: Any = None) -> list[tuple[str, str, Any, int | None]]:
    """(lfn, url, path, size) of every file's XCache replica."""
    from .dataset import Dataset
    from .dataset import open as open_dataset

    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset, via="xcache", catalog=catalog)
    out = []
    for f in ds.resolved:
        cands = [c for c in f.candidates if c.via == "xcache"]
        if not cands:
            raise CasaError(f"dataset {ds.name!r}: {f.lfn} has no XCache replica; add a site rule with via: xcache")
        out.append((f.lfn, cands[0].url, cands[0].path, f.size))
    return out


def _status(lfn: str, url: str, path: Any, size: int | None) -> CachedFile:
    local = path.cache_file(url)
    if local is not None:
        try:
            st = os.stat(local)
        except FileNotFoundError:
            return CachedFile(lfn, url, size, 0, False)
        if not size:
            try:  # the cache file grows block by block: ask the server for the real size
                size = path.size(url)
            except Exception:  # noqa: BLE001 - origin down: the cache file's size is the best we have
                size = st.st_size
        cached = min(st.st_blocks * 512, size)  # the cache file is sparse: allocated = downloaded
        complete = os.path.exists(local + ".cinfo") and cached >= size
        return CachedFile(lfn, url, size, cached, complete)
    info = Replicas(lfn, [Candidate(url, path)]).call(lambda c: c.path.filesystem(c.url).info(_lfn(c.url)))
    complete = bool(info.get("mode", 0) & 0o777)  # XCache reports mode 0 until a file is complete
    return CachedFile(lfn, url, size or info.get("size"), None, complete)


def _lfn(url: str) -> str:
    from urllib.parse import urlsplit

    return "/" + urlsplit(url).path.lstrip("/")


def cache_status(dataset: Any, catalog: Any = None) -> list[CachedFile]:
    """Per file of ``dataset`` (name, Dataset or paths): whether and how much the XCache holds."""
    return [_status(*f) for f in _xcache_files(dataset, catalog)]


def prefetch(dataset: Any, catalog: Any = None, progress: bool = True, workers: int = 2,
             wait: float = 10.0) -> list[CachedFile]:
    """Read every file of ``dataset`` through the XCache so later reads are warm.

    Shows a rich progress bar (bytes) unless ``progress=False``; returns :func:`cache_status`
    once the cache reports every file complete (or after ``wait`` seconds).
    Reads go through :mod:`casa_data.access`: errors name the file and the cause (token,
    origin down, missing file) as casa errors.
    """
    files = _xcache_files(dataset, catalog)
    sizes = {}
    for lfn, url, path, size in files:
        sizes[url] = size or Replicas(lfn, [Candidate(url, path)]).call(lambda c: c.path.size(c.url))
    total = sum(sizes.values())

    bar: Any = None
    task = None
    if progress:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        bar = Progress(TextColumn("prefetch"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                       TimeRemainingColumn())
        task = bar.add_task("prefetch", total=total)
        bar.start()

    def warm(item: tuple[str, str, Any, int | None]) -> None:
        lfn, url, path, _ = item
        reader = RangeReader(Replicas(lfn, [Candidate(url, path)]))  # errors translated on every read
        try:
            for start in range(0, reader.size, _CHUNK):
                data = reader.fetch(start, start + _CHUNK)
                if bar is not None:
                    bar.advance(task, len(data))
        finally:
            reader.close()

    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(warm, files))
    finally:
        if bar is not None:
            bar.stop()
    log.info("prefetched %d file(s), %.1f MB, of %s into the XCache", len(files), total / 1e6,
             getattr(dataset, "name", dataset))
    # The cache writes blocks to disk asynchronously: give it a moment to report them.
    deadline = time.monotonic() + wait
    while True:
        status = [_status(lfn, url, path, sizes[url]) for lfn, url, path, _ in files]
        if all(s.complete for s in status) or time.monotonic() > deadline:
            return status
        time.sleep(0.1)
