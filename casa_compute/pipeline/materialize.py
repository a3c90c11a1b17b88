"""Delivery paths that reduce the data before the processor sees it: Skyhook and ServiceX.

Both give a stream of Arrow record batches that ``casa_compute.run`` processes as Arrow chunks
(the data travel with the chunks, so Dask workers need no access to the client's disk):

* **skyhook**: each file is scanned on the Skyhook service with the spec's column list and its
  exact pre-filter (casa's filter language: ``count(Muon_pt > 20 and abs(Muon_eta) < 2.4) >= 2``);
  only the passing events of those columns travel.
* **servicex**: an UprootRaw query with ``filter_name`` = the column list and ``cut`` = the looser
  count pre-selection (uproot's language has no per-event reductions: ``nMuon >= 2``) is delivered
  as Parquet by ``casa_data.open(name, query=...)`` and streamed from there.

A dataset normalised by its sum of weights needs every event, so only its columns are pushed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["MATERIALIZING", "reduced_stream"]

MATERIALIZING = ("skyhook", "servicex")


def reduced_stream(how: str, ds, *, columns: list[str], prefilter: str | None, loose_cut: str | None,
                   catalogs: list[str] | None, push_filter: bool = True,
                   batch_size: int = 100_000) -> tuple[Iterator[Any], dict[str, Any]]:
    """``(record batches, info)``; ``info`` says what was pushed, and counts what came back as
    the stream is consumed (``delivered_events``, ``delivered_bytes``)."""
    import casa_data
    from casa_data.dataset import Dataset

    if how == "skyhook":
        flt = prefilter if push_filter else None
        # A fresh Dataset: ``ds`` carries the pre-filter as its default, which filter=None keeps.
        source = Dataset(ds.spec, ds.resolved, columns=columns, filter=flt, via=ds.via, errors=ds.errors)
        info: dict[str, Any] = {"pushed_columns": columns, "pushed_filter": flt}
    elif how == "servicex":
        cut = loose_cut if push_filter else None
        query: dict[str, Any] = {"treename": ds.tree, "filter_name": columns}
        if cut:
            query["cut"] = cut
        source = casa_data.open(ds.name, query=query, catalog=catalogs, format="parquet")
        info = {"pushed_columns": columns, "pushed_cut": cut, "servicex": source.metadata.get("servicex")}
    else:
        raise ValueError(f"not a reducing delivery path: {how!r}")
    info.update(delivered_events=0, delivered_bytes=0)

    def batches():
        for batch in source.iter_batches(columns, batch_size=batch_size):  # Skyhook: scanned remotely
            info["delivered_events"] += batch.num_rows
            info["delivered_bytes"] += batch.nbytes
            yield batch

    return batches(), info
