"""The built-in bench methods: local disk, S3 through s3fs, S3 through pyarrow's native client.

Readers: ROOT columns through uproot, Parquet columns through ``pyarrow.parquet``; each method
hands them its own file access (a path, s3fs storage options, an Arrow file).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterator
from typing import Any

from casa_bench.base import BenchContext, BenchFile, BenchMethod

__all__ = ["LocalMethod", "S3fsMethod", "S3fsDefaultMethod", "ArrowS3Method", "CountingFile"]

CHUNK = 8 << 20
_LOCK = threading.Lock()


class CountingFile(io.RawIOBase):
    """A read-only file wrapper that counts the bytes read through it."""

    def __init__(self, raw, owner: BenchMethod):
        self._raw, self._owner = raw, owner

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._raw.seek(pos, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._owner._add(len(data))
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


def _columns_root(source, tree: str, columns: list[str], **options) -> int:
    import uproot

    with uproot.open(source, **options) as f:
        arrays = f[tree].arrays(columns, library="ak")
    return len(arrays)


def _columns_parquet(source, columns: list[str], filesystem=None) -> int:
    import pyarrow.parquet as pq

    return pq.read_table(source, columns=columns, filesystem=filesystem).num_rows


class LocalMethod(BenchMethod):
    """Plain reads from local disk (page cache warm after the first repetition)."""

    name = "local"
    description = "local disk (uproot memmap / pyarrow local files)"
    portable = True

    def read_whole(self, f: BenchFile) -> int:
        n = 0
        with open(f.local, "rb", buffering=0) as fh:
            while block := fh.read(CHUNK):
                n += len(block)
        return self._add(n)

    def read_columns(self, f: BenchFile, columns: list[str]) -> int:
        if getattr(self, "_count", False):  # route the reads through a counter
            with CountingFile(open(f.local, "rb", buffering=0), self) as fh:
                if f.format == "parquet":
                    return _columns_parquet(fh, columns)
                return _columns_root(fh, f.tree, columns)
        if f.format == "parquet":
            return _columns_parquet(str(f.local), columns)
        return _columns_root(str(f.local), f.tree, columns)

    def setup(self, ctx: BenchContext) -> None:
        self._fds = {f.local: os.open(f.local, os.O_RDONLY) for f in ctx.files}

    def teardown(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            os.close(fd)
        self._fds = {}

    def read_range(self, f: BenchFile, start: int, length: int) -> int:
        return self._add(len(os.pread(self._fds[f.local], length, start)))


class _S3Method(BenchMethod):
    """Shared set-up: the S3 path, the object URL of each file, a counting relay when asked."""

    needs_s3 = True
    portable = True
    #: objects at least this big are written as multipart uploads of this part size
    multipart_part = 8 << 20

    def setup(self, ctx: BenchContext) -> None:
        from casa_data.paths import get_path

        if not ctx.s3_base:
            raise ValueError(f"bench method {self.name!r} needs an S3 location (--s3 s3://bucket/prefix)")
        self._opts = dict(ctx.s3_options)
        self.path = get_path("s3", **self._opts)
        self.urls = {f.local: f.urls["s3"] for f in ctx.files}
        self._pids = dict(ctx.s3_pids)
        self._base = ctx.s3_base.rstrip("/")
        self._clients: dict[int, Any] = {}

    def server_processes(self) -> dict[str, list[int]]:
        return self._pids

    def write_object(self, key: str, data: bytes) -> int:
        """PUT ``data`` at ``<s3 base>/writes/<key>``; multipart (parts of ``multipart_part``) when bigger."""
        url = f"{self._base}/writes/{key}"
        bucket, _, obj = url.removeprefix("s3://").partition("/")
        with _LOCK:  # one boto3 client per path (the counting pass swaps the path); clients are thread-safe
            client = self._clients.get(id(self.path))
            if client is None:
                client = self._clients[id(self.path)] = self.path.client(url)
        part = self.multipart_part
        if len(data) < part:
            client.put_object(Bucket=bucket, Key=obj, Body=data)
        else:
            up = client.create_multipart_upload(Bucket=bucket, Key=obj)["UploadId"]
            parts = []
            for i, off in enumerate(range(0, len(data), part), 1):
                r = client.upload_part(Bucket=bucket, Key=obj, UploadId=up, PartNumber=i, Body=data[off:off + part])
                parts.append({"PartNumber": i, "ETag": r["ETag"]})
            client.complete_multipart_upload(Bucket=bucket, Key=obj, UploadId=up, MultipartUpload={"Parts": parts})
        return self._add(len(data))

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        from casa_bench.proxy import CountingProxy
        from casa_data.paths import get_path

        timed = self.path
        endpoint = timed.settings().get("endpoint_url")
        if not endpoint:
            raise ValueError("counting bytes needs an explicit S3 endpoint_url")
        with CountingProxy(endpoint) as proxy, super().counting():
            self.path = get_path("s3", **{**self._opts, "endpoint_url": proxy.url})
            self._reset()
            try:
                yield
            finally:
                self._reset()
                self.path = timed
                self.counted, self.counted_up = proxy.down, proxy.up

    def _reset(self) -> None:
        """Drop cached connections/handles (so the counting pass goes through the relay)."""


class S3fsMethod(_S3Method):
    """s3fs with casa's settings (no read-ahead cache, exact ranges); uproot through fsspec."""

    name = "s3fs"
    description = "S3 via s3fs (cache_type none); uproot FSSpecSource / pyarrow via FSSpecHandler"

    def read_whole(self, f: BenchFile) -> int:
        url = self.urls[f.local]
        fs = self.path.filesystem(url)
        n = 0
        with fs.open(url, "rb") as fh:  # the filesystem's own cache settings (casa: none)
            while block := fh.read(CHUNK):
                n += len(block)
        return n

    def read_columns(self, f: BenchFile, columns: list[str]) -> int:
        url = self.urls[f.local]
        if f.format == "parquet":
            fs, path = _fsspec_arrow(self.path, url)
            return _columns_parquet(path, columns, filesystem=fs)
        return _columns_root(url, f.tree, columns, **self.path.storage_options(url))

    def read_range(self, f: BenchFile, start: int, length: int) -> int:
        url = self.urls[f.local]
        return len(self.path.filesystem(url).cat_file(url, start=start, end=start + length))

    def read_ranges(self, items: list[tuple[BenchFile, int, int]]) -> int:
        urls = [self.urls[f.local] for f, _, _ in items]  # one concurrent cat_ranges (uproot's way)
        fs = self.path.filesystem(urls[0])
        chunks = fs.cat_ranges(urls, [s for _, s, _ in items], [s + n for _, s, n in items])
        return sum(len(c) for c in chunks)


