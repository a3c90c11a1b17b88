"""Read one file of a dataset: ROOT TTree / RNTuple through uproot, Parquet through pyarrow.

Every function takes a :class:`~casa_data.access.Candidate` (a URL plus its delivery path) and
raises :class:`~casa_data.errors.ColumnNotFoundError` for a missing column, other exceptions for
access problems (the caller, :class:`casa_data.access.Replicas`, translates them and tries the
next replica). A path that declares ``Capability.SCAN`` (a :class:`~casa_data.paths.base.ScanPath`)
gets columns and filter and scans on its server.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import awkward as ak

from .access import Candidate, open_root, parquet_dataset
from .errors import ColumnNotFoundError, FileReadError
from .expr import Filter
from .paths.base import Capability, ScanPath

__all__ = ["count_events", "read_awkward", "read_arrow", "iter_awkward", "iter_arrow", "available_columns"]


# -- ROOT (TTree and RNTuple) ---------------------------------------------------------------------
def _open_root(cand: Candidate):
    return open_root(cand)


def _tree(f: Any, tree: str, url: str):
    try:
        return f[tree]
    except KeyError:
        names = sorted({k.split(";")[0] for k in f.keys(recursive=False)})
        raise FileReadError(url, f"no tree {tree!r} in the file; it has: {', '.join(names) or 'nothing'}") from None


def _root_keys(t: Any) -> list[str]:
    return list(t.keys(full_paths=True)) if hasattr(t, "branches") else list(t.keys())


def _wanted(keys: Sequence[str], columns: Sequence[str] | None, flt: Filter | None, url: str) -> list[str] | None:
    if columns is None and flt is None:
        return None
    need = list(columns) if columns is not None else list(keys)
    if flt is not None:
        need += [c for c in sorted(flt.columns) if c not in need]
    known = set(keys)
    for c in need:
        if c not in known:
            raise ColumnNotFoundError(c, keys, url)
    return need


def _apply_filter(arr: ak.Array, columns: Sequence[str] | None, flt: Filter | None) -> ak.Array:
    if flt is None:
        return arr
    arr = arr[flt.mask({c: arr[c] for c in flt.columns})]
    if columns is not None:
        arr = arr[list(columns)] if columns else arr[[]]
    return arr


# -- Parquet -----------------------------------------------------------------------------------------
def _parquet_dataset(cand: Candidate):
    return parquet_dataset(cand)


def _arrow_pushdown(flt: Filter | None, schema) -> Any:
    """The filter as a pyarrow expression if every column it uses is flat and it binds, else None.

    None means: read, then apply the filter with awkward (the same result). A filter Arrow cannot
    type (e.g. ``not`` of a number) is tried on an empty table of the file's schema first, so it
    falls back instead of failing the scan, which would be blamed on the file.
    """
    import pyarrow.types as pat

    if flt is None:
        return None
    for c in flt.columns:
        if c not in schema.names or pat.is_nested(schema.field(c).type):
            return None
    try:
        expr = flt.to_arrow(schema)
        if expr is not None:
            schema.empty_table().filter(expr)
    except Exception:  # noqa: BLE001 - not expressible in Arrow: awkward evaluates it after reading
        return None
    return expr


def _parquet_table(cand: Candidate, columns: Sequence[str] | None, flt: Filter | None):
    dset = _parquet_dataset(cand)
    keys = dset.schema.names
    need = _wanted(keys, columns, flt, cand.url)
    push = _arrow_pushdown(flt, dset.schema)
    if push is not None:
        return dset.to_table(columns=list(columns) if columns is not None else None, filter=push), None
    return dset.to_table(columns=need), flt


# -- public ------------------------------------------------------------------------------------------
def _scanner(cand: Candidate) -> ScanPath | None:
    """The path, if it scans on its server (``Capability.SCAN``): it takes columns and filter."""
    path = cand.path
    return path if isinstance(path, ScanPath) and path.can(Capability.SCAN) else None


def count_events(cand: Candidate, fmt: str, tree: str) -> int:
    if (scan := _scanner(cand)) is not None:
        return scan.count_events(cand.url, tree)
    if fmt == "parquet":
        return int(_parquet_dataset(cand).count_rows())
    with _open_root(cand) as f:
        return int(_tree(f, tree, cand.url).num_entries)


def available_columns(cand: Candidate, fmt: str, tree: str) -> list[str]:
    if (scan := _scanner(cand)) is not None:
        return scan.columns(cand.url, tree)
    if fmt == "parquet":
        return list(_parquet_dataset(cand).schema.names)
    with _open_root(cand) as f:
        return _root_keys(_tree(f, tree, cand.url))


def read_awkward(cand: Candidate, fmt: str, tree: str, columns: Sequence[str] | None = None,
                 flt: Filter | None = None, entry_start: int | None = None,
                 entry_stop: int | None = None) -> ak.Array:
    """The whole file (or an entry range) as one awkward array, filtered."""
    if (scan := _scanner(cand)) is not None and entry_start is None and entry_stop is None:
        return _from_arrow(scan.scan(cand.url, tree, columns, flt))
    if fmt == "parquet":
        table, rest = _parquet_table(cand, columns, flt)
        if entry_start is not None or entry_stop is not None:
            table = table.slice(entry_start or 0, (entry_stop or len(table)) - (entry_start or 0))
        return _apply_filter(_from_arrow(table), columns, rest)
    with _open_root(cand) as f:
        t = _tree(f, tree, cand.url)
        need = _wanted(_root_keys(t), columns, flt, cand.url)
        arr = t.arrays(need, library="ak", entry_start=entry_start, entry_stop=entry_stop)
    return _apply_filter(arr, columns, flt)


def read_arrow(cand: Candidate, fmt: str, tree: str, columns: Sequence[str] | None = None,
               flt: Filter | None = None):
    """The whole file as one ``pyarrow.Table``, filtered."""
    if (scan := _scanner(cand)) is not None:
        return scan.scan(cand.url, tree, columns, flt)
    if fmt == "parquet":
        table, rest = _parquet_table(cand, columns, flt)
        return table if rest is None else _to_arrow(_apply_filter(_from_arrow(table), columns, rest))
    return _to_arrow(read_awkward(cand, fmt, tree, columns, flt))


def iter_awkward(cand: Candidate, fmt: str, tree: str, columns: Sequence[str] | None,
                 flt: Filter | None, step: int) -> Iterator[ak.Array]:
    """Filtered chunks of at most ``step`` events (before filtering)."""
    if fmt == "parquet" or _scanner(cand) is not None:
        for batch in iter_arrow(cand, fmt, tree, columns, flt, step):
            yield _from_arrow(batch)
        return
    with _open_root(cand) as f:
        t = _tree(f, tree, cand.url)
        need = _wanted(_root_keys(t), columns, flt, cand.url)
        for arr in t.iterate(need, step_size=step, library="ak"):
            yield _apply_filter(arr, columns, flt)


def iter_arrow(cand: Candidate, fmt: str, tree: str, columns: Sequence[str] | None,
               flt: Filter | None, step: int):
    """Filtered Arrow record batches of at most ``step`` rows."""
    if (scan := _scanner(cand)) is not None:
        yield from scan.scan_batches(cand.url, tree, columns, flt, step)
        return
    if fmt == "parquet":
        dset = _parquet_dataset(cand)
        need = _wanted(dset.schema.names, columns, flt, cand.url)
        push = _arrow_pushdown(flt, dset.schema)
        if push is not None or flt is None:
            cols = list(columns) if columns is not None else None
            for b in dset.to_batches(columns=cols, filter=push, batch_size=step):
                if b.num_rows:
                    yield b
            return
        for b in dset.to_batches(columns=need, batch_size=step):
            arr = _apply_filter(_from_arrow(b), columns, flt)
            if len(arr):
                yield from _to_arrow(arr).to_batches()
        return
    for arr in iter_awkward(cand, fmt, tree, columns, flt, step):
        yield from _to_arrow(arr).to_batches()


def _from_arrow(table) -> ak.Array:
    # Arrow fields are nullable; NanoAOD columns hold no nulls, so drop the option types.
    arr = ak.from_arrow(table, generate_bitmasks=False)
    return ak.drop_none(arr) if "?" in str(arr.type) and not _has_none(arr) else arr


def _has_none(arr: ak.Array) -> bool:
    try:
        return bool(ak.any(ak.is_none(arr, axis=-1))) if len(arr) else False
    except Exception:
        return True


def _to_arrow(arr: ak.Array):
    return ak.to_arrow_table(arr, extensionarray=False, list_to32=False)
