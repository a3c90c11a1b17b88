"""A ``casa bench`` method for any registered delivery path, driven by its declared capabilities.

``casa bench --methods NAME`` with a delivery path ``NAME`` that has no bench method of its own
(a third-party path registered through ``casa.paths``) benchmarks it through this class: what
it reads is decided by ``DeliveryPath.capabilities``, never by the path's name:

* ``whole``: needs ``FILESYSTEM`` (reads the file through ``path.open``);
* ``range`` / ``ranges``: need ``BYTE_RANGES`` (``path.cat_ranges``);
* ``columns``: any path that reads files or scans (through :mod:`casa_data.readers` and
  :mod:`casa_data.access`, so a ``SCAN`` path scans on its server), or ``QUERY`` (a delivery of
  those columns);
* a missing capability is :class:`~casa_bench.base.Unsupported` (``n/a`` in the results).

A file's URL on the path is ``BenchFile.urls[NAME]`` if set (e.g. by ``setup`` elsewhere), else
``<scheme>://<local path>`` for the path's first scheme (the local path itself for ``file``).
"""

from __future__ import annotations

from typing import Any

from casa_bench.base import BenchContext, BenchFile, BenchMethod, Unsupported

__all__ = ["PathMethod"]

_CHUNK = 8 << 20


class PathMethod(BenchMethod):
    """Benchmark the delivery path ``path_name`` by its capabilities."""

    name = "path"
    portable = True

    def __init__(self, path_name: str) -> None:
        super().__init__()
        from casa_data.paths import get_path

        self.path_name = path_name
        self.path = get_path(path_name)
        caps = ", ".join(sorted(self.path.capabilities))
        self.description = f"delivery path {path_name!r} ({caps})"  # type: ignore[misc]

    def setup(self, ctx: BenchContext) -> None:
        self.ctx = ctx

    def _can(self, capability: str) -> bool:
        return self.path.can(capability)

    def url(self, f: BenchFile) -> str:
        if self.path_name in f.urls:
            return f.urls[self.path_name]
        scheme = (self.path.schemes or ("file",))[0]
        return str(f.local) if scheme == "file" else f"{scheme}://{f.local}"

    def _need(self, capability: str, what: str) -> None:
        if not self._can(capability):
            raise Unsupported(f"delivery path {self.path_name!r} does not declare {capability!r} ({what})")

    def read_whole(self, f: BenchFile) -> int:
        from casa_data.paths import Capability

        self._need(Capability.FILESYSTEM, "whole-file reads")
        url, n = self.url(f), 0
        with self.path.open(self.path.reader_url(url), "rb") as fh:
            while data := fh.read(_CHUNK):
                n += self._add(len(data))
        return n

    def read_range(self, f: BenchFile, start: int, length: int) -> int:
        from casa_data.paths import Capability

        self._need(Capability.BYTE_RANGES, "byte ranges")
        url = self.url(f)
        (data,) = self.path.cat_ranges(self.path.reader_url(url), [start], [start + length])
        return self._add(len(data))

    def read_ranges(self, items: list[tuple[BenchFile, int, int]]) -> int:
        from casa_data.paths import Capability

        self._need(Capability.BYTE_RANGES, "byte ranges")
        by_file: dict[str, list[tuple[int, int]]] = {}
        for f, start, length in items:
            by_file.setdefault(self.url(f), []).append((start, start + length))
        n = 0
        for url, ranges in by_file.items():
            got = self.path.cat_ranges(self.path.reader_url(url), [a for a, _ in ranges], [b for _, b in ranges])
            n += self._add(sum(len(d) for d in got))
        return n

    def read_columns(self, f: BenchFile, columns: list[str]) -> int:
        from casa_data import readers
        from casa_data.access import Candidate, Replicas
        from casa_data.paths import Capability

        if self._can(Capability.QUERY):
            import casa_data

            ds: Any = casa_data.open([str(f.local)], columns=columns, via=self.path_name, progress=False)
            return len(ds.to_awkward(columns))
        if not (self._can(Capability.FILESYSTEM) or self._can(Capability.SCAN)):
            raise Unsupported(f"delivery path {self.path_name!r} neither reads files nor scans")
        cand = Candidate(self.url(f), self.path)
        table = Replicas(cand.url, [cand]).call(lambda c: readers.read_arrow(c, f.format, f.tree, columns))
        self._add(int(table.nbytes))
        return int(table.num_rows)
