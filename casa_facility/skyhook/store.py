"""The file side of a Skyhook server: what it serves and how one file is read.

:class:`Store` maps request paths to files under the root (a directory or ``s3://bucket/prefix``)
and refuses paths that leave it; it lists data files, answers their schemas, sizes and row counts
(cached per file version), and :meth:`Store.scan` reads one file with the client-side readers
(:mod:`casa_data.readers`; Arrow IPC with pyarrow.dataset here) or fills its histogram, checking
the CPU budget (:mod:`.limits`) between batches.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from casa_data import readers
from casa_data.errors import CasaError, ObjectNotFoundError
from casa_data.resolver import Candidate
from casa_data.skyhook.protocol import Request, file_format, fill_values
from casa_facility.skyhook.limits import MAX_SCHEMA_COLUMNS, _Budget, _checked

__all__ = ["Store"]


class Store:
    """Files under a root (a directory or ``s3://bucket/prefix``), addressed by relative path."""

    def __init__(self, root: str, s3_options: dict[str, Any] | None = None):
        if root.startswith(("s3://", "s3a://")):
            from casa_data.paths.s3 import S3Path

            self.path: Any = S3Path(**(s3_options or {}))
            self.root = root.rstrip("/")
        else:
            from casa_data.paths.local import LocalPath

            self.path = LocalPath()
            self.root = os.path.realpath(os.path.expanduser(root))
            if not os.path.isdir(self.root):
                raise CasaError(f"Skyhook root {self.root} is not a directory")
        self._counts: dict[tuple, int] = {}  # (file, tree, size, mtime) -> rows
        self._lock = threading.Lock()

    def url(self, rel: str) -> str:
        """The URL of ``rel``; refuses paths that leave the root."""
        parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ObjectNotFoundError(f"{rel!r}: '..' is not allowed in Skyhook paths")
        url = "/".join([self.root, *parts])
        if not url.startswith("s3"):
            real = os.path.realpath(url)
            if real != self.root and not real.startswith(self.root + os.sep):
                raise ObjectNotFoundError(f"{rel!r} points outside the served directory")
        return url

    def real(self, rel: str) -> str:
        """``rel`` as the file it really is, relative to the root (symbolic links resolved): scopes
        are checked on this, so an in-root link cannot widen what a token may read."""
        url = self.url(rel)
        if url.startswith("s3"):
            return url[len(self.root):].strip("/")
        real = os.path.realpath(url)
        return "" if real == self.root else os.path.relpath(real, self.root).replace(os.sep, "/")

    def list(self, rel: str) -> list[str]:
        """Data files at ``rel`` (itself, or every Parquet/Arrow/ROOT file below it), sorted."""
        from pyarrow import fs as pafs

        afs, base = self.path.arrow_filesystem(self.url(rel))
        info = afs.get_file_info(base)
        if info.type == pafs.FileType.NotFound:
            raise ObjectNotFoundError(f"{rel or '/'} does not exist on this Skyhook server")
        if info.type == pafs.FileType.File:
            infos = [info]
        else:
            infos = afs.get_file_info(pafs.FileSelector(base, recursive=True))
        _, top = self.path.arrow_filesystem(self.root)
        top = top.rstrip("/")
        out = [i.path[len(top):].lstrip("/") for i in infos
               if i.type == pafs.FileType.File and file_format(i.path)]
        return sorted(out)

    def candidate(self, rel: str) -> Candidate:
        return Candidate(self.url(rel), self.path)

    def schema(self, req: Request, rel: str) -> pa.Schema:
        """The schema a scan of ``rel`` answers (the requested columns, in order)."""
        if req.hist is not None:
            return pa.schema([("value", pa.float64()), ("variance", pa.float64())])
        fmt = file_format(rel)
        cand = self.candidate(rel)
        if fmt in ("parquet", "ipc"):
            import pyarrow.dataset as pads

            fs, path = cand.path.arrow_filesystem(cand.url)
            full = pads.dataset(path, format=fmt, filesystem=fs).schema
        elif fmt == "root":
            cols = req.columns
            if cols is None or len(cols) > MAX_SCHEMA_COLUMNS:
                return pa.schema([])  # would read a basket of every branch: left to the scan
            with readers._open_root(cand) as f:  # one open for the schema (one entry) and the count
                t = readers._tree(f, req.tree, cand.url)
                self._remember_rows(rel, req.tree, int(t.num_entries))
                keys = set(readers._root_keys(t))
                arr = t.arrays([c for c in cols if c in keys], library="ak", entry_stop=1)
            full = readers._to_arrow(arr).schema
        else:
            return pa.schema([])
        if req.columns is None:
            return full
        return pa.schema([full.field(c) for c in req.columns if full.get_field_index(c) >= 0])

    def rows(self, rel: str, tree: str, root: bool = True) -> int | None:
        """Rows of one file: Parquet footer, Arrow IPC, ROOT ``num_entries`` (cached per file version;
        None for a ROOT file not yet counted when ``root`` is False: opening NanoAOD takes seconds)."""
        fmt = file_format(rel) or ""
        cand = self.candidate(rel)
        afs, path = cand.path.arrow_filesystem(cand.url)
        key = self._count_key(rel, tree)
        if key in self._counts:
            return self._counts[key]
        if fmt == "parquet":
            import pyarrow.parquet as pq

            with afs.open_input_file(path) as f:
                n = int(pq.ParquetFile(f).metadata.num_rows)
        elif fmt == "ipc":
            n = int(_ipc_dataset(cand).count_rows())
        elif not root:
            return None
        else:
            n = int(readers.count_events(cand, fmt, tree))  # ROOT: the tree's num_entries
        self._remember_rows(rel, tree, n)
        return n

    def _count_key(self, rel: str, tree: str) -> tuple:
        afs, path = self.path.arrow_filesystem(self.url(rel))
        st = afs.get_file_info(path)
        return (rel, tree, st.size, st.mtime_ns)

    def _remember_rows(self, rel: str, tree: str, n: int) -> None:
        key = self._count_key(rel, tree)
        with self._lock:
            if len(self._counts) > 10_000:
                self._counts.clear()
            self._counts[key] = n

    def size(self, rel: str) -> int:
        """Bytes of one file."""
        afs, path = self.path.arrow_filesystem(self.url(rel))
        return int(afs.get_file_info(path).size or 0)

    def scan(self, req: Request, budget: _Budget) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """The schema and batches of a scan of the file ``req.path`` (its histogram with ``hist``)."""
        fmt = file_format(req.path)
        if fmt is None:
            raise ObjectNotFoundError(f"{req.path!r} is not a Parquet, Arrow IPC or ROOT file")
        cand = self.candidate(req.path)
        if req.hist is not None:
            table = _histogram(cand, fmt, req, budget)
            return table.schema, iter(table.to_batches())
        flt = req.parsed_filter()
        if fmt == "ipc":
            it = _iter_ipc(cand, req.columns, flt, req.batch_size)
        else:
            it = readers.iter_arrow(cand, fmt, req.tree, req.columns, flt, req.batch_size)
        it = _checked(it, budget)
        first = next(it, None)
        if first is None:  # nothing passed: the schema a client-side read would give
            empty = _read_ipc(cand, req.columns, flt) if fmt == "ipc" else \
                readers.read_arrow(cand, fmt, req.tree, req.columns, flt)
            return empty.schema, iter(())

        def chain():
            yield first
            for b in it:
                yield b if b.schema.equals(first.schema) else b.cast(first.schema)

        return first.schema, chain()


# -- Arrow IPC (the readers cover Parquet and ROOT) ---------------------------------------------------
def _ipc_dataset(cand: Candidate):
    import pyarrow.dataset as pads

    fs, path = cand.path.arrow_filesystem(cand.url)
    return pads.dataset(path, format="ipc", filesystem=fs)


def _iter_ipc(cand: Candidate, columns, flt, step: int) -> Iterator[pa.RecordBatch]:
    dset = _ipc_dataset(cand)
    need = readers._wanted(dset.schema.names, columns, flt, cand.url)
    push = readers._arrow_pushdown(flt, dset.schema)
    if push is not None or flt is None:
        for b in dset.to_batches(columns=list(columns) if columns is not None else None, filter=push,
                                 batch_size=step):
            if b.num_rows:
                yield b
        return
    for b in dset.to_batches(columns=need, batch_size=step):
        arr = readers._apply_filter(readers._from_arrow(b), columns, flt)
        if len(arr):
            yield from readers._to_arrow(arr).to_batches()


def _read_ipc(cand: Candidate, columns, flt) -> pa.Table:
    batches = list(_iter_ipc(cand, columns, flt, 1 << 20))
    if batches:
        return pa.Table.from_batches(batches)
    dset = _ipc_dataset(cand)
    cols = columns if columns is not None else dset.schema.names
    return pa.Table.from_batches([], schema=pa.schema([dset.schema.field(c) for c in cols]))


# -- histograms -------------------------------------------------------------------------------------
def _histogram(cand: Candidate, fmt: str, req: Request, budget: _Budget | None = None) -> pa.Table:
    """Fill ``req.hist`` from the file; one row per bin including under/overflow."""
    import boost_histogram as bh

    spec = req.hist
    assert spec is not None
    expr, weight = spec.filters()
    need = sorted(expr.columns | (weight.columns if weight else set()))
    if not expr.columns:
        raise CasaError(f"histogram expression {spec.expr!r} uses no column")
    flt = req.parsed_filter()
    h = bh.Histogram(spec.axis(), storage=bh.storage.Weight())
    if fmt == "ipc":
        chunks = (readers._from_arrow(b) for b in _iter_ipc(cand, need, flt, req.batch_size))
    else:
        chunks = readers.iter_awkward(cand, fmt, req.tree, need, flt, req.batch_size)
    for arr in chunks:
        values, weights = fill_values(arr, expr, weight)
        h.fill(values, weight=weights)
        if budget is not None:
            budget.check()
    view = h.view(flow=True)
    return pa.table({"value": pa.array(view.value), "variance": pa.array(view.variance)})
