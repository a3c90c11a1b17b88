"""Delivery paths that reduce the data before the processor sees it: Skyhook and ServiceX.

Both return a local Parquet dataset of the reduced events, which ``casa_compute.run`` then
processes like any other input:

* **skyhook**: each file is scanned on the Skyhook service with the spec's column list and its
  exact pre-filter (casa's filter language: ``count(Muon_pt > 20 and abs(Muon_eta) < 2.4) >= 2``);
  only the passing events of those columns travel, as Arrow, and are staged as Parquet.
* **servicex**: an UprootRaw query with ``filter_name`` = the column list and ``cut`` = the looser
  count pre-selection (uproot's language has no per-event reductions: ``nMuon >= 2``), delivered as
  Parquet by ``casa_data.open(name, query=...)``.

A dataset normalised by its sum of weights needs every event, so only its columns are pushed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["MATERIALIZING", "materialize"]

MATERIALIZING = ("skyhook", "servicex")


def materialize(how: str, ds, *, columns: list[str], prefilter: str | None, loose_cut: str | None,
                staging: Path, catalogs: list[str] | None, push_filter: bool = True):
    """``(reduced Dataset, info)``; ``info`` says what was pushed and what came back."""
    import casa_data
    from casa_data.catalog import DatasetSpec
    from casa_data.dataset import Dataset
    from casa_data.resolver import resolve

    if how == "skyhook":
        import pyarrow.parquet as pq

        out = staging / _safe(ds.name)
        out.mkdir(parents=True, exist_ok=True)
        paths, rows, nbytes = [], 0, 0
        flt = prefilter if push_filter else None
        # A fresh Dataset: ``ds`` carries the pre-filter as its default, which filter=None keeps.
        base = Dataset(ds.spec, ds.resolved, columns=columns, filter=flt, via=ds.via, errors=ds.errors)
        for i in range(len(ds.resolved)):
            table = base.subset([i]).to_arrow()  # scanned on the Skyhook service
            rows += table.num_rows
            nbytes += table.nbytes
            path = out / f"part-{i:05d}.parquet"
            pq.write_table(table, path)
            paths.append(str(path))
        spec = DatasetSpec.from_paths(paths, name=ds.name, format="parquet")
        spec.metadata.update(ds.metadata)
        info: dict[str, Any] = {"pushed_columns": columns, "pushed_filter": flt, "delivered_events": rows,
                                "delivered_bytes": nbytes}
        return Dataset(spec, resolve(spec, via="local"), columns=columns), info
    if how == "servicex":
        cut = loose_cut if push_filter else None
        query: dict[str, Any] = {"treename": ds.tree, "filter_name": columns}
        if cut:
            query["cut"] = cut
        reduced = casa_data.open(ds.name, query=query, catalog=catalogs, format="parquet")
        info = {"pushed_columns": columns, "pushed_cut": cut, "delivered_events": reduced.nevents,
                "servicex": reduced.metadata.get("servicex")}
        return reduced, info
    raise ValueError(f"not a materializing delivery path: {how!r}")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
