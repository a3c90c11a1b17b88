"""``casa bench`` methods for XRootD: the origin directly, and through a token-protected XCache cold
and warm.

The methods share one embedded :class:`~casa_facility.services.xrootd.XRootDStack` (started by the
first ``setup``, stopped by the last ``teardown``) whose origin exports hard links of the bench
files. ``xcache-cold`` reads a new link name every time, so each read misses the cache while the
origin still serves the same page-cached inode; ``xcache-warm`` reads names the cache already holds.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from casa_bench.base import BenchContext, BenchFile, BenchMethod
from casa_bench.builtin import CHUNK, CountingFile, _columns_parquet, _columns_root

__all__ = ["XRootDMethod", "XCacheColdMethod", "XCacheWarmMethod"]

_shared: dict[str, Any] = {"stack": None, "users": 0, "env": {}}


def _start(ctx: BenchContext) -> Any:
    """The shared stack, started on first use with links to every bench file under /store/bench/."""
    if _shared["stack"] is not None:
        _shared["users"] += 1
        return _shared["stack"]
    from casa_data.paths.xrootd import configure_client
    from casa_facility.services.xrootd import XRootDStack

    base = Path(tempfile.mkdtemp(prefix="casa-bench-xrootd-", dir="/tmp"))
    os.chmod(base, 0o755)
    data = base / "data" / "bench"
    data.mkdir(parents=True)
    for d in (data.parent, data):
        os.chmod(d, 0o755)
    for f in ctx.files:
        _link(f.local, data / f.name)
    stack = XRootDStack(data.parent, workdir=base / "servers")
    stack.start()
    saved = {k: os.environ.get(k) for k in ("BEARER_TOKEN", "X509_CERT_DIR")}
    os.environ.update(stack.client_env())
    os.environ["BEARER_TOKEN"] = stack.issuer.mint("storage.read:/bench", lifetime=6 * 3600)
    configure_client({"ca_dir": str(stack.pki.ca_dir)})
    _shared.update(stack=stack, users=1, env=saved, base=base, data=data, names=itertools.count())
    return stack


def _stop() -> None:
    _shared["users"] -= 1
    if _shared["users"] > 0 or _shared["stack"] is None:
        return
    _shared["stack"].stop()
    for k, v in _shared["env"].items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    shutil.rmtree(_shared["base"], ignore_errors=True)
    _shared.update(stack=None, users=0, env={})


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed: a copy serves as well
        shutil.copy(src, dst)
    os.chmod(dst, 0o644)


class _XRootDBench(BenchMethod):
    """Reads ``root://<server>//store/bench/<name>`` through casa's xrootd/xcache delivery paths."""

    path_name = "xrootd"

    def setup(self, ctx: BenchContext) -> None:
        from casa_data.paths import get_path

        self.stack = _start(ctx)
        self.path = get_path(self.path_name)

    def teardown(self) -> None:
        _stop()

    def server(self) -> str:
        return self._relay or self.stack.origin_url

    _relay: str | None = None

    def server_processes(self) -> dict[str, list[int]]:
        return {"xrootd-origin": [p.pid for p in self.stack.origin.procs.values()]}

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Wire bytes through a TCP relay in front of the server this method reads from."""
        from casa_bench.proxy import CountingProxy

        with CountingProxy(self.server()) as proxy, super().counting():
            self._relay = proxy.url
            try:
                yield
            finally:
                self._relay = None
                self.counted, self.counted_up = proxy.down, proxy.up

    def url(self, f: BenchFile) -> str:
        return f"{self.server()}//store/bench/{f.name}"

    def read_whole(self, f: BenchFile) -> int:
        n = 0
        with self.path.open(self.url(f), "rb", block_size=CHUNK) as fh:
            while block := fh.read(CHUNK):
                n += len(block)
        return self._add(n)

    def read_columns(self, f: BenchFile, columns: list[str]) -> int:
        url = self.url(f)
        if getattr(self, "_count", False) or f.format == "parquet":
            with CountingFile(self.path.open(url, "rb", block_size=1 << 20), self) as fh:
                if f.format == "parquet":
                    return _columns_parquet(fh, columns)
                return _columns_root(fh, f.tree, columns)
        return _columns_root(self.path.reader_url(url), f.tree, columns, **self.path.storage_options(url))

    def read_range(self, f: BenchFile, start: int, length: int) -> int:
        url = self.url(f)
        fs = self.path.filesystem(url)
        return self._add(len(fs.cat_file(_path(url), start, start + length)))


def _path(url: str) -> str:
    from urllib.parse import urlsplit

    return "/" + urlsplit(url).path.lstrip("/")


class XRootDMethod(_XRootDBench):
    """The origin XRootD server, no cache."""

    name = "xrootd"
    description = "XRootD origin directly (fsspec-xrootd / uproot over root://, loopback)"


class XCacheWarmMethod(_XRootDBench):
    """Through the XCache, files already cached (ztn token over TLS)."""

    name = "xcache-warm"
    description = "XCache warm: files already in the cache (token auth, TLS)"
    path_name = "xcache"

    def server(self) -> str:
        return self._relay or self.stack.xcache_url

    def server_processes(self) -> dict[str, list[int]]:
        return {"xcache": [p.pid for p in self.stack.xcache.procs.values()], **super().server_processes()}

    def setup(self, ctx: BenchContext) -> None:
        super().setup(ctx)
        for f in ctx.files:  # fill the cache
            self.read_whole(f)


class XCacheColdMethod(XCacheWarmMethod):
    """Through the XCache, each read on a name it has never seen (hard link of the same file)."""

    name = "xcache-cold"
    description = "XCache cold: every read misses the cache (token auth, TLS)"

    def setup(self, ctx: BenchContext) -> None:
        _XRootDBench.setup(self, ctx)

    def url(self, f: BenchFile) -> str:
        name = f"cold-{next(_shared['names'])}-{f.name}"
        _link(_shared["data"] / f.name, _shared["data"] / name)
        return f"{self.server()}//store/bench/{name}"
