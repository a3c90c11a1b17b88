"""What each concurrent reader of a ``casa bench`` sweep does: access patterns and their operations.

Patterns (``--pattern``):

* ``whole``: whole files, sequentially (reader *i* starts at file *i*);
* ``columns``: a few columns of every event through the method's reader (uproot / pyarrow, or a
  server-side scan); the bytes it stands for are those uproot requests for them (recorded);
* ``ranges:SIZE``: random ranges of SIZE bytes (each reader its own random sequence);
* ``replay``: the exact (offset, length) requests a real uproot read of the columns made through a
  :class:`RecordingFile`, replayed in order, one request each (reader *i* starts at a rotation);
* ``put:SIZE``: writes of SIZE-byte objects (PUT, multipart from 8 MiB), distinct keys per reader.

:func:`operations` turns a pattern into an endless stream of ``(call, requested bytes, check)``.
"""

from __future__ import annotations

import io
import os
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from casa_bench.base import BenchFile, BenchMethod
from casa_data.errors import CasaError

__all__ = ["Pattern", "parse_pattern", "parse_size", "RecordingFile", "record_reads", "operations", "Op"]

#: (the call, bytes it stands for, the value the call must return or None)
Op = tuple[Callable[[], int], int, "int | None"]
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def parse_size(text: str) -> int:
    """``64k``, ``4M``, ``1MiB``, ``65536`` -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise CasaError(f"not a size: {text!r} (e.g. 64k, 4M)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@dataclass(frozen=True)
class Pattern:
    kind: str       # whole | columns | ranges | replay | put
    size: int = 0   # ranges and put: bytes per operation

    @property
    def label(self) -> str:
        if self.kind in ("ranges", "put"):
            return f"{self.kind}:{_human(self.size)}"
        return self.kind

    @property
    def writes(self) -> bool:
        return self.kind == "put"


def _human(n: int) -> str:
    for unit, scale in (("M", 1 << 20), ("k", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def parse_pattern(text: str) -> Pattern:
    """``whole``, ``columns``, ``replay``, ``ranges:64k``, ``put:4M``."""
    kind, _, arg = text.strip().partition(":")
    if kind in ("whole", "columns", "replay") and not arg:
        return Pattern(kind)
    if kind in ("ranges", "put"):
        return Pattern(kind, parse_size(arg or ("64k" if kind == "ranges" else "4M")))
    raise CasaError(f"unknown pattern {text!r}: whole, columns, ranges:SIZE, replay or put:SIZE")


class RecordingFile(io.RawIOBase):
    """A read-only local file that records every ``(offset, length)`` read through it."""

    def __init__(self, path: str | os.PathLike) -> None:
        self._fh = open(path, "rb", buffering=0)
        self.reads: list[tuple[int, int]] = []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._fh.seek(pos, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def read(self, n: int = -1) -> bytes:
        pos = self._fh.tell()
        data = self._fh.read(n)
        if data:
            self.reads.append((pos, len(data)))
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._fh.close()
        super().close()


def record_reads(f: BenchFile, columns: list[str]) -> list[tuple[int, int]]:
    """The (offset, length) reads uproot (ROOT) or pyarrow (Parquet) makes for ``columns`` of ``f``."""
    with RecordingFile(f.local) as fh:
        if f.format == "parquet":
            import pyarrow.parquet as pq

            pq.read_table(fh, columns=columns)
        else:
            import uproot

            with uproot.open(fh) as root:
                root[f.tree].arrays(columns, library="ak")
        return list(fh.reads)


def operations(method: BenchMethod, pattern: Pattern, files: list[BenchFile], columns: list[str],
               replay: dict[str, list[tuple[int, int]]], reader: int, nreaders: int, seed: int = 1) -> Iterator[Op]:
    """The endless stream of operations reader ``reader`` (of ``nreaders``) runs for ``pattern``."""
    rng = random.Random(seed * 1_000_003 + reader)
    k = reader
    if pattern.kind == "put":
        data = rng.randbytes(pattern.size)
        while True:  # a few keys per reader, overwritten: bounded storage
            key = f"r{reader}-{k % 4}-{pattern.size}"
            yield (lambda key=key: method.write_object(key, data)), pattern.size, pattern.size
            k += nreaders
    while True:
        f = files[k % len(files)]
        k += 1
        if pattern.kind == "whole":
            yield (lambda f=f: method.read_whole(f)), f.size, f.size
        elif pattern.kind == "columns":
            requested = sum(n for _, n in replay[f.name])
            yield (lambda f=f: method.read_columns(f, columns)), requested, f.nevents
        elif pattern.kind == "ranges":
            n = min(pattern.size, f.size)
            start = rng.randrange(0, f.size - n + 1)
            yield (lambda f=f, s=start, n=n: method.read_range(f, s, n)), n, n
        elif pattern.kind == "replay":
            reads = replay[f.name]
            rot = reader * len(reads) // max(1, nreaders)
            for start, n in reads[rot:] + reads[:rot]:
                yield (lambda f=f, s=start, n=n: method.read_range(f, s, n)), n, n
        else:  # pragma: no cover - parse_pattern guards
            raise CasaError(f"unknown pattern {pattern.kind!r}")
