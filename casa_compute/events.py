"""NanoEvents for one chunk of a ROOT TTree, with the schema built once per file layout.

``NanoEventsFactory.from_root`` derives the base form from the tree's branches and builds the
schema on every call: ~60 ms per chunk for a full NanoAOD file of 1,500 branches, every chunk of
every file alike. :func:`root_events` does the same as ``from_root(mode="virtual")`` but keeps the
built schema for trees of the same layout (same branch names and types, same schema class), so a
chunk pays only for the ``typenames`` lookup and for building its virtual arrays.
``tests/test_compute_schema.py`` checks that both give the same form and the same values.

With ``learn=`` (the runner passes its run id) the branches a processor touches are remembered
per run and tree layout, and the next chunk reads them in one request (``tree.arrays``) instead
of one request per branch as the processor first touches each: over XRootD or S3 every branch
touched is otherwise a round trip. The first chunk of a run on each worker learns; a branch the
processor stops touching is still read (the set only grows within a run).
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from typing import Any

__all__ = ["root_events"]

_SCHEMAS: OrderedDict[tuple, Any] = OrderedDict()
_TOUCHED: OrderedDict[tuple, _Touched] = OrderedDict()
_LOCK = threading.Lock()
_MAX_LAYOUTS = 16
_MAX_RUNS = 64


class _Touched(set):
    """The branch names a run's processor touched; coffea's mapping appends to its access log."""

    def append(self, accessed: Any) -> None:
        with _LOCK:  # a worker's threads share the run's set
            self.add(accessed.branch)

    def snapshot(self) -> set[str]:
        with _LOCK:
            return set(self)


class _Preloaded:
    """One preloaded branch, as coffea's mapping slices it (``[start:stop]`` of the file)."""

    __slots__ = ("array", "start", "stop")

    def __init__(self, array: Any, start: int, stop: int):
        self.array, self.start, self.stop = array, start, stop

    def __getitem__(self, where: slice) -> Any:
        if where != slice(self.start, self.stop):
            raise IndexError(f"preloaded entries {self.start}-{self.stop}, asked for {where}")
        return self.array


def _touched(key: tuple) -> _Touched:
    with _LOCK:
        got = _TOUCHED.get(key)
        if got is None:
            got = _TOUCHED[key] = _Touched()
            while len(_TOUCHED) > _MAX_RUNS:
                _TOUCHED.popitem(last=False)
        return got


def _preload(tree, names: set[str], start: int, stop: int) -> dict[str, _Preloaded] | None:
    """``names`` (those in ``tree``) read in one request, as coffea's mapping would read each."""
    names = {n for n in names if n in tree}
    if len(names) < 2:
        return None  # nothing to batch
    arrays = tree.arrays(filter_name=sorted(names), entry_start=start, entry_stop=stop, how=dict)
    return {k: _Preloaded(v, start, stop) for k, v in arrays.items()}


def root_events(handle, treepath: str, start: int, stop: int, schemaclass, metadata: dict,
                learn: str | None = None):
    """Virtual NanoEvents of ``handle[treepath]`` entries ``[start, stop)`` (as ``from_root``).

    ``learn``: a run id; branches touched by earlier chunks of that run are read up front."""
    import uproot
    from coffea.nanoevents import NanoEventsFactory
    from coffea.nanoevents.mapping import TrivialUprootOpener, UprootSourceMapping
    from coffea.nanoevents.util import tuple_to_key

    tree = handle[treepath]
    if not isinstance(tree, uproot.behaviors.TTree.TTree):  # RNTuple and others: upstream
        return NanoEventsFactory.from_root(handle, treepath=treepath, entry_start=start,
                                           entry_stop=stop, schemaclass=schemaclass,
                                           metadata=metadata, mode="virtual").events()
    typenames = tree.typenames()
    start, stop = max(0, start), min(stop, tree.num_entries)
    partition = (str(tree.file.uuid), tree.object_path, f"{start}-{stop}")
    key = (schemaclass, tree.object_path, tuple(typenames.items()))
    touched = _touched((learn, *key)) if learn is not None else None
    preloaded = _preload(tree, touched.snapshot(), start, stop) if touched else None
    mapping = UprootSourceMapping(TrivialUprootOpener({partition[0]: tree.file.file_path}, {}),
                                  start, stop, cache={}, access_log=touched, file_handle=handle,
                                  use_ak_forth=True, virtual=True, preloaded_arrays=preloaded)
    mapping.preload_column_source(partition[0], partition[1], tree)

    with _LOCK:
        built = _SCHEMAS.get(key)
        if built is not None:
            _SCHEMAS.move_to_end(key)
    if built is None:
        base_form = mapping._extract_base_form(tree)
        base_form["typenames"] = typenames
        base_form["parameters"]["metadata"] = {}
        built = schemaclass(base_form)
        with _LOCK:
            _SCHEMAS[key] = built
            while len(_SCHEMAS) > _MAX_LAYOUTS:
                _SCHEMAS.popitem(last=False)
    schema = copy.copy(built)  # shares the (read-only) contents; this chunk's metadata only
    params = dict(built.form["parameters"])
    params["metadata"] = {**metadata, **{k: v for k, v in params.get("metadata", {}).items()
                                          if k == "version"}}
    schema._form = {**built.form, "parameters": params}
    return NanoEventsFactory(schema, mapping, tuple_to_key(partition), mode="virtual").events()