class S3fsDefaultMethod(S3fsMethod):
    """s3fs as it comes (50 MiB read-ahead blocks): the baseline casa's settings are measured against."""

    name = "s3fs-default"
    description = "S3 via s3fs with its defaults (readahead cache, 50 MiB blocks)"

    def setup(self, ctx: BenchContext) -> None:
        ctx = BenchContext(ctx.files, ctx.columns, ctx.s3_base,
                           {**ctx.s3_options, "cache_type": "readahead", "block_size": 50 << 20}, ctx.workdir)
        super().setup(ctx)

    def read_range(self, f: BenchFile, start: int, length: int) -> int:
        url = self.urls[f.local]  # through a file object, as a reader would (cat_file bypasses the cache)
        with self.path.filesystem(url).open(url, "rb") as fh:
            fh.seek(start)
            return len(fh.read(length))


def _fsspec_arrow(path, url: str):
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs = path.filesystem(url)
    return PyFileSystem(FSSpecHandler(fs)), fs._strip_protocol(url)


class ArrowS3Method(_S3Method):
    """pyarrow's native (C++) S3 client: Parquet with coalesced reads; uproot on an Arrow file."""

    name = "s3-arrow"
    description = "S3 via pyarrow.fs.S3FileSystem (Parquet natively; ROOT via uproot on an Arrow file)"

    def setup(self, ctx: BenchContext) -> None:
        super().setup(ctx)
        self._handles: dict = {}

    def _reset(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles = {}

    def teardown(self) -> None:
        self._reset()

    def _fs(self, f: BenchFile):
        return self.path.arrow_filesystem(self.urls[f.local])

    def read_whole(self, f: BenchFile) -> int:
        fs, path = self._fs(f)
        n = 0
        with fs.open_input_stream(path) as fh:
            while block := fh.read(CHUNK):
                n += len(block)
        return n

    def read_columns(self, f: BenchFile, columns: list[str]) -> int:
        fs, path = self._fs(f)
        if f.format == "parquet":
            return _columns_parquet(path, columns, filesystem=fs)
        with fs.open_input_file(path) as fh:  # uproot reads a file-like object chunk by chunk
            return _columns_root(fh, f.tree, columns)

    def _handle(self, f: BenchFile):
        """One open file per object, as a reader would keep it (HEAD once)."""
        fh = self._handles.get(f.local)
        if fh is None:
            fs, path = self._fs(f)
            fh = self._handles[f.local] = fs.open_input_file(path)
        return fh

    def read_range(self, f: BenchFile, start: int, length: int) -> int:
        return len(self._handle(f).read_at(length, start))

    def read_ranges(self, items: list[tuple[BenchFile, int, int]]) -> int:
        from concurrent.futures import ThreadPoolExecutor

        handles = [self._handle(f) for f, _, _ in items]
        with ThreadPoolExecutor(8) as pool:  # read_at releases the GIL: 8 requests in flight
            return sum(pool.map(lambda h, it: len(h.read_at(it[2], it[1])), handles, items))
