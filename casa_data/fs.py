"""``casa://`` -- a read-only fsspec filesystem over the catalog, with replica failover.

``casa://<dataset>/<lfn>`` (e.g. ``casa://cms/dimuon-2012//store/data/run.root``; LFNs start with
``/``, hence the ``//``) resolves the file's replicas (site rules, then catalog order) and reads
through the first that works. A replica that fails while opening or reading is logged once and the
next one takes over at the same offset; if every replica fails, one
:class:`~casa_data.errors.ReplicaError` lists them all.

The namespace is a tree: ``casa://`` lists the first components of the dataset names (``cms``,
``demo``, ...), ``casa://cms`` the datasets under it, and a dataset is a directory whose contents
are its LFNs, with directories implied by their prefixes. ``ls``, ``info``, ``walk``, ``find``,
``glob`` (``*``, ``?``, ``[...]``, ``**``), ``isdir``, ``isfile`` and ``exists`` answer as
``LocalFileSystem`` would over the same layout; a file's size is its first healthy replica's.

Registered through fsspec's ``fsspec.specs`` entry point, so ``fsspec.open``, ``fsspec.open_files``,
``uproot.open`` and pyarrow-through-fsspec accept ``casa://`` URLs. Options: ``via=`` (one
delivery path), ``catalog=`` (extra catalog files).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
from fsspec.utils import glob_translate

from .access import Candidate, RangeReader, Replicas
from .catalog import Catalog, get_catalog
from .errors import ReplicaError
from .resolver import ResolvedFile, resolve

__all__ = ["CasaFileSystem", "CasaFile"]

log = logging.getLogger("casa_data")
T = TypeVar("T")
Parts = tuple[str, ...]
Node = tuple[str, ResolvedFile | dict[str, ResolvedFile | None]]  # name, and a file or {child: file|None}


def _parts(lfn: str) -> Parts:
    """An LFN's path components: ``/store/a.root`` -> ``("store", "a.root")``."""
    return tuple(p for p in lfn.split("/") if p)


def _join(name: str, parts: Parts) -> str:
    """The ``casa://`` path (without protocol) of LFN ``parts`` in dataset ``name``."""
    return f"{name}//{'/'.join(parts)}" if parts else name


@dataclass
class _Tree:
    """A dataset's LFNs as a directory tree; the directories are the LFNs' proper prefixes."""

    files: dict[Parts, ResolvedFile] = field(default_factory=dict)
    dirs: dict[Parts, set[str]] = field(default_factory=lambda: {(): set()})

    @classmethod
    def build(cls, files: list[ResolvedFile]) -> _Tree:
        tree = cls()
        for f in files:
            parts = _parts(f.lfn)
            for i in range(len(parts)):
                tree.dirs.setdefault(parts[:i], set()).add(parts[i])
            if parts:
                tree.files[parts] = f
        for d in tree.dirs:  # an LFN that is also another's prefix is listed as a directory
            tree.files.pop(d, None)
        return tree


