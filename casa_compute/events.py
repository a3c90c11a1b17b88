"""NanoEvents for one chunk of a ROOT TTree, with the schema built once per file layout.

``NanoEventsFactory.from_root`` derives the base form from the tree's branches and builds the
schema on every call: ~60 ms per chunk for a full NanoAOD file of 1,500 branches, every chunk of
every file alike. :func:`root_events` does the same as ``from_root(mode="virtual")`` but keeps the
built schema for trees of the same layout (same branch names and types, same schema class), so a
chunk pays only for the ``typenames`` lookup and for building its virtual arrays.
``tests/test_compute_schema.py`` checks that both give the same form and the same values.

With ``learn=<run id>``, the branches a processor reads in its first chunks are remembered for
that run and the tree's layout, and later chunks read them up front in one ``tree.arrays`` call
(coalesced requests, one pass over the baskets) instead of one request per branch as the lazy
arrays materialise; anything else the processor touches still loads lazily.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from typing import Any

__all__ = ["root_events"]

_SCHEMAS: OrderedDict[tuple, Any] = OrderedDict()
_LEARNED: OrderedDict[tuple, "_Branches"] = OrderedDict()
_LOCK = threading.Lock()
_MAX_LAYOUTS = 16


class _Branches(set):
    """Branch names a run's processor has read; coffea's mapping ``append``s its access records."""

    def append(self, accessed) -> None:
        self.add(accessed.branch)


def _bounded(cache: OrderedDict, key, make):
    with _LOCK:
        value = cache.get(key)
        if value is None:
            value = cache[key] = make()
            while len(cache) > _MAX_LAYOUTS:
                cache.popitem(last=False)
        else:
            cache.move_to_end(key)
        return value


def root_events(handle, treepath: str, start: int, stop: int, schemaclass, metadata: dict,
                learn: str | None = None):
    """Virtual NanoEvents of ``handle[treepath]`` entries ``[start, stop)`` (as ``from_root``);
    ``learn``: a run id under which the branches read are remembered and preloaded next time."""
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
    key = (schemaclass, tree.object_path, tuple(typenames.items()))
    log, preloaded = None, None
    if learn is not None:
        log = _bounded(_LEARNED, (learn, *key), _Branches)
        names = {n for n in list(log) if n in typenames}
        if names:
            from coffea.nanoevents.factory import _OnlySliceableAs

            arrays = tree.arrays(filter_branch=lambda b: b.name in names, entry_start=start,
                                 entry_stop=stop, ak_add_doc=True, how=dict)
            preloaded = {k: _OnlySliceableAs(v, slice(start, stop)) for k, v in arrays.items()}
    partition = (str(tree.file.uuid), tree.object_path, f"{start}-{stop}")
    mapping = UprootSourceMapping(TrivialUprootOpener({partition[0]: tree.file.file_path}, {}),
                                  start, stop, cache={}, access_log=log, file_handle=handle,
                                  use_ak_forth=True, virtual=True, preloaded_arrays=preloaded)
    mapping.preload_column_source(partition[0], partition[1], tree)

    def build():
        base_form = mapping._extract_base_form(tree)
        base_form["typenames"] = typenames
        base_form["parameters"]["metadata"] = {}
        return schemaclass(base_form)

    built = _bounded(_SCHEMAS, key, build)
    schema = copy.copy(built)  # shares the (read-only) contents; this chunk's metadata only
    params = dict(built.form["parameters"])
    params["metadata"] = {**metadata, **{k: v for k, v in params.get("metadata", {}).items()
                                          if k == "version"}}
    schema._form = {**built.form, "parameters": params}
    return NanoEventsFactory(schema, mapping, tuple_to_key(partition), mode="virtual").events()
