"""NanoEvents for one chunk of a ROOT TTree, with the schema built once per file layout.

``NanoEventsFactory.from_root`` derives the base form from the tree's branches and builds the
schema on every call: ~60 ms per chunk for a full NanoAOD file of 1,500 branches, every chunk of
every file alike. :func:`root_events` does the same as ``from_root(mode="virtual")`` but keeps the
built schema for trees of the same layout (same branch names and types, same schema class), so a
chunk pays only for the ``typenames`` lookup and for building its virtual arrays.
``tests/test_compute_schema.py`` checks that both give the same form and the same values.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from typing import Any

__all__ = ["root_events"]

_SCHEMAS: OrderedDict[tuple, Any] = OrderedDict()
_LOCK = threading.Lock()
_MAX_LAYOUTS = 16


def root_events(handle, treepath: str, start: int, stop: int, schemaclass, metadata: dict):
    """Virtual NanoEvents of ``handle[treepath]`` entries ``[start, stop)`` (as ``from_root``)."""
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
    mapping = UprootSourceMapping(TrivialUprootOpener({partition[0]: tree.file.file_path}, {}),
                                  start, stop, cache={}, access_log=None, file_handle=handle,
                                  use_ak_forth=True, virtual=True)
    mapping.preload_column_source(partition[0], partition[1], tree)

    key = (schemaclass, tree.object_path, tuple(typenames.items()))
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
