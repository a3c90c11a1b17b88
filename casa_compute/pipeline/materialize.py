"""Delivery paths that reduce the data before the processor sees it, chosen by capability.

Both kinds give a stream of Arrow record batches that ``casa_compute.run`` processes as Arrow
chunks (the data travel with the chunks, so Dask workers need no access to the client's disk):

* ``Capability.SCAN`` (Skyhook): each file is scanned on the server with the spec's column list
  and its exact pre-filter (casa's filter language: ``count(Muon_pt > 20 and abs(Muon_eta) < 2.4)
  >= 2``); only the passing events of those columns travel.
* ``Capability.QUERY`` (ServiceX): the path's default query for the column list and the looser
  count pre-selection (uproot's language has no per-event reductions: ``nMuon >= 2``) is
  delivered by ``casa_data.open(name, query=..., via=path)`` and streamed from there.

A dataset normalised by its sum of weights needs every event, so only its columns are pushed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["reduces", "reduced_stream"]


def reduces(via: str | None) -> bool:
    """Whether the path ``via`` reduces on a server (scans or delivers queries)."""
    from casa_data.paths import Capability, path_class

    if via is None:
        return False
    cls = path_class(via)
    return cls.can(Capability.SCAN) or cls.can(Capability.QUERY)


def reduced_stream(how: str, ds, *, columns: list[str], prefilter: str | None, loose_cut: str | None,
                   catalogs: list[str] | None, push_filter: bool = True,
                   batch_size: int = 100_000) -> tuple[Iterator[Any], dict[str, Any]]:
    """``(record batches, info)``; ``info`` says what was pushed, and counts what came back as
    the stream is consumed (``delivered_events``, ``delivered_bytes``)."""
    import casa_data
    from casa_data.dataset import Dataset
    from casa_data.paths import Capability, QueryPath, get_path

    path = get_path(how)
    if isinstance(path, QueryPath) and path.can(Capability.QUERY):
        cut = loose_cut if push_filter else None
        query = path.default_query(ds.tree, columns, cut)
        source = casa_data.open(ds.name, query=query, via=how, catalog=catalogs)
        info: dict[str, Any] = {"pushed_columns": columns, "pushed_cut": cut, **source.metadata}
    elif path.can(Capability.SCAN):
        flt = prefilter if push_filter else None
        # A fresh Dataset: ``ds`` carries the pre-filter as its default, which filter=None keeps.
        source = Dataset(ds.spec, ds.resolved, columns=columns, filter=flt, via=ds.via, errors=ds.errors)
        info = {"pushed_columns": columns, "pushed_filter": flt}
    else:
        raise ValueError(f"delivery path {how!r} neither scans nor delivers queries: not a reducing path")
    info.update(delivered_events=0, delivered_bytes=0)

    def batches():
        for batch in source.iter_batches(columns, batch_size=batch_size):  # scanned (or delivered) remotely
            info["delivered_events"] += batch.num_rows
            info["delivered_bytes"] += batch.nbytes
            yield batch

    return batches(), info
