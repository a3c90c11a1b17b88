"""``skyhook://host:port/path``: reads whose scan runs on the Skyhook service, Arrow back.

Options (``paths: {skyhook: {...}}`` in the casa config, or keyword arguments):

``tls``, ``ca_file``
    TLS to the server (``ca_file``: the CA of its certificate; implies TLS).
``timeout``, ``workers``
    Seconds per call (default 120); files fetched in parallel (default 4).
``fallback``
    A directory or ``s3://`` URL holding the same files as the server root: when no service
    answers, reads scan it client-side (same results) after one warning. Default: a clear error.

The bearer token is discovered like the XCache path's (:func:`casa_data.tokens.find_token`).
A :class:`~casa_data.paths.base.ScanPath` declaring ``SCAN`` and ``HISTOGRAM``: through
:mod:`casa_data.readers`, ``open(..., via="skyhook")`` sends ``columns=``/``filter=`` to the
server. The fsspec ``skyhook`` protocol lists files and reads raw bytes (no pushdown, for uproot
and NanoEvents) and offers :meth:`SkyhookFileSystem.to_table` with pushdown.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import fsspec
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from ..errors import ServiceError
from .base import Capability, ScanPath

__all__ = ["SkyhookPath", "SkyhookFileSystem"]

_CLIENT_OPTIONS = ("tls", "ca_file", "timeout", "workers", "token")


class SkyhookPath(ScanPath):
    """Files behind a Skyhook service; scans with pushdown."""

    name = "skyhook"
    schemes = ("skyhook",)
    capabilities = frozenset({Capability.FILESYSTEM, Capability.BYTE_RANGES, Capability.SCAN,
                              Capability.HISTOGRAM})

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._clients: dict[str, Any] = {}

    def __getstate__(self) -> dict:
        return {"options": self.options}

    def __setstate__(self, state: dict) -> None:
        self.options, self._clients = state["options"], {}

    def client(self, url: str):
        from ..skyhook.client import SkyhookClient, parse_url

        address, _ = parse_url(url)
        if address not in self._clients:
            kw = {k: v for k, v in self.options.items() if k in _CLIENT_OPTIONS}
            self._clients[address] = SkyhookClient(address, **kw)
        return self._clients[address]

    def dataset(self, url: str, tree: str = "Events"):
        from ..skyhook.client import SkyhookDataset

        return SkyhookDataset(url, tree=tree, client=self.client(url), fallback=self._fallback())

    def _fallback(self) -> str | None:
        fb = self.options.get("fallback")
        return str(fb) if fb else None

    # -- DeliveryPath -------------------------------------------------------------------------
    def filesystem(self, url: str) -> fsspec.AbstractFileSystem:
        return SkyhookFileSystem(**self.options)

    def check(self, url: str, timeout: float = 5.0) -> None:
        from ..skyhook.client import SkyhookClient, parse_url

        address, _ = parse_url(url)
        kw = {k: v for k, v in self.options.items() if k in _CLIENT_OPTIONS and k != "timeout"}
        SkyhookClient(address, timeout=timeout, **kw).health()

    def storage_options(self, url: str) -> dict[str, Any]:
        return {k: v for k, v in self.options.items() if k in _CLIENT_OPTIONS}

    # -- ScanPath: reads with pushdown (called by casa_data.readers) ------------------------------
    def scan(self, url: str, tree: str, columns: Sequence[str] | None, flt: Any):
        return self.dataset(url, tree).to_table(columns, flt)

    def scan_batches(self, url: str, tree: str, columns: Sequence[str] | None, flt: Any,
                     step: int) -> Iterator[Any]:
        return self.dataset(url, tree).to_batches(columns, flt, batch_size=step)

    def histogram(self, url: str, expr: str, bins: int, range: tuple[float, float], *,
                  tree: str = "Events", weight: str | None = None, flt: Any = None):
        return self.dataset(url, tree).histogram(expr, bins, range, weight=weight, filter=flt)

    def count_events(self, url: str, tree: str) -> int:
        from ..skyhook.client import parse_url

        return int(self.client(url).action("count", {"path": parse_url(url)[1], "tree": tree})["events"])

    def columns(self, url: str, tree: str) -> list[str]:
        from ..skyhook.client import parse_url

        return list(self.client(url).action("columns", {"path": parse_url(url)[1], "tree": tree})["columns"])


class SkyhookFileSystem(AbstractFileSystem):
    """fsspec face of a Skyhook server: list, read bytes, and :meth:`to_table` with pushdown."""

    protocol = "skyhook"
    root_marker = ""

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._path = SkyhookPath(**options)

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        path = path[len("skyhook://"):] if path.startswith("skyhook://") else path
        return path.rstrip("/")

    def _url(self, path: str) -> tuple[str, str]:
        from ..skyhook.client import parse_url

        url = "skyhook://" + self._strip_protocol(path)
        return url, parse_url(url)[1]

    def ls(self, path: str, detail: bool = True, **kwargs: Any):
        url, rel = self._url(path)
        got = self._path.client(url).action("list", {"path": rel})
        host = self._strip_protocol(path).split("/")[0]
        prefix = rel + "/" if rel else ""
        entries: dict[str, dict] = {}
        for name, size in zip(got["files"], got["sizes"]):
            if name == rel:  # path is a file
                entries[name] = {"name": f"{host}/{name}", "size": size, "type": "file"}
                continue
            child, _, rest = name[len(prefix):].partition("/")
            full = f"{host}/{prefix}{child}"
            entries.setdefault(full, {"name": full, "size": 0 if rest else size,
                                      "type": "directory" if rest else "file"})
        out = sorted(entries.values(), key=lambda e: e["name"])
        return out if detail else [e["name"] for e in out]

    def info(self, path: str, **kwargs: Any) -> dict:
        name = self._strip_protocol(path)
        parent = name.rsplit("/", 1)[0] if "/" in name else name
        if parent != name:
            for e in self.ls(parent, detail=True):
                if e["name"] == name:
                    return e
        return {"name": name, "size": 0, "type": "directory"}

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, **kwargs: Any):
        if mode != "rb":
            raise ServiceError(f"skyhook:// is read-only (asked to open {path} with mode {mode!r})")
        return _SkyhookFile(self, path, mode, block_size=block_size or 4 << 20, **kwargs)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        size = self.info(path)["size"]
        start = 0 if start is None else (start + size if start < 0 else start)
        end = size if end is None else (end + size if end < 0 else min(end, size))
        return self._read(path, start, end)

    def _read(self, path: str, start: int, end: int) -> bytes:
        url, rel = self._url(path)
        client = self._path.client(url)
        parts, step = [], 32 << 20
        for s in range(start, end, step):
            parts.append(client.action("read", {"path": rel, "start": s, "end": min(end, s + step)}, raw=True))
        return b"".join(parts)

    def to_table(self, path: str, columns: Sequence[str] | None = None, filter: Any = None,
                 tree: str = "Events"):
        """The rows passing ``filter``, only ``columns``, scanned on the server."""
        url, _ = self._url(path)
        return self._path.dataset(url, tree).to_table(columns, filter)


class _SkyhookFile(AbstractBufferedFile):
    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs._read(self.path, start, end)


fsspec.register_implementation("skyhook", SkyhookFileSystem, clobber=True)
