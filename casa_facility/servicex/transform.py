"""Per-file transforms, run in the endpoint's spawned workers.

The query was translated and checked at submit (:mod:`casa_data.servicex.query`); :func:`run_file`
runs the generated code on one input file and never raises: it returns a result dict with the
error text. Every codegen counts as untrusted code: :func:`run_file` runs inside the sandbox
(:mod:`casa_facility.servicex.sandbox`), reading an input descriptor and writing to a private job
directory; the endpoint uploads the output.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from typing import Any

from casa_data.servicex.query import compile_query

__all__ = ["run_file", "warm"]


# -- worker side (in the sandbox: see :mod:`casa_facility.servicex.sandbox`) ----------------------
_WARM: list[int] = []


def warm(home: str | None = None) -> int:
    """Once per worker: run one tiny query end to end in-process (before any fork).

    The first func_adl_uproot query in a process costs ~0.8 s beyond the imports (uproot.dask and
    dask-awkward set-up); paying it at start keeps it out of every forked transform.
    """
    if _WARM:
        return _WARM[0]
    import awkward as ak
    import uproot

    with tempfile.TemporaryDirectory(prefix="casa-sx-warm-", dir=home) as d:
        src = os.path.join(d, "warm.root")
        with uproot.recreate(src) as f:
            t = f.mktree("Events", {"n": "int32", "x": "var * float32"})
            t.extend({"n": [1, 2], "x": ak.Array([[1.0], [2.0, 3.0]])})
        q = ("(call Select (call Where (call EventDataset 'bogus.root' 'Events') (lambda (list e) "
             "(>= (attr e 'n') 1))) (lambda (list e) (dict (list 'x') (list (attr e 'x')))))")
        code, tree = compile_query("uproot", q, "parquet")
        raw = json.dumps([{"treename": "Events", "filter_name": ["x"], "cut": "n >= 1"}])
        for codegen, c, fmt in (("uproot", code, "parquet"), ("uproot", code, "root-file"),
                                ("uproot-raw", raw, "parquet")):
            r = run_file({"input": src, "codegen": codegen, "code": c, "tree": tree, "result_format": fmt,
                          "object": f"warm.{fmt}", "jobdir": d})
            if not r["ok"]:
                raise RuntimeError(f"the warm-up transform failed: {r['error']}")
    _WARM.append(os.getpid())
    return _WARM[0]


def run_file(job: dict[str, Any]) -> dict[str, Any]:
    """Transform one input file (``job["input"]``, a path or ``/proc/self/fd/N``) into
    ``job["jobdir"]/job["object"]``; errors are returned, never raised."""
    t0 = time.monotonic()
    try:
        data = _run_query(job, job["input"])
    except Exception as err:  # noqa: BLE001 - per-file error, recorded and shown to the user
        return {"ok": False, "error": f"{job.get('lfn') or 'the input'}: {_explain(err)}"}
    try:
        size, events = _store(job, data)
    except Exception as err:  # noqa: BLE001
        return {"ok": False, "error": f"writing the output failed: {_explain(err)}"}
    return {"ok": True, "size": size, "events": events, "seconds": time.monotonic() - t0}


def _run_query(job: dict[str, Any], reader: str) -> Any:
    if job["codegen"] == "uproot":
        ns: dict[str, Any] = {}
        exec(compile(job["code"], "<func_adl_uproot>", "exec"), ns)
        return ns["run_query"](input_filenames=[reader], tree_name=job.get("tree"))
    if job["codegen"] == "uproot-raw":
        return _uproot_raw(json.loads(job["code"]), reader)
    ns = {"__name__": "servicex_python_function"}
    exec(compile(job["code"], "<python function>", "exec"), ns)
    fn = next(v for k, v in ns.items() if callable(v) and getattr(v, "__module__", "") == ns["__name__"])
    return fn(reader)


class _RawOutput(dict):
    """uproot-raw's result: ``{output tree: array}``, plus ``histograms`` copied from the input."""

    histograms: dict[str, Any]


