"""Per-file transforms, run in the endpoint's spawned workers.

The query was translated and checked at submit (:mod:`casa_data.servicex.query`); :func:`run_file`
runs the generated code on one input file and never raises: it returns a result dict with the
error text. The ``python`` codegen runs arbitrary user code, so only expose an endpoint with it to
users who may run code as the endpoint's account.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
import time
import traceback
from typing import Any

from casa_data.servicex.query import compile_query

__all__ = ["run_file", "warm"]


# -- worker side ---------------------------------------------------------------------------------
_WARM: list[int] = []
_WATCH: list[bool] = []


def warm() -> int:
    """Once per worker: import the heavy modules and run one tiny query end to end.

    The first func_adl_uproot query in a process costs ~0.8 s beyond the imports (uproot.dask and
    dask-awkward set-up); paying it at start keeps it out of the first request's latency.
    """
    if _WARM:
        return _WARM[0]
    _exit_with_parent()
    import awkward as ak
    import uproot

    with tempfile.TemporaryDirectory(prefix="casa-sx-warm-") as d:
        src = os.path.join(d, "warm.root")
        with uproot.recreate(src) as f:
            t = f.mktree("Events", {"n": "int32", "x": "var * float32"})
            t.extend({"n": [1, 2], "x": ak.Array([[1.0], [2.0, 3.0]])})
        q = ("(call Select (call Where (call EventDataset 'bogus.root' 'Events') (lambda (list e) "
             "(>= (attr e 'n') 1))) (lambda (list e) (dict (list 'x') (list (attr e 'x')))))")
        code, tree = compile_query("uproot", q, "parquet")
        for fmt in ("parquet", "root-file"):
            run_file({"candidates": [[src, None]], "codegen": "uproot", "code": code, "tree": tree,
                      "result_format": fmt, "object": f"warm.{fmt}", "output": {"kind": "local", "dir": d}})
    _WARM.append(os.getpid())
    return _WARM[0]


def _exit_with_parent() -> None:
    """Exit when the endpoint dies (even by SIGKILL): an orphaned worker would hold CPU and memory."""
    import threading

    if _WATCH:
        return
    _WATCH.append(True)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="casa-sx-parent-watch", daemon=True).start()


def run_file(job: dict[str, Any]) -> dict[str, Any]:
    """Transform one input file and store its output; errors are returned, never raised."""
    _exit_with_parent()
    t0 = time.monotonic()
    errors: list[str] = []
    for url, via in job["candidates"]:
        try:
            data = _run_query(job, url, via)
            break
        except Exception as err:  # noqa: BLE001 - per-file error, recorded and shown to the user
            errors.append(f"{url}: {_explain(err)}")
    else:
        return {"ok": False, "error": "; ".join(errors) or "no replica to read"}
    try:
        size, events = _store(job, data)
    except Exception as err:  # noqa: BLE001
        return {"ok": False, "error": f"writing the output failed: {_explain(err)}"}
    return {"ok": True, "size": size, "events": events, "seconds": time.monotonic() - t0}


def _run_query(job: dict[str, Any], url: str, via: str | None) -> Any:
    reader, opts = url, {}
    if via:  # a casa catalog replica: read it the way casa_data reads it (token, client settings)
        from casa_data.paths import get_path

        path = get_path(via)
        reader, opts = path.reader_url(url), path.storage_options(url)
    if job["codegen"] == "uproot":
        ns: dict[str, Any] = {}
        exec(compile(job["code"], "<func_adl_uproot>", "exec"), ns)
        with _uproot_dask_options(opts):
            return ns["run_query"](input_filenames=[reader], tree_name=job.get("tree"))
    if job["codegen"] == "uproot-raw":
        import uproot

        out = {}
        with uproot.open(reader, **opts) as f:  # func_adl's uproot.dask call takes no options
            for q in json.loads(job["code"]):
                tree = q["treename"]
                if tree not in f:
                    if q.get("fail_on_missing_trees") is False:
                        continue
                    raise KeyError(f"no tree {tree!r} in the file")
                kw = {k: q[k] for k in ("expressions", "cut", "filter_name", "filter_typename", "aliases")
                      if q.get(k) is not None}
                out[tree] = f[tree].arrays(**kw)
        return out
    ns = {"__name__": "servicex_python_function"}
    exec(compile(job["code"], "<python function>", "exec"), ns)
    fn = next(v for k, v in ns.items() if callable(v) and getattr(v, "__module__", "") == ns["__name__"])
    return fn(reader)


@contextlib.contextmanager
def _uproot_dask_options(opts: dict[str, Any]):
    """func_adl_uproot's code calls ``uproot.dask(files)`` with no way to pass storage options
    (an S3 endpoint and keys, XRootD timeouts): for the call, give them to ``uproot.dask``. A worker
    process runs one transform at a time, so nothing else sees the change."""
    if not opts:
        yield
        return
    import uproot

    plain = uproot.dask
    uproot.dask = functools.partial(plain, **opts)
    try:
        yield
    finally:
        uproot.dask = plain


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

    trees = _as_trees(data, "servicex")
    events = sum(len(a) for a in trees.values())
    out = job["output"]
    fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=out.get("dir") or None)
    os.close(fd)
    try:
        if job["result_format"] == "parquet":
            (arr,) = trees.values()
            ak.to_parquet(arr, tmp)
        elif job["result_format"] == "root-rntuple":
            _write_rntuple(tmp, trees)
        else:
            _write_root(tmp, trees)
        size = os.path.getsize(tmp)
        if out["kind"] == "local":
            dest = os.path.join(out["dir"], job["object"])
            os.replace(tmp, dest)  # atomic: a listed object is always complete
        else:
            _s3_client(out).upload_file(tmp, out["bucket"], job["object"])
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return size, events


def _write_root(path: str, trees: dict[str, Any]) -> None:
    import uproot

    with uproot.recreate(path) as f:
        for name, arr in trees.items():
            cols = {k: _rootable(k, arr[k]) for k in arr.fields}
            t = f.mktree(name, {k: v.type for k, v in cols.items()})  # mktree: a TTree, not an RNTuple
            if len(arr):
                t.extend(cols)


def _write_rntuple(path: str, trees: dict[str, Any]) -> None:
    import uproot

    with uproot.recreate(path) as f:
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


_clients: dict[str, Any] = {}


def _s3_client(out: dict[str, Any]):
    key = out["endpoint_url"]
    if key not in _clients:
        import boto3

        _clients[key] = boto3.client("s3", endpoint_url=out["endpoint_url"], region_name="us-east-1",
                                     aws_access_key_id=out["key"], aws_secret_access_key=out["secret"])
    return _clients[key]


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
