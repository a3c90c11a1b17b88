"""Run the access-path comparison: the same files through every method, repeated and checked.

Workloads per method (each repetition runs every method once, interleaved, so load changes hit
all methods alike):

* ``whole``: every byte of every file, sequentially (MB/s);
* ``columns``: a few columns of every event (events/s) through uproot or pyarrow;
* ``ranges``: many small random ranges, one request each (latency p50/p99, ms).

Then one untimed pass per method and workload counts the bytes transferred (wire bytes through a
counting relay for S3, bytes read for local files). Sizes and event counts are checked against
the files: a method that returns other numbers fails the run.

A read a method does not have (it raises :class:`~casa_bench.methods.Unsupported` in the
warm-up) is skipped in the reps and the counting pass; its statistics are ``None`` and the reason
is in the method's ``"unsupported"`` (``whole``, ``columns``, ``range``, ``ranges``).
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from casa_bench.methods import BenchContext, BenchFile, BenchMethod, Unsupported, get_method
from casa_data.errors import CasaError

__all__ = ["bench_files", "run_bench", "summarize", "DEFAULT_METHODS"]

DEFAULT_METHODS = ["local", "s3fs", "s3-arrow"]


def _format(path: Path) -> str:
    return "parquet" if path.suffix.lower() in (".parquet", ".parq", ".pq") else "root"


def bench_files(paths: Sequence[str | os.PathLike], tree: str = "Events") -> list[BenchFile]:
    """Local files to benchmark, with their size, format and event count."""
    out = []
    for p in map(Path, paths):
        if not p.is_file():
            raise CasaError(f"bench input {p} is not a local file")
        fmt = _format(p)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            nevents = pq.ParquetFile(p).metadata.num_rows
        else:
            import uproot

            with uproot.open(p) as f:
                nevents = int(f[tree].num_entries)
        out.append(BenchFile(p, p.stat().st_size, nevents, fmt, tree))
    return out


def default_columns(f: BenchFile, n: int = 3) -> list[str]:
    if f.format == "parquet":
        import pyarrow.parquet as pq

        names = pq.ParquetFile(f.local).schema_arrow.names
    else:
        import uproot

        with uproot.open(f.local) as fh:
            names = list(fh[f.tree].keys())
    muon = [c for c in names if c.startswith("Muon_")]
    return (muon or names)[:n]


def _stats(values: list[float]) -> dict[str, Any]:
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values),
            "spread": (max(values) - min(values)) / med if med else 0.0, "runs": values}


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def _ranges(files: list[BenchFile], n: int, size: int, seed: int) -> list[tuple[BenchFile, int, int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        f = files[rng.randrange(len(files))]
        length = min(size, f.size)
        out.append((f, rng.randrange(0, f.size - length + 1), length))
    return out


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def _check(method: str, what: str, got: int, want: int) -> None:
    if got != want:
        raise CasaError(f"bench method {method!r}, {what}: got {got:,}, expected {want:,}")


def _probe(fn: Callable[[], Any], what: str, unsupported: dict[str, str]) -> None:
    """Run ``fn`` once (warm-up); an :class:`Unsupported` read is recorded, not raised."""
    try:
        fn()
    except Unsupported as err:
        unsupported[what] = str(err) or "not supported by this method"


def run_bench(files: list[BenchFile], methods: Sequence[str] = DEFAULT_METHODS, *,
              columns: list[str] | None = None, reps: int = 5, nranges: int = 200,
              range_size: int = 64 << 10, s3_base: str | None = None,
              s3_options: dict[str, Any] | None = None, workdir: Path | None = None,
              seed: int = 1, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Measure every method on ``files``; returns the result document (see :func:`summarize`)."""
    if not files:
        raise CasaError("nothing to benchmark: no files")
    columns = columns or default_columns(files[0])
    ctx = BenchContext(files, columns, s3_base, dict(s3_options or {}), Path(workdir or "."))
    total_size = sum(f.size for f in files)
    total_events = sum(f.nevents for f in files)
    objs: dict[str, BenchMethod] = {}
    raw: dict[str, dict[str, list]] = {}
    skip: dict[str, dict[str, str]] = {}  # method -> {whole|columns|range|ranges: reason}
    try:
        for name in methods:
            m = get_method(name)
            m.setup(ctx)
            objs[name] = m
            raw[name] = {"whole_s": [], "columns_s": [], "latency_ms": [], "batch_s": []}
            # warm-up: connections, imports, the page cache for local reads; finds unsupported reads
            no = skip[name] = {}
            first = (files[0], 0, min(range_size, files[0].size))
            _probe(lambda: m.read_whole(files[0]), "whole", no)
            _probe(lambda: m.read_columns(files[0], columns), "columns", no)
            _probe(lambda: m.read_range(*first), "range", no)
            _probe(lambda: m.read_ranges([first]), "ranges", no)
        for r in range(reps):
            plan = _ranges(files, nranges, range_size, seed + r)
            for name, m in objs.items():
                log(f"rep {r + 1}/{reps}: {name}")
                no = skip[name]
                if "whole" not in no:
                    t, n = _timed(lambda: sum(m.read_whole(f) for f in files))
                    _check(name, "whole-file bytes", n, total_size)
                    raw[name]["whole_s"].append(t)
                if "columns" not in no:
                    t, n = _timed(lambda: sum(m.read_columns(f, columns) for f in files))
                    _check(name, "column-subset events", n, total_events)
                    raw[name]["columns_s"].append(t)
                if "range" not in no:
                    for f, start, length in plan:
                        t, n = _timed(lambda: m.read_range(f, start, length))
                        _check(name, f"range {start}+{length} of {f.name}", n, length)
                        raw[name]["latency_ms"].append(t * 1e3)
                if "ranges" not in no:
                    t, n = _timed(lambda: m.read_ranges(plan))
                    _check(name, "vector read bytes", n, sum(length for _, _, length in plan))
                    raw[name]["batch_s"].append(t)
        counted: dict[str, dict[str, int | None]] = {}
        plan = _ranges(files, nranges, range_size, seed)
        for name, m in objs.items():
            log(f"counting bytes: {name}")
            counted[name] = {}
            for what, read, fn in (("whole", "whole", lambda: [m.read_whole(f) for f in files]),
                                   ("columns", "columns", lambda: [m.read_columns(f, columns) for f in files]),
                                   ("ranges", "range", lambda: [m.read_range(f, s, n) for f, s, n in plan])):
                if read in skip[name]:
                    counted[name][what] = None
                    continue
                with m.counting():
                    fn()
                counted[name][what] = m.counted
    finally:
        for m in objs.values():
            m.teardown()
    meta = {
        "files": [{"name": f.name, "size": f.size, "nevents": f.nevents, "format": f.format,
                   "urls": f.urls} for f in files],
        "total_bytes": total_size, "total_events": total_events, "columns": columns,
        "reps": reps, "nranges": nranges, "range_size": range_size, "s3_base": s3_base,
        "endpoint": _endpoint(s3_base, s3_options),
        "methods": {n: objs[n].description for n in objs},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "loadavg": os.getloadavg()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return summarize(meta, raw, counted, {n: no for n, no in skip.items() if no})


def _endpoint(s3_base: str | None, s3_options: dict[str, Any] | None) -> str | None:
    if not s3_base:
        return None
    from casa_data.paths import get_path

    return get_path("s3", **(s3_options or {})).endpoint(s3_base)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _get(d: dict[str, Any] | None, key: str) -> Any:
    return d[key] if d is not None else None


def summarize(meta: dict[str, Any], raw: dict[str, dict[str, list]], counted: dict[str, dict[str, int | None]],
              unsupported: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """Medians, spreads, percentiles and ratios to the ``local`` method.

    A measurement without runs (the method does not support it) is ``None``, as are its ratios; the
    reasons, from ``unsupported`` (method -> {read: reason}), are the method's ``"unsupported"``.
    """
    size, events = meta["total_bytes"], meta["total_events"]
    results: dict[str, Any] = {}
    for name, r in raw.items():
        lat = r["latency_ms"]
        results[name] = {
            "whole_mb_s": _stats([size / t / 1e6 for t in r["whole_s"]]) if r["whole_s"] else None,
            "columns_events_s": _stats([events / t for t in r["columns_s"]]) if r["columns_s"] else None,
            "range_latency_ms": ({"p50": _percentile(lat, 50), "p99": _percentile(lat, 99), "n": len(lat)}
                                 if lat else None),
            "ranges_batched_ms": _stats([t * 1e3 for t in r["batch_s"]]) if r["batch_s"] else None,
            "bytes": counted.get(name, {}),
        }
        if unsupported and unsupported.get(name):
            results[name]["unsupported"] = dict(unsupported[name])
    base = results.get("local")
    if base:
        for res in results.values():
            res["ratio_to_local"] = {
                "whole_mb_s": _ratio(_get(res["whole_mb_s"], "median"), _get(base["whole_mb_s"], "median")),
                "columns_events_s": _ratio(_get(res["columns_events_s"], "median"),
                                           _get(base["columns_events_s"], "median")),
                "range_p50": _ratio(_get(res["range_latency_ms"], "p50"), _get(base["range_latency_ms"], "p50")),
                "ranges_batched": _ratio(_get(res["ranges_batched_ms"], "median"),
                                         _get(base["ranges_batched_ms"], "median")),
                "bytes_columns": (_ratio(res["bytes"].get("columns", 0), base["bytes"]["columns"])
                                  if base["bytes"].get("columns") else None),
            }
    return {"meta": meta, "results": results}


def write_outputs(doc: dict[str, Any], out_dir: str | os.PathLike, stem: str | None = None) -> tuple[Path, Path]:
    """``<stem>.json`` and ``<stem>.png`` in ``out_dir``; returns both paths."""
    from casa_bench.plot import plot

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or "bench-" + time.strftime("%Y%m%d-%H%M%S")
    jpath, ppath = out / f"{stem}.json", out / f"{stem}.png"
    jpath.write_text(json.dumps(doc, indent=2, default=str))
    plot(doc, ppath)
    return jpath, ppath


def markdown_table(doc: dict[str, Any]) -> str:
    """The results as a Markdown table (medians, spreads, ratios to local)."""
    n, kib = doc["meta"]["nranges"], doc["meta"]["range_size"] >> 10
    rows = ["| method | whole file MB/s (spread) | × local | columns k events/s (spread) | × local "
            f"| {kib} KiB range p50 / p99 ms | p50 × local | {n} ranges as one vector read, ms "
            "| bytes whole / columns / ranges |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, r in doc["results"].items():
        ratio = r.get("ratio_to_local", {})
        b = r["bytes"]
        whole, cols, lat, batch = r["whole_mb_s"], r["columns_events_s"], r["range_latency_ms"], r["ranges_batched_ms"]
        nan = float("nan")
        rows.append(
            f"| {name} | {_spread(whole, '.1f')} "
            f"| {_num(ratio.get('whole_mb_s', nan), '.2f')} "
            f"| {_spread(cols, '.0f', 1e3)} "
            f"| {_num(ratio.get('columns_events_s', nan), '.2f')} "
            f"| {'n/a' if lat is None else format(lat['p50'], '.2f') + ' / ' + format(lat['p99'], '.2f')} "
            f"| {_num(ratio.get('range_p50', nan), '.1f')} "
            f"| {'n/a' if batch is None else format(batch['median'], '.1f')} "
            f"| {_num(b.get('whole', 0), ',')} / {_num(b.get('columns', 0), ',')} / {_num(b.get('ranges', 0), ',')} |"
        )
    return "\n".join(rows)


def _spread(s: dict[str, Any] | None, spec: str, unit: float = 1) -> str:
    """``median (±half-spread %)``, or ``n/a`` for a measurement the method does not support."""
    return "n/a" if s is None else f"{s['median'] / unit:{spec}} (±{s['spread'] * 50:.0f} %)"


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _asdict(f: BenchFile) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(f).items()}