def _uproot_raw(queries: list[dict[str, Any]], reader: str) -> _RawOutput:
    """uproot-raw as the upstream transformer runs it -- trees (``treename``: a name, a list or
    ``{input: output}``) read with ``filter_name``/``filter_typename``/``expressions``, ``cut``;
    ``copy_histograms`` entries copy the matching histograms -- without uproot's ``eval``:
    branch names and patterns only, the cut through casa's safe expression core
    (:mod:`casa_data.expr.uproot_raw`)."""
    import uproot

    from casa_data.expr.uproot_raw import RawCut
    from casa_data.servicex.query import raw_trees

    out = _RawOutput()
    out.histograms = {}
    with uproot.open(reader) as f:
        for q in queries:
            if q.get("treename") is None:
                for key in f.keys(filter_name=q["copy_histograms"], cycle=False):
                    obj = f[key]
                    if isinstance(obj, (uproot.behaviors.TTree.TTree, uproot.behaviors.RNTuple.RNTuple)) or \
                            not hasattr(obj, "to_numpy"):
                        continue  # histograms only (what uproot can write back)
                    out.histograms[key] = obj
                continue
            for tree, outname in raw_trees(q).items():
                if tree not in f:
                    if q.get("fail_on_missing_trees") is False:
                        continue
                    raise KeyError(f"no tree {tree!r} in the file")
                t = f[tree]
                kw = {k: q[k] for k in ("filter_name", "filter_typename") if q.get(k) is not None}
                exprs = q.get("expressions")
                if isinstance(exprs, str):
                    exprs = [exprs]
                if exprs:
                    missing = [e for e in exprs if e not in t.keys(recursive=True, full_paths=True) and e not in t]
                    if missing:
                        raise KeyError(f"{missing[0]} not found in tree {tree!r}")
                arr = t.arrays(exprs, **kw) if exprs or kw else t.arrays()
                if q.get("cut"):
                    cut = RawCut(q["cut"])
                    missing = sorted(c for c in cut.columns if c not in t)
                    if missing:
                        raise KeyError(f"the cut uses {missing[0]}, not found in tree {tree!r}")
                    cols = t.arrays(sorted(cut.columns))
                    arr = arr[cut.mask({c: cols[c] for c in cut.columns})]
                out[outname] = arr
    return out


def _as_trees(data: Any, default: str) -> dict[str, Any]:
    """``{tree name: record array}``; a bare array becomes a record with one column ``col1``, as
    ServiceX names it, whatever the output format."""
    import awkward as ak

    if not (isinstance(data, dict) and data and all(isinstance(v, ak.Array) for v in data.values())):
        if isinstance(data, dict):
            data = ak.Array(data)
        if not isinstance(data, ak.Array):
            raise TypeError(f"the query returned {type(data).__name__}, not an awkward array or dict of them")
        data = {default: data}
    return {k: v if v.fields else ak.Array({"col1": v}) for k, v in data.items()}


def _store(job: dict[str, Any], data: Any) -> tuple[int, int]:
    import awkward as ak

    hists = getattr(data, "histograms", {})
    if isinstance(data, _RawOutput):
        trees = _as_trees(dict(data), "servicex") if data else {}
    else:
        trees = _as_trees(data, "servicex")
    events = sum(len(a) for a in trees.values())
    dest = os.path.join(job["jobdir"], job["object"])
    if job["result_format"] == "parquet":
        (arr,) = trees.values()  # histograms have no place in Parquet (as upstream)
        ak.to_parquet(arr, dest)
    elif job["result_format"] == "root-rntuple":
        _write_rntuple(dest, trees, hists)
    else:
        _write_root(dest, trees, hists)
    return os.path.getsize(dest), events


def _write_root(path: str, trees: dict[str, Any], hists: dict[str, Any] | None = None) -> None:
    import uproot

    with uproot.recreate(path) as f:
        for name, h in (hists or {}).items():
            f[name] = h
        for name, arr in trees.items():
            cols = {k: _rootable(k, arr[k]) for k in arr.fields}
            t = f.mktree(name, {k: v.type for k, v in cols.items()})  # mktree: a TTree, not an RNTuple
            if len(arr):
                t.extend(cols)


def _write_rntuple(path: str, trees: dict[str, Any], hists: dict[str, Any] | None = None) -> None:
    import uproot

    with uproot.recreate(path) as f:
        for name, h in (hists or {}).items():
            f[name] = h
        for name, arr in trees.items():
            f.mkrntuple(name, arr)


def _rootable(name: str, col: Any) -> Any:
    """A TTree branch has no missing values: floating None -> NaN, other options are an error."""
    import awkward as ak
    import numpy as np

    if "?" not in str(col.type.content):
        return col
    filled = ak.fill_none(col, np.nan)
    if "?" in str(filled.type.content) or not str(ak.type(filled)).rstrip().endswith(("float32", "float64")):
        raise TypeError(f"column {name!r} has missing values ({col.type.content}), which a TTree cannot hold; "
                        "fill them in the query (ak.fill_none) or ask for parquet output")
    return filled


def _explain(err: BaseException) -> str:
    text = _one_line(err)
    if isinstance(err, (KeyError, ValueError, TypeError, AttributeError)) and "not found" not in text:
        frame = traceback.extract_tb(err.__traceback__)[-1:]  # the line in the user's query code
        if frame and frame[0].filename.startswith("<"):
            text += f" (in {frame[0].filename} line {frame[0].lineno})"
    return text


def _one_line(err: BaseException, limit: int = 400) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
