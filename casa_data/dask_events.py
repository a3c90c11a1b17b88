"""Lazy (dask-awkward) coffea NanoEvents over files of any format, one partition per entry range.

coffea's ``NanoEventsFactory.from_root(mode="dask")`` reads ROOT TTrees only (Parquet raises,
RNTuple fails), takes one URL per file and knows no replicas. :func:`dask_events` builds the
same kind of array with ``dask_awkward.from_map``: each partition is one ``(file, start, stop)``
step, read on the worker as virtual NanoEvents (columns load when touched) through the file's
replicas in order (:class:`casa_data.access.Replicas`: failover, errors translated), through
each replica's delivery path (its options, its credentials) -- resolved where the partition
runs, so no secret is ever part of the task graph.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EventSource", "dask_events", "even_steps", "read_step"]


@dataclass(frozen=True)
class EventSource:
    """One file: replicas ``(url, via or None)`` in order, its tree, format and entry ranges."""

    replicas: tuple[tuple[str, str | None], ...]
    tree: str = "Events"
    format: str = "root"
    steps: tuple[tuple[int, int], ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def url(self) -> str:
        return self.replicas[0][0]


def even_steps(n: int, step_size: int | None) -> tuple[tuple[int, int], ...]:
    """``[0, n)`` in even ranges of at most ``step_size`` entries (one range if None)."""
    if n <= 0:
        return ()
    k = 1 if not step_size else max(1, math.ceil(n / step_size))
    edges = [round(i * n / k) for i in range(k + 1)]
    return tuple((a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a)


def _candidate(url: str, via: str | None):
    from .access import Candidate
    from .paths import get_path, path_for_url

    return Candidate(url, get_path(via) if via else path_for_url(url))


class _Open(threading.local):
    """The files a worker thread opened last (uproot handles are not shared between threads):
    the next step of the same file skips re-reading its metadata (seconds for a NanoAOD file of
    1,500 branches). A handle is dropped when a read through it fails."""

    def __init__(self, size: int = 4):
        self.size = size
        self.handles: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def get(self, cand, opener):
        key = (cand.url, cand.via)
        h = self.handles.get(key)
        if h is None:
            h = opener(cand)
            self.handles[key] = h
            while len(self.handles) > self.size:
                _, old = self.handles.popitem(last=False)
                with contextlib.suppress(Exception):
                    old.close()
        else:
            self.handles.move_to_end(key)
        return h

    def drop(self, cand) -> None:
        h = self.handles.pop((cand.url, cand.via), None)
        if h is not None:
            with contextlib.suppress(Exception):
                h.close()


_OPEN = _Open()


def read_step(src: EventSource, start: int, stop: int, schema: Any = None, mode: str = "virtual"):
    """NanoEvents of entries ``[start, stop)`` of ``src``, from its first replica that opens."""
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    from .access import Replicas, arrow_input_file, open_root

    schema = schema or NanoAODSchema

    def build(cand):
        meta = {**src.metadata, "filename": cand.url, "treename": src.tree, "entrystart": start,
                "entrystop": stop}
        if src.format == "parquet":
            import pyarrow.parquet as pq

            handle = pq.ParquetFile(arrow_input_file(cand))
            return NanoEventsFactory.from_parquet(handle, entry_start=start, entry_stop=stop, schemaclass=schema,
                                                  metadata=meta, mode=mode).events()
        handle = _OPEN.get(cand, open_root)
        try:
            return NanoEventsFactory.from_root(handle, treepath=src.tree, entry_start=start, entry_stop=stop,
                                               schemaclass=schema, metadata=meta, mode=mode).events()
        except BaseException:
            _OPEN.drop(cand)
            raise

    label = src.metadata.get("dataset", "")
    return Replicas(src.url, [_candidate(u, v) for u, v in src.replicas], label=label).call(build)


class _ReadPartition:
    """The ``from_map`` function: a partition ``(file index, start, stop)`` -> NanoEvents.

    Holds file URLs and delivery-path names only: credentials are looked up on the worker."""

    def __init__(self, sources: list[EventSource], schema: Any):
        self.sources, self.schema = sources, schema

    def __call__(self, part: tuple[int, int, int]):
        _register_sizeof()  # on the worker
        i, start, stop = part
        return read_step(self.sources[i], start, stop, self.schema)


def _register_sizeof() -> None:
    """Dask's size estimate of a lazily-read (virtual) awkward array is ``unknown_length``, not a
    number, which breaks a distributed worker's memory bookkeeping when it holds one (a partition
    of events used by several outputs). Such an array counts its length in 8-byte words."""
    import awkward as ak
    from dask.sizeof import sizeof

    if getattr(sizeof, "_casa_virtual_ok", False):
        return
    original = sizeof.dispatch(ak.Array)

    @sizeof.register(ak.Array)
    def _sizeof_array(x: Any) -> int:
        n = original(x)
        if isinstance(n, int):
            return n
        try:
            return 8 * len(x)
        except Exception:  # noqa: BLE001 - an estimate only
            return 0

    sizeof._casa_virtual_ok = True


def dask_events(sources: list[EventSource], schema: Any = None, label: str = "casa-events"):
    """One dask-awkward array of NanoEvents over ``sources``, one partition per step."""
    import awkward as ak
    import dask_awkward as dak

    _register_sizeof()
    parts = [(i, a, b) for i, s in enumerate(sources) for a, b in s.steps]
    if not parts:
        raise ValueError("no entries to read: every file is empty (or has no steps)")
    i0, a0, _ = parts[0]
    first = read_step(sources[i0], a0, a0, schema)  # the form, from an empty range of the first file
    meta = ak.Array(first.layout.to_typetracer(forget_length=True), behavior=first.behavior,
                    attrs=first.attrs)
    divisions = None
    return dak.from_map(_ReadPartition(sources, schema), parts, label=label, meta=meta,
                        divisions=divisions)
