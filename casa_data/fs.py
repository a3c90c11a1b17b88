"""``casa://`` -- an fsspec filesystem over the catalog, with replica failover.

``casa://<dataset>/<lfn>`` (e.g. ``casa://cms/dimuon-2012//store/data/run.root``) resolves the
file's replicas (site rules, then catalog order) and reads through the first that works. A
replica that fails while opening or reading is logged once and the next one takes over at the
same offset; if every replica fails, one :class:`~casa_data.errors.ReplicaError` lists them all.

Registered through fsspec's ``fsspec.specs`` entry point, so ``fsspec.open``, ``uproot.open`` and
pyarrow-through-fsspec accept ``casa://`` URLs. Options: ``via=`` (one delivery path),
``catalog=`` (extra catalog files).
"""

from __future__ import annotations

import logging
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from .catalog import Catalog, get_catalog
from .errors import ReplicaError
from .resolver import Candidate, ResolvedFile, resolve

__all__ = ["CasaFileSystem", "CasaFile"]

log = logging.getLogger("casa_data")
_logged: set[str] = set()


def _log_once(url: str, err: BaseException) -> None:
    if url not in _logged:
        _logged.add(url)
        log.warning("replica %s failed (%s: %s); using the next one", url, type(err).__name__, str(err)[:200])


class CasaFileSystem(AbstractFileSystem):
    """Read catalog files by dataset name and LFN, failing over between replicas."""

    protocol = "casa"
    root_marker = ""

    def __init__(self, via: str | None = None, catalog: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.via = via
        self._catalog_arg = catalog
        self._catalog: Catalog | None = None
        self._resolved: dict[str, list[ResolvedFile]] = {}

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]  # type: ignore[return-value]
        return path[len("casa://"):] if path.startswith("casa://") else path.lstrip("/")

    def unstrip_protocol(self, name: str) -> str:
        return "casa://" + name

    # -- resolution ----------------------------------------------------------------------------------
    def _cat(self, refresh: bool = False) -> Catalog:
        if self._catalog is None or refresh:
            self._catalog = get_catalog(self._catalog_arg)
        return self._catalog

    def _split(self, path: str) -> tuple[str, str]:
        """``dataset/rest`` -> (dataset name, rest); the longest known dataset name wins."""
        path = self._strip_protocol(path)
        for refresh in (False, True):
            names = sorted(self._cat(refresh).names(), key=len, reverse=True)
            for name in names:
                if path == name or path.startswith(name + "/"):
                    return name, path[len(name):].lstrip("/")
        # No dataset matched: let Catalog.get raise with suggestions.
        self._cat().get(path.split("//")[0])
        raise FileNotFoundError(path)  # pragma: no cover

    def _files(self, name: str) -> list[ResolvedFile]:
        if name not in self._resolved:
            self._resolved[name] = resolve(self._cat().get(name), via=self.via)
        return self._resolved[name]

    def _file(self, path: str) -> tuple[str, ResolvedFile]:
        name, rest = self._split(path)
        for f in self._files(name):
            if f.lfn.lstrip("/") == rest.lstrip("/"):
                return name, f
        known = [f.lfn for f in self._files(name)][:10]
        raise FileNotFoundError(f"dataset {name!r} has no file {rest!r}; its files include: {known}")

    def _first(self, f: ResolvedFile, fn):
        failures = []
        for cand in f.candidates:
            try:
                return cand, fn(cand)
            except Exception as err:  # noqa: BLE001 - any access problem: next replica
                failures.append((cand.url, err))
                _log_once(cand.url, err)
        raise ReplicaError(f.lfn, failures)

    # -- fsspec API ----------------------------------------------------------------------------------
    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        name, rest = self._split(path)
        if not rest:
            return {"name": name, "size": 0, "type": "directory"}
        _, f = self._file(path)
        _, size = self._first(f, lambda c: c.path.size(c.url))
        return {"name": self._strip_protocol(path), "size": size, "type": "file", "lfn": f.lfn}

    def ls(self, path: str, detail: bool = True, **kwargs: Any):
        path = self._strip_protocol(path).rstrip("/")
        if not path:
            entries = [{"name": n, "size": 0, "type": "directory"} for n in self._cat(True).names()]
        else:
            name, rest = self._split(path)
            if rest:
                return [self.info(path)] if detail else [path]
            entries = [{"name": f"{name}/{f.lfn.lstrip('/')}" if not f.lfn.startswith("/") else f"{name}/{f.lfn}",
                        "size": f.size, "type": "file"} for f in self._files(name)]
        return entries if detail else [e["name"] for e in entries]

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        _, f = self._file(path)

        def read(c: Candidate) -> bytes:
            return c.path.filesystem(c.url).cat_file(c.path.reader_url(c.url), start, end)

        return self._first(f, read)[1]

    def _open(self, path: str, mode: str = "rb", block_size: Any = None, autocommit: bool = True,
              cache_options: Any = None, **kwargs: Any) -> "CasaFile":
        if mode != "rb":
            raise NotImplementedError("casa:// is read-only; write through the delivery path's own URL")
        _, f = self._file(path)
        return CasaFile(self, path, f, mode=mode, block_size=block_size or 4 * 2**20,
                        cache_options=cache_options, **kwargs)


class CasaFile(AbstractBufferedFile):
    """A read-only file that moves to the next replica when one fails, at the same offset."""

    def __init__(self, fs: CasaFileSystem, path: str, resolved: ResolvedFile, **kwargs: Any):
        self.resolved = resolved
        self._order = list(resolved.candidates)
        cand, size = fs._first(resolved, lambda c: c.path.size(c.url))
        self._order.remove(cand)
        self._order.insert(0, cand)
        self._handles: dict[str, Any] = {}
        super().__init__(fs, path, size=size, **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        failures = []
        for cand in list(self._order):
            try:
                fh = self._handles.get(cand.url)
                if fh is None:
                    fh = self._handles[cand.url] = cand.path.open(cand.path.reader_url(cand.url), "rb")
                fh.seek(start)
                data = fh.read(end - start)
                if len(data) != min(end, self.size) - start:
                    raise OSError(f"short read: got {len(data)} of {min(end, self.size) - start} bytes")
                return data
            except Exception as err:  # noqa: BLE001
                failures.append((cand.url, err))
                _log_once(cand.url, err)
                self._handles.pop(cand.url, None)
                self._order.remove(cand)
                self._order.append(cand)
        raise ReplicaError(self.resolved.lfn, failures)

    def close(self) -> None:
        for fh in self._handles.values():
            try:
                fh.close()
            except Exception:  # noqa: BLE001
                pass
        self._handles.clear()
        super().close()
