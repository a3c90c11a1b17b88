"""From a dataset to work units: files (with replicas) and chunks (entry ranges).

ROOT (TTree, RNTuple) files are cut into even entry ranges of at most ``chunksize``; Parquet files
into their row groups (a row group larger than ``chunksize`` is cut further). Files are opened on
workers through the delivery path that resolved them (:func:`open_root`, :func:`open_parquet`,
both through :mod:`casa_data.access`: replica order, health marks, errors translated), so
credentials are looked up where the file is read and never travel inside a task.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FileItem", "Chunk", "files_of", "limit", "plan_chunks", "iter_chunks", "chunks_of", "open_and_count",
           "open_root", "open_parquet", "candidates"]


@dataclass(frozen=True)
class FileItem:
    """One input file: replicas ``(url, via)`` in the order to try (``via`` None: plain uproot)."""

    dataset: str
    replicas: tuple[tuple[str, str | None], ...]
    tree: str = "Events"
    format: str = "root"
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    nevents: int | None = None
    #: entry ranges from a preprocessed coffea fileset (``steps``): the chunks, as they are
    steps: tuple[tuple[int, int], ...] | None = None

    @property
    def url(self) -> str:
        return self.replicas[0][0]


@dataclass(frozen=True)
class Chunk:
    """Entries ``[start, stop)`` of one file."""

    index: int
    file: FileItem
    start: int
    stop: int

    @property
    def entries(self) -> int:
        return self.stop - self.start

    def __str__(self) -> str:
        return f"{self.file.url} entries [{self.start}, {self.stop})"


def _format_of(url: str) -> str:
    return "parquet" if url.lower().split("?")[0].endswith((".parquet", ".parq")) else "root"


def files_of(data: Any) -> list[FileItem]:
    """Normalise a casa_data ``Dataset``, a list of them, or a coffea fileset (a dict, plain or
    preprocessed, or a ``DataGroupSpec``); preprocessed ``steps`` are kept (they are the chunks)."""
    if hasattr(data, "model_dump") and not isinstance(data, dict):  # coffea DataGroupSpec / DatasetSpec
        data = data.model_dump()
        if "files" in data and not any(isinstance(v, dict) and "files" in v for v in data.values()):
            data = {"dataset": data}
    if isinstance(data, (list, tuple)):
        return [f for d in data for f in files_of(d)]
    if hasattr(data, "resolved") and hasattr(data, "fileset"):  # casa_data.Dataset
        return [
            FileItem(dataset=data.name, tree=data.tree, format=data.format,
                     metadata=dict(data.metadata), nevents=f.nevents,
                     replicas=tuple((c.url, c.path.name) for c in f.candidates))
            for f in data.resolved
        ]
    if isinstance(data, dict):
        out = []
        for name, spec in data.items():
            if hasattr(spec, "model_dump"):
                spec = spec.model_dump()
            files = spec.get("files", spec) if isinstance(spec, dict) else spec
            meta = dict(spec.get("metadata") or {}) if isinstance(spec, dict) else {}
            if isinstance(files, (list, tuple)):
                files = {f: spec.get("treename", "Events") if isinstance(spec, dict) else "Events"
                         for f in files}
            for url, tree in files.items():
                fmt, steps, nevents = _format_of(url), None, None
                if isinstance(tree, dict):  # coffea's {"object_path": ..., "steps": ..., "format": ...}
                    info = tree
                    tree = info.get("object_path") or "Events"
                    fmt = info.get("casa_format") or info.get("format") or fmt
                    if info.get("steps"):
                        steps = tuple((int(a), int(b)) for a, b in info["steps"])
                    nevents = info.get("num_entries")
                out.append(FileItem(dataset=name, replicas=((url, None),), tree=tree or "Events",
                                    format=fmt, metadata=meta, nevents=nevents, steps=steps))
        return out
    raise TypeError(f"cannot run on {type(data).__name__}: pass a casa_data Dataset, a list of "
                    "them or a coffea fileset {name: {'files': {url: tree}}} (or a DataGroupSpec)")


def limit(items: list[FileItem], max_files: int | None = None) -> list[FileItem]:
    """The first ``max_files`` files of each dataset (coffea's ``max_files``), order kept."""
    if max_files is None:
        return items
    if max_files < 1:
        raise ValueError(f"max_files must be >= 1, got {max_files}")
    seen: dict[str, int] = {}
    out = []
    for item in items:
        seen[item.dataset] = seen.get(item.dataset, 0) + 1
        if seen[item.dataset] <= max_files:
            out.append(item)
    return out


class CountingFile(io.RawIOBase):
    """A read-only file wrapper that counts the bytes read through it."""

    def __init__(self, raw):
        self.raw, self.bytes_read = raw, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.raw.read(len(b))
        n = len(data)
        b[:n] = data
        self.bytes_read += n
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        self.raw.close()
        super().close()


def candidates(item: FileItem) -> list[Any]:
    """The replicas of ``item`` as :class:`casa_data.access.Candidate` (``via`` None: the path
    serving the URL's scheme, else plain fsspec)."""
    return [_candidate(url, via) for url, via in item.replicas]


def _candidate(url: str, via: str | None):
    from casa_data.access import Candidate
    from casa_data.errors import CasaError
    from casa_data.paths import get_path, path_for_url

    if via is not None:
        return Candidate(url, get_path(via))
    try:
        return Candidate(url, path_for_url(url))
    except CasaError:  # a scheme no casa path serves (a coffea fileset's https://...)
        return Candidate(url, _plain_path())


def _plain_path():
    """A delivery path for any fsspec URL, without options (coffea filesets of other schemes)."""
    import fsspec

    from casa_data.paths.base import DeliveryPath

    class FsspecPath(DeliveryPath):
        name = "fsspec"
        schemes = ()

        def filesystem(self, url: str) -> fsspec.AbstractFileSystem:
            return fsspec.core.url_to_fs(url)[0]

        def check(self, url: str, timeout: float = 5.0) -> None:
            self.filesystem(url).info(url)

    return FsspecPath()


def open_root(url: str, via: str | None):
    """``uproot.open`` through the delivery path ``via`` (errors translated by casa_data.access)."""
    from casa_data.access import open_root as open_cand

    return open_cand(_candidate(url, via))


def open_parquet(url: str, via: str | None):
    """A ``pyarrow.parquet.ParquetFile`` over a :class:`CountingFile`."""
    import pyarrow.parquet as pq

    from casa_data.access import arrow_input_file

    raw = arrow_input_file(_candidate(url, via))
    counted = CountingFile(raw)
    return pq.ParquetFile(io.BufferedReader(counted, 1 << 20)), counted


def open_and_count(item: FileItem, keep_open: bool = False):
    """(entries or Parquet row-group sizes, url, via, open ROOT handle or None), trying replicas
    in order (:class:`casa_data.access.Replicas`); the handle is kept open only if ``keep_open``
    (the caller closes it)."""
    from casa_data.access import Replicas

    vias = dict(item.replicas)

    def count(cand):
        via = vias.get(cand.url)
        if item.format == "parquet":
            pf, _ = open_parquet(cand.url, via)
            with pf:
                md = pf.metadata
                return [md.row_group(i).num_rows for i in range(md.num_row_groups)], cand.url, via, None
        f = open_root(cand.url, via)
        try:
            n = int(f[item.tree].num_entries)
        except BaseException:
            f.close()
            raise
        if not keep_open:
            f.close()
            f = None
        return n, cand.url, via, f

    return Replicas(item.url, candidates(item), label=item.dataset).call(count)


def _split(start: int, stop: int, chunksize: int) -> list[tuple[int, int]]:
    n = max(1, math.ceil((stop - start) / chunksize))
    edges = [start + round(i * (stop - start) / n) for i in range(n + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def plan_chunks(items: list[FileItem], chunksize: int, max_workers: int = 8,
                max_chunks: int | None = None) -> tuple[list[Chunk], dict[FileItem, str]]:
    """Chunks of every readable file, and ``{file: error}`` for files that could not be opened."""
    bad: dict[FileItem, str] = {}
    chunks = list(iter_chunks(items, chunksize, bad, max_workers, max_chunks))
    return chunks, bad


def iter_chunks(items: list[FileItem], chunksize: int, bad: dict[FileItem, str], max_workers: int = 8,
                max_chunks: int | None = None) -> Iterator[Chunk]:
    """The chunks of :func:`plan_chunks` as each file is counted (in file order), so that a
    cluster starts on the first file while the client still opens the others; files that could
    not be opened go into ``bad`` (``{file: error}``) as they are met."""
    if chunksize <= 0:
        raise ValueError(f"chunksize must be positive, got {chunksize}")

    def safe(item):
        if item.format not in ("root", "rntuple", "parquet"):
            return None, f"format {item.format!r} is not supported by the runner"
        if item.steps is not None:
            return 0, None  # preprocessed: the steps are the chunks
        if item.nevents is not None and item.format != "parquet":
            return item.nevents, None
        key = _count_key(item)
        if key is not None and key in _COUNTS:
            return _COUNTS[key], None
        try:
            count = open_and_count(item)[0]
        except Exception as e:  # noqa: BLE001
            return None, str(e)
        if key is not None:
            _remember_count(key, count)
        return count, None

    index = 0
    # Remote files are counted by a thread pool (latency bound); local ones in order, here: a
    # pool's threads would only contend for the GIL, and the first chunks go out sooner.
    threads = 1 if all(_is_local(item) for item in items) else max(1, min(max_workers, len(items)))
    with contextlib.ExitStack() as stack:
        if threads > 1:
            counts: Iterator[tuple[Any, str | None]] = stack.enter_context(ThreadPoolExecutor(threads)).map(safe, items)
        else:
            counts = map(safe, items)
        for item, (count, err) in zip(items, counts):  # both keep the file order
            if err is not None:
                bad[item] = err
                continue
            chunks = chunks_of(item, count, chunksize, first_index=index, max_chunks=max_chunks)
            index += len(chunks)
            yield from chunks


#: entries (or Parquet row-group sizes) of local files, by (path, size, mtime, inode, tree, format): a
#: notebook re-running a cell on a cluster does not open every file again to plan its chunks
_COUNTS: dict[tuple[Any, ...], Any] = {}
_MAX_COUNTS = 100_000
_COUNTS_LOCK = threading.Lock()


def _count_key(item: FileItem) -> tuple[Any, ...] | None:
    """A key that changes when a local file does (None for remote files: never cached)."""
    if not _is_local(item):
        return None
    from casa_data.paths.local import local_path

    path = local_path(item.url)
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino, item.tree, item.format)


def _remember_count(key: tuple[Any, ...], count: Any) -> None:
    with _COUNTS_LOCK:
        if len(_COUNTS) >= _MAX_COUNTS:
            _COUNTS.pop(next(iter(_COUNTS)))
        _COUNTS[key] = count


def _is_local(item: FileItem) -> bool:
    """Every replica of ``item`` is a file on this machine's disk."""
    return all(via == "local" or (via is None and ("://" not in url or url.startswith("file://")))
               for url, via in item.replicas)


def chunks_of(item: FileItem, count: int | list[int], chunksize: int, first_index: int = 0,
              max_chunks: int | None = None) -> list[Chunk]:
    """Even entry ranges of at most ``chunksize``; Parquet ranges never span row groups.

    A preprocessed file's ``steps`` are its chunks as given; ``max_chunks``: only the first ones."""
    if item.steps is not None:
        ranges = [(a, b) for a, b in item.steps if b > a]
    elif isinstance(count, list):  # Parquet row groups
        ranges, pos = [], 0
        for n in count:
            ranges += _split(pos, pos + n, chunksize) if n else []
            pos += n
    else:
        ranges = _split(0, count, chunksize) if count else []
    if max_chunks is not None:
        ranges = ranges[:max_chunks]
    return [Chunk(first_index + i, item, a, b) for i, (a, b) in enumerate(ranges)]


@dataclass(frozen=True)
class ArrowChunk(Chunk):
    """Events delivered as Arrow (ServiceX, Skyhook, ``Dataset.iter_batches``): the data travel
    with the chunk. ``start``/``stop`` count events in the stream."""

    table: Any = field(default=None, hash=False, compare=False, repr=False)


def is_arrow(data: Any) -> bool:
    """A pyarrow Table/RecordBatch, or an iterator (not a list/dict/Dataset) of them."""
    import sys

    pa = sys.modules.get("pyarrow")
    if pa is not None and isinstance(data, (pa.Table, pa.RecordBatch)):
        return True
    return hasattr(data, "__next__")


def arrow_chunks(data: Any, dataset: str = "arrow", chunksize: int | None = None):
    """Yield :class:`ArrowChunk` from a Table, a RecordBatch or an iterator of them."""
    import pyarrow as pa

    items = [data] if isinstance(data, (pa.Table, pa.RecordBatch)) else data
    pos = index = 0
    item = FileItem(dataset=dataset, replicas=((f"arrow:{dataset}", "arrow"),), format="arrow")
    for batch in items:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        step = chunksize or max(1, table.num_rows)
        for off in range(0, table.num_rows, step):
            part = table.slice(off, step)
            yield ArrowChunk(index, item, pos, pos + part.num_rows, table=part)
            index += 1
            pos += part.num_rows