class CasaFileSystem(AbstractFileSystem):
    """Read catalog files by dataset name and LFN, failing over between replicas; browse them."""

    protocol = "casa"
    root_marker = ""

    def __init__(self, via: str | None = None, catalog: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.via = via
        self._catalog_arg = catalog
        self._catalog: Catalog | None = None
        self._resolved: dict[str, list[ResolvedFile]] = {}
        self._trees: dict[str, _Tree] = {}
        self._sizes: dict[int, int | None] = {}

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]  # type: ignore[return-value]
        path = path[len("casa://"):] if path.startswith("casa://") else path.lstrip("/")
        return path.rstrip("/")

    def unstrip_protocol(self, name: str) -> str:
        return "casa://" + name

    @classmethod
    def _parent(cls, path: str) -> str:
        path = cls._strip_protocol(path)
        return path.rsplit("/", 1)[0].rstrip("/") if "/" in path else cls.root_marker

    def invalidate_cache(self, path: str | None = None) -> None:
        self._catalog = None
        self._resolved.clear()
        self._trees.clear()
        self._sizes.clear()

    # -- resolution ----------------------------------------------------------------------------------
    def _cat(self, refresh: bool = False) -> Catalog:
        if self._catalog is None or refresh:
            self._catalog = get_catalog(self._catalog_arg)
        return self._catalog

    def _files(self, name: str) -> list[ResolvedFile]:
        if name not in self._resolved:
            self._resolved[name] = resolve(self._cat().get(name), via=self.via)
        return self._resolved[name]

    def _tree(self, name: str) -> _Tree:
        if name not in self._trees:
            self._trees[name] = _Tree.build(self._files(name))
        return self._trees[name]

    def _node(self, path: str, names: list[str], listing: bool) -> Node | None:
        """What ``path`` is: ``(name, file)``, ``(name, {child: file or None})`` or None (missing).

        Without ``listing`` a dataset's own directory comes back without children (nor resolving).
        """
        kids: dict[str, ResolvedFile | None] = {}
        found = path == ""
        name = max((n for n in names if path == n or path.startswith(n + "/")), key=len, default=None)
        if name is not None and name == path and not listing:
            return name, {}
        if name is not None:
            parts, tree = _parts(path[len(name):]), self._tree(name)
            if parts in tree.files:
                return _join(name, parts), tree.files[parts]
            if parts in tree.dirs:
                path, found = _join(name, parts), True
                kids.update({_join(name, parts + (c,)): tree.files.get(parts + (c,)) for c in tree.dirs[parts]})
        prefix = path + "/" if path else ""
        for n in names:  # datasets and namespaces below path (cms/dimuon-2012 is below cms)
            if n.startswith(prefix) and n != path:
                kids[prefix + n[len(prefix):].split("/")[0]] = None
                found = True
        return (path, kids) if found else None

    def _lookup(self, path: str, listing: bool = False) -> Node:
        path = self._strip_protocol(path)
        for refresh in (False, True):  # an unknown name may be a dataset added since: re-read once
            node = self._node(path, self._cat(refresh).names(), listing)
            if node is not None:
                return node
        raise FileNotFoundError(f"casa://{path}: no such dataset, directory or file")

    def _file(self, path: str) -> tuple[str, ResolvedFile]:
        path = self._strip_protocol(path)
        try:
            name, node = self._lookup(path)
        except FileNotFoundError:
            names = [n for n in self._cat().names() if path.startswith(n + "/")]
            if not names:  # no dataset matched: let Catalog.get raise with suggestions
                self._cat().get(path.split("//")[0])
            ds = max(names, key=len)
            known = [f.lfn for f in self._files(ds)][:10]
            msg = f"dataset {ds!r} has no file {path[len(ds) + 1:]!r}; its files include: {known}"
            raise FileNotFoundError(msg) from None
        if isinstance(node, dict):
            raise IsADirectoryError(f"casa://{name} is a directory")
        return name, node

    def _first(self, f: ResolvedFile, fn: Callable[[Candidate], T]) -> tuple[Candidate, T]:
        """``(replica, fn(replica))`` for the first replica that works (casa_data.access)."""
        return Replicas(f.lfn, f.candidates, failed={}, label=f"casa://{f.lfn}").call(lambda c: (c, fn(c)))

    def _size(self, f: ResolvedFile) -> int | None:
        """The first healthy replica's size (the catalog's if none answers), remembered."""
        if id(f) not in self._sizes:
            try:
                self._sizes[id(f)] = self._first(f, lambda c: c.path.size(c.url))[1]
            except ReplicaError:
                self._sizes[id(f)] = f.size
        return self._sizes[id(f)]

    def _entry(self, name: str, f: ResolvedFile | None) -> dict[str, Any]:
        if f is None:
            return {"name": name, "size": 0, "type": "directory"}
        return {"name": name, "size": self._size(f), "type": "file", "lfn": f.lfn}

    # -- fsspec API ----------------------------------------------------------------------------------
    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        name, node = self._lookup(path)
        return self._entry(name, None if isinstance(node, dict) else node)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        name, node = self._lookup(path, listing=True)
        kids = sorted(node.items()) if isinstance(node, dict) else [(name, node)]
        return [self._entry(n, f) for n, f in kids] if detail else [n for n, _ in kids]

    def glob(self, path: str, maxdepth: int | None = None, **kwargs: Any) -> Any:
        """fsspec's glob; ``<dataset>//**`` also matches the dataset itself, as ``dir/**`` does."""
        detail = kwargs.pop("detail", False)
        out = super().glob(path, maxdepth=maxdepth, detail=True, **kwargs)
        pat = self._strip_protocol(path)
        name, sep, _ = pat.partition("//")
        if (sep and name not in out and kwargs.get("withdirs", True) and (path.endswith("/") or pat.endswith("/**"))
                and re.match(glob_translate(pat + ("/" if path.endswith("/") else "")), name + "//")
                and name in self._cat()):
            out = dict(sorted({**out, name: self.info(name)}.items()))
        return out if detail else list(out)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        _, f = self._file(path)
        reader = RangeReader(Replicas(f.lfn, f.candidates, failed={}, label=f"casa://{f.lfn}"))
        try:
            size = reader.size
            start = 0 if start is None else (start + size if start < 0 else start)
            end = size if end is None else (end + size if end < 0 else end)
            return reader.fetch(start, end)
        finally:
            reader.close()

    def _open(self, path: str, mode: str = "rb", block_size: Any = None, autocommit: bool = True,
              cache_options: Any = None, **kwargs: Any) -> CasaFile:
        if mode != "rb":
            raise NotImplementedError("casa:// is read-only; write through the delivery path's own URL")
        _, f = self._file(path)
        return CasaFile(self, path, f, mode=mode, block_size=block_size or 4 * 2**20,
                        cache_options=cache_options, **kwargs)


class CasaFile(AbstractBufferedFile):
    """A read-only file that moves to the next replica when one fails, at the same offset
    (:class:`casa_data.access.RangeReader`: replica order, health marks, errors translated)."""

    def __init__(self, fs: CasaFileSystem, path: str, resolved: ResolvedFile, **kwargs: Any):
        self.resolved = resolved
        self._reader = RangeReader(Replicas(resolved.lfn, resolved.candidates, failed={},
                                            label=f"casa://{resolved.lfn}"))
        super().__init__(fs, path, size=self._reader.size, **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self._reader.fetch(start, end)

    def close(self) -> None:
        self._reader.close()
        super().close()
